//! KMS: the per-backup data key that carries Fernet secrets between Regions.

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use tokio::sync::OnceCell;

use super::{endpoint_override, sdk_config, sdk_error};
use crate::error::{Error, Result};
use crate::model::{AwsTimeouts, Secret};

/// A data key: its plaintext (kept in memory only) and the blob KMS wrapped it into.
pub struct DataKey {
    /// The 32 random bytes, as base64 (a `Secret` prints `***`).
    pub plaintext: Secret,
    pub wrapped: Vec<u8>,
}

#[async_trait]
pub trait Kms: Send + Sync {
    /// A fresh AES-256 data key under `key_id` (id, alias or ARN).
    async fn generate_data_key(&self, key_id: &str) -> Result<DataKey>;
    /// The plaintext (base64) of a data key `key_id` wrapped.
    async fn decrypt(&self, key_id: &str, wrapped: &[u8]) -> Result<Secret>;
}

/// KMS through the SDK, in one Region; the client is built at the first call, so a run that
/// never needs KMS never loads its configuration.
pub struct SdkKms {
    region: Option<String>,
    timeouts: AwsTimeouts,
    client: OnceCell<Client>,
}

impl SdkKms {
    pub fn new(region: Option<&str>, timeouts: &AwsTimeouts) -> Self {
        SdkKms {
            region: region.map(str::to_string),
            timeouts: *timeouts,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let shared = sdk_config(self.region.as_deref(), &self.timeouts).await;
                let mut builder = aws_sdk_kms::config::Builder::from(&shared);
                if let Some(endpoint) = endpoint_override(&shared, "KMS") {
                    builder = builder.endpoint_url(endpoint);
                }
                Client::from_conf(builder.build())
            })
            .await
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[async_trait]
impl Kms for SdkKms {
    async fn generate_data_key(&self, key_id: &str) -> Result<DataKey> {
        let answer = self
            .client()
            .await
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await
            .map_err(|e| sdk_error("GenerateDataKey", key_id, e))?;
        let (Some(plaintext), Some(wrapped)) = (answer.plaintext(), answer.ciphertext_blob())
        else {
            return Err(Error::failed(
                "GenerateDataKey",
                key_id,
                "KMS answered without the data key",
            ));
        };
        Ok(DataKey {
            plaintext: Secret::new(base64(plaintext.as_ref())),
            wrapped: wrapped.as_ref().to_vec(),
        })
    }

    async fn decrypt(&self, key_id: &str, wrapped: &[u8]) -> Result<Secret> {
        let answer = self
            .client()
            .await
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .send()
            .await
            .map_err(|e| sdk_error("Decrypt", key_id, e))?;
        let plaintext = answer.plaintext().ok_or_else(|| {
            Error::failed("Decrypt", key_id, "KMS answered without the plaintext")
        })?;
        Ok(Secret::new(base64(plaintext.as_ref())))
    }
}
