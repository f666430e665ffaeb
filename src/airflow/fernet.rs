//! Airflow's Fernet encryption of metadata secrets: key lists, the encrypted columns, and
//! re-keying a value from one environment's keys to another's.

use std::fmt;

use base64::Engine;
use fernet::{Fernet, MultiFernet};
use serde::Serialize;

/// Why a Fernet key list or a value is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FernetError {
    #[error("the key list is empty")]
    NoKey,
    #[error("key #{position} of the list is not a Fernet key (32 bytes, url-safe base64)")]
    InvalidKey { position: usize },
    #[error("encrypted with another key, or not a Fernet token")]
    Undecryptable,
}

/// A Fernet key list as Airflow reads `[core] fernet_key`: comma-separated, the first key
/// encrypts, every key decrypts (cryptography's `MultiFernet`). `Debug` shows no key.
#[derive(Clone)]
pub struct FernetKeys {
    fernet: MultiFernet,
    /// The decoded keys in order: two lists are the same when these are.
    raw: Vec<Vec<u8>>,
}

impl FernetKeys {
    pub fn parse(list: &str) -> Result<FernetKeys, FernetError> {
        if list.trim().is_empty() {
            return Err(FernetError::NoKey);
        }
        let mut fernets = Vec::new();
        let mut raw = Vec::new();
        for (index, key) in list.split(',').map(str::trim).enumerate() {
            let invalid = FernetError::InvalidKey {
                position: index + 1,
            };
            // cryptography accepts the key with or without its `=` padding; so does `Fernet::new`.
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key.trim_end_matches('='))
                .map_err(|_| invalid.clone())?;
            if decoded.len() != 32 {
                return Err(invalid);
            }
            fernets.push(Fernet::new(key).ok_or(invalid)?);
            raw.push(decoded);
        }
        Ok(FernetKeys {
            fernet: MultiFernet::new(fernets),
            raw,
        })
    }

    pub fn len(&self) -> usize {
        self.raw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// A token of the first key.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        self.fernet.encrypt(plaintext)
    }

    /// A Fernet key made of 32 random bytes (a KMS data key): Fernet's signing half then
    /// its encryption half, as `Fernet.generate_key()` lays them out.
    pub fn from_data_key(bytes: &[u8]) -> Result<FernetKeys, FernetError> {
        if bytes.len() != 32 {
            return Err(FernetError::InvalidKey { position: 1 });
        }
        FernetKeys::parse(&base64::engine::general_purpose::URL_SAFE.encode(bytes))
    }

    /// The fingerprint of the key that encrypts (the first of the list).
    pub fn fingerprint(&self) -> String {
        self.raw.first().map(|k| fingerprint(k)).unwrap_or_default()
    }

    /// Whether any key of the list has `fingerprint`: that list decrypts what that key made.
    pub fn has_fingerprint(&self, fingerprint: &str) -> bool {
        self.raw
            .iter()
            .any(|k| self::fingerprint(k).eq_ignore_ascii_case(fingerprint.trim()))
    }

    /// The plaintext of a token of any key of the list.
    pub fn decrypt(&self, token: &str) -> Result<Vec<u8>, FernetError> {
        self.fernet
            .decrypt(token.trim())
            .map_err(|_| FernetError::Undecryptable)
    }
}

impl PartialEq for FernetKeys {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for FernetKeys {}

impl fmt::Debug for FernetKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FernetKeys({} keys: ***)", self.raw.len())
    }
}

impl std::str::FromStr for FernetKeys {
    type Err = FernetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FernetKeys::parse(s)
    }
}

/// The message a fingerprint authenticates: a fixed label, so the fingerprint of a key is
/// useless for anything but telling keys apart.
const FINGERPRINT_LABEL: &[u8] = b"mwaa-dr fernet fingerprint";

/// Hex of the first 8 bytes of HMAC-SHA256(key, label): names a key in a manifest and in
/// errors. One-way, and 64 bits say nothing usable about the 256-bit key.
fn fingerprint(key: &[u8]) -> String {
    use hmac::Mac;
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(FINGERPRINT_LABEL);
    hex::encode(&mac.finalize().into_bytes()[..8])
}

/// Moves ciphertext from the source environment's keys to the target environment's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rekey {
    pub source: FernetKeys,
    pub target: FernetKeys,
}

impl Rekey {
    /// Decrypts with any source key, encrypts with the first target key.
    pub fn reencrypt(&self, ciphertext: &str) -> Result<String, FernetError> {
        let plaintext = self.source.decrypt(ciphertext)?;
        Ok(self.target.encrypt(&plaintext))
    }
}

/// The key backups put Fernet secrets under, so that a restore that knows only its own
/// environment's key can still read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BackupKeySetting {
    /// Neither variable: secrets stay under the source environment's key.
    #[default]
    SourceKey,
    /// DR_KMS_KEY_ID: a per-backup data key wrapped by this KMS key.
    Kms(String),
    /// DR_BACKUP_FERNET_KEY.
    Shared(crate::model::Secret),
}

/// The keys a restore knows: those that may read a backup's ciphertext, and the target's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FernetKeyring {
    /// DR_BACKUP_FERNET_KEY.
    pub backup_key: Option<FernetKeys>,
    /// PRIMARY_FERNET_KEY, else AIRFLOW__CORE__FERNET_KEY.
    pub source: Option<FernetKeys>,
    /// SECONDARY_FERNET_KEY, else AIRFLOW__CORE__FERNET_KEY.
    pub target: Option<FernetKeys>,
}

/// What a restore does with Fernet ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FernetPlan {
    /// The keys differ: every encrypted value is re-encrypted for the target.
    Reencrypt(Rekey),
    /// Ciphertext is copied as it is, for the reason given.
    Copy(FernetMode),
}

impl FernetPlan {
    /// Re-encrypts only when both keys are known and differ.
    pub fn new(source: Option<FernetKeys>, target: Option<FernetKeys>) -> FernetPlan {
        match (source, target) {
            (Some(source), Some(target)) if source == target => {
                FernetPlan::Copy(FernetMode::CopiedSameKeys)
            }
            (Some(source), Some(target)) => FernetPlan::Reencrypt(Rekey { source, target }),
            (Some(_), None) => FernetPlan::Copy(FernetMode::CopiedNoTargetKey),
            (None, Some(_)) => FernetPlan::Copy(FernetMode::CopiedNoSourceKey),
            (None, None) => FernetPlan::Copy(FernetMode::CopiedNoKeys),
        }
    }

    pub fn rekey(&self) -> Option<&Rekey> {
        match self {
            FernetPlan::Reencrypt(rekey) => Some(rekey),
            FernetPlan::Copy(_) => None,
        }
    }

    pub fn mode(&self) -> FernetMode {
        match self {
            FernetPlan::Reencrypt(_) => FernetMode::Reencrypted,
            FernetPlan::Copy(mode) => *mode,
        }
    }
}

/// How a restore treated Fernet ciphertext, as reports show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FernetMode {
    Reencrypted,
    CopiedSameKeys,
    CopiedNoSourceKey,
    CopiedNoTargetKey,
    CopiedNoKeys,
}

impl FernetMode {
    /// One line for people, after the restore.
    pub fn summary(self) -> String {
        match self.copied_because() {
            None => format!("Fernet secrets re-encrypted {REENCRYPTED}"),
            Some(reason) => format!("Fernet ciphertext copied as it is: {reason}"),
        }
    }

    /// One line for people, before the restore (`--dry-run`).
    pub fn planned(self) -> String {
        match self.copied_because() {
            None => format!("would re-encrypt Fernet secrets {REENCRYPTED}"),
            Some(reason) => format!("would copy Fernet ciphertext as it is: {reason}"),
        }
    }

    fn copied_because(self) -> Option<&'static str> {
        match self {
            FernetMode::Reencrypted => None,
            FernetMode::CopiedSameKeys => Some("the source and target keys are the same"),
            FernetMode::CopiedNoSourceKey => Some(
                "the source key is unknown (set PRIMARY_FERNET_KEY to re-encrypt for the target's key)",
            ),
            FernetMode::CopiedNoTargetKey => Some(
                "the target key is unknown (set SECONDARY_FERNET_KEY to re-encrypt for the target's key)",
            ),
            FernetMode::CopiedNoKeys => Some(
                "no Fernet key is set (PRIMARY_FERNET_KEY, SECONDARY_FERNET_KEY or AIRFLOW__CORE__FERNET_KEY)",
            ),
        }
    }
}

const REENCRYPTED: &str =
    "from the source key (PRIMARY_FERNET_KEY) to the target key (SECONDARY_FERNET_KEY)";

/// A column that Airflow encrypts with its Fernet key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptedColumn {
    pub table: &'static str,
    /// The unique column that names a row in errors.
    pub key: &'static str,
    pub column: &'static str,
    /// The boolean column that says whether the value is encrypted; without one, see
    /// `json_is_plain`.
    pub flag: Option<&'static str>,
    /// trigger.kwargs: encrypted only where the column is `text` (Airflow 2.9+; `json`
    /// before), and a value starting with `{` is plain JSON that Airflow still reads.
    pub json_is_plain: bool,
}

impl EncryptedColumn {
    /// `table.column`, as reports name it.
    pub fn name(&self) -> String {
        format!("{}.{}", self.table, self.column)
    }
}

/// Every Fernet-encrypted column of the Airflow 2.x metadata schema.
pub const ENCRYPTED_COLUMNS: &[EncryptedColumn] = &[
    EncryptedColumn {
        table: "variable",
        key: "key",
        column: "val",
        flag: Some("is_encrypted"),
        json_is_plain: false,
    },
    EncryptedColumn {
        table: "connection",
        key: "conn_id",
        column: "password",
        flag: Some("is_encrypted"),
        json_is_plain: false,
    },
    EncryptedColumn {
        table: "connection",
        key: "conn_id",
        column: "extra",
        flag: Some("is_extra_encrypted"),
        json_is_plain: false,
    },
    EncryptedColumn {
        table: "trigger",
        key: "id",
        column: "kwargs",
        flag: None,
        json_is_plain: true,
    },
];

/// The encrypted columns of `table`.
pub fn encrypted_columns(table: &str) -> impl Iterator<Item = &'static EncryptedColumn> + '_ {
    ENCRYPTED_COLUMNS.iter().filter(move |c| c.table == table)
}

/// The Fernet key list of one side (its own variable, else AIRFLOW__CORE__FERNET_KEY, as the
/// caller resolved it); `None` when neither is set. `variable` names the key in the error.
pub fn side_keys(
    key: Option<&crate::model::Secret>,
    variable: &str,
) -> crate::error::Result<Option<FernetKeys>> {
    key.map(|key| {
        FernetKeys::parse(key.expose()).map_err(|e| crate::error::Error::InvalidValue {
            variable: variable.into(),
            value: "***".into(),
            problem: e.to_string(),
            accepted: "a Fernet key (32 bytes, url-safe base64) or a comma-separated list of them"
                .into(),
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by the cryptography 50.0.2 of Airflow 2.10.3 (scripts/airflow-venv.sh 2.10.3):
    //   k1, k2 = Fernet.generate_key(), Fernet.generate_key()
    //   Fernet(k1).encrypt("pässwörd, from Airflow".encode())
    //   MultiFernet([Fernet(k2), Fernet(k1)]).encrypt(b'{"__var": {}, "__type": "dict"}')
    const AIRFLOW_KEY_1: &str = "tt5-Pp-HVv5HtPoPOLbipJRSHYbGcAtIHJ9Da6Q5wuc=";
    const AIRFLOW_KEY_2: &str = "QoaVtMa1s03BW2ucn9tiq4RSH4_6WQ0RHkmacRKBgbw=";
    const AIRFLOW_TOKEN_KEY_1: &str = "gAAAAABrCJPdONd7uXtQNMnFEHUhuUQgKR1MEh5le3tSQVx4-c3rjtgZIrqnkLtVeX2YhuB-DFrDil4UulTP7_yAte9yHrsSJkjdy9Ol-uxOttQqjNUrwWE=";
    const AIRFLOW_TOKEN_KEY_2: &str = "gAAAAABrCJPdnlZ-qWHO3VQv7ctI_dLXwCSUWFFVvvQgJZw520bww8B1IiMlnSS3rwSyueDczg_pmDtZxnrJMERLWqlDmQCO5_6PmH5WA_Sg6W_APosnWbg=";

    const KEY_1_FINGERPRINT: &str = "5c52133ebc4dd3a8";

    fn keys(list: &str) -> FernetKeys {
        FernetKeys::parse(list).expect("valid key list")
    }

    #[test]
    fn decrypts_tokens_made_by_airflow() {
        assert_eq!(
            keys(AIRFLOW_KEY_1)
                .decrypt(AIRFLOW_TOKEN_KEY_1)
                .expect("decrypts"),
            "pässwörd, from Airflow".as_bytes()
        );
        // Airflow's MultiFernet encrypted with its first key, k2.
        assert_eq!(
            keys(AIRFLOW_KEY_2)
                .decrypt(AIRFLOW_TOKEN_KEY_2)
                .expect("decrypts"),
            br#"{"__var": {}, "__type": "dict"}"#
        );
        assert_eq!(
            keys(AIRFLOW_KEY_2).decrypt(AIRFLOW_TOKEN_KEY_1),
            Err(FernetError::Undecryptable)
        );
    }

    #[test]
    fn the_first_key_encrypts_and_every_key_decrypts() {
        let b = Fernet::generate_key();
        let c = Fernet::generate_key();
        let list = keys(&format!("{b}, {c}"));
        assert_eq!(list.len(), 2);
        let token = list.encrypt(b"secret");
        assert_eq!(keys(&b).decrypt(&token).expect("first key"), b"secret");
        assert_eq!(keys(&c).decrypt(&token), Err(FernetError::Undecryptable));
        let old = keys(&c).encrypt(b"old secret");
        assert_eq!(list.decrypt(&old).expect("second key"), b"old secret");
    }

    #[test]
    fn reencrypts_an_airflow_token_for_another_key_list() {
        let x = Fernet::generate_key();
        let b = Fernet::generate_key();
        let c = Fernet::generate_key();
        let rekey = Rekey {
            source: keys(&format!("{x},{AIRFLOW_KEY_1}")),
            target: keys(&format!("{b},{c}")),
        };
        let token = rekey.reencrypt(AIRFLOW_TOKEN_KEY_1).expect("re-encrypts");
        assert!(token.starts_with("gAAAAA"), "{token}");
        assert_eq!(
            keys(&b).decrypt(&token).expect("target key"),
            "pässwörd, from Airflow".as_bytes()
        );
        assert_eq!(
            keys(AIRFLOW_KEY_1).decrypt(&token),
            Err(FernetError::Undecryptable)
        );
        assert_eq!(
            rekey.reencrypt(AIRFLOW_TOKEN_KEY_2),
            Err(FernetError::Undecryptable)
        );
        assert_eq!(
            rekey.reencrypt("not a token"),
            Err(FernetError::Undecryptable)
        );
        assert_eq!(rekey.reencrypt(""), Err(FernetError::Undecryptable));
    }

    #[test]
    fn rejects_bad_key_lists_naming_the_key() {
        assert_eq!(FernetKeys::parse(""), Err(FernetError::NoKey));
        assert_eq!(FernetKeys::parse(" "), Err(FernetError::NoKey));
        assert_eq!(
            FernetKeys::parse(&format!("{AIRFLOW_KEY_1},short")),
            Err(FernetError::InvalidKey { position: 2 })
        );
        assert_eq!(
            FernetKeys::parse(&format!("{AIRFLOW_KEY_1},")),
            Err(FernetError::InvalidKey { position: 2 })
        );
        assert_eq!(
            FernetKeys::parse("not base64 at all!!!!!!!!!!!!!!!!!!!!!!!!!!"),
            Err(FernetError::InvalidKey { position: 1 })
        );
        // Without its padding the key is still the same key.
        assert_eq!(
            keys(AIRFLOW_KEY_1.trim_end_matches('=')),
            keys(AIRFLOW_KEY_1)
        );
    }

    #[test]
    fn lists_are_equal_when_their_keys_are_in_the_same_order() {
        let ab = format!("{AIRFLOW_KEY_1},{AIRFLOW_KEY_2}");
        let ba = format!("{AIRFLOW_KEY_2},{AIRFLOW_KEY_1}");
        assert_eq!(
            keys(&ab),
            keys(&format!(" {AIRFLOW_KEY_1} , {AIRFLOW_KEY_2}"))
        );
        assert_ne!(keys(&ab), keys(&ba));
        assert_ne!(keys(&ab), keys(AIRFLOW_KEY_1));
    }

    #[test]
    fn the_plan_reencrypts_only_when_both_keys_are_known_and_differ() {
        let a = || Some(keys(AIRFLOW_KEY_1));
        let b = || Some(keys(AIRFLOW_KEY_2));
        assert_eq!(FernetPlan::new(a(), b()).mode(), FernetMode::Reencrypted);
        assert!(FernetPlan::new(a(), b()).rekey().is_some());
        assert_eq!(FernetPlan::new(a(), a()).mode(), FernetMode::CopiedSameKeys);
        assert_eq!(
            FernetPlan::new(a(), None).mode(),
            FernetMode::CopiedNoTargetKey
        );
        assert_eq!(
            FernetPlan::new(None, b()).mode(),
            FernetMode::CopiedNoSourceKey
        );
        assert_eq!(FernetPlan::new(None, None).mode(), FernetMode::CopiedNoKeys);
        assert!(FernetPlan::new(None, None).rekey().is_none());
        assert!(
            FernetMode::CopiedNoTargetKey
                .summary()
                .starts_with("Fernet ciphertext copied as it is: the target key is unknown")
        );
        assert!(
            FernetMode::Reencrypted
                .planned()
                .starts_with("would re-encrypt Fernet secrets from the source key")
        );
    }

    #[test]
    fn a_fingerprint_names_the_key_and_not_the_list_order() {
        // HMAC-SHA256(key, "mwaa-dr fernet fingerprint") of AIRFLOW_KEY_1's 32 bytes, by
        // Python: hmac.new(base64.urlsafe_b64decode(k), b"mwaa-dr fernet fingerprint",
        // "sha256").hexdigest()[:16]
        let one = keys(AIRFLOW_KEY_1);
        let print = one.fingerprint();
        assert_eq!(print.len(), 16);
        assert!(print.bytes().all(|b| b.is_ascii_hexdigit()), "{print}");
        assert_eq!(print, KEY_1_FINGERPRINT);
        assert_ne!(print, keys(AIRFLOW_KEY_2).fingerprint());
        // The first key is the one that encrypts, so it is the one fingerprinted; every key
        // of a list matches.
        let list = keys(&format!("{AIRFLOW_KEY_2},{AIRFLOW_KEY_1}"));
        assert_eq!(list.fingerprint(), keys(AIRFLOW_KEY_2).fingerprint());
        assert!(list.has_fingerprint(&print));
        assert!(list.has_fingerprint(&print.to_uppercase()));
        assert!(!keys(AIRFLOW_KEY_2).has_fingerprint(&print));
        // Not the key, nor any part of it.
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(AIRFLOW_KEY_1)
            .expect("key");
        assert!(!hex::encode(&raw).contains(&print));
        assert!(!AIRFLOW_KEY_1.contains(&print));
    }

    #[test]
    fn a_data_key_of_32_bytes_becomes_a_fernet_key() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let from_data = FernetKeys::from_data_key(&bytes).expect("32 bytes");
        let text = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
        assert_eq!(text.len(), 44);
        assert_eq!(from_data, keys(&text));
        // Python's Fernet(text) reads the same key: a token it makes decrypts here.
        let token = from_data.encrypt(b"secret");
        assert_eq!(keys(&text).decrypt(&token).expect("same key"), b"secret");
        assert_eq!(
            FernetKeys::from_data_key(&bytes[..31]),
            Err(FernetError::InvalidKey { position: 1 })
        );
        assert_eq!(
            FernetKeys::from_data_key(&[0u8; 64]),
            Err(FernetError::InvalidKey { position: 1 })
        );
    }

    #[test]
    fn debug_shows_no_key() {
        let shown = format!(
            "{:?}",
            FernetPlan::new(Some(keys(AIRFLOW_KEY_1)), Some(keys(AIRFLOW_KEY_2)))
        );
        assert!(!shown.contains(AIRFLOW_KEY_1) && !shown.contains(AIRFLOW_KEY_2));
        assert!(!shown.contains("tt5") && !shown.contains("QoaV"), "{shown}");
    }

    #[test]
    fn every_encrypted_column_has_a_row_key() {
        assert_eq!(encrypted_columns("connection").count(), 2);
        assert_eq!(encrypted_columns("dag_run").count(), 0);
        for c in ENCRYPTED_COLUMNS {
            assert!(c.flag.is_some() != c.json_is_plain, "{}", c.name());
        }
    }
}
