//! The MWAA startup script: fetches the binary from S3 into the container and installs it
//! only when its SHA-256 is the one written in at render time.

use sha2::{Digest, Sha256};

use super::sh_quote;
use crate::error::{Error, Result};

const TEMPLATE: &str = include_str!("templates/startup.sh");

/// The name MWAA's startup script is uploaded under, by convention.
pub const FILE_NAME: &str = "startup.sh";

/// What the startup script is rendered from.
#[derive(Debug, Clone)]
pub struct StartupSettings {
    /// `s3://bucket/key` of the binary.
    pub binary_uri: String,
    /// An S3 object version, to pin the exact upload.
    pub binary_version: Option<String>,
    /// The SHA-256 the binary must have, as hex.
    pub binary_sha256: String,
    pub install_path: String,
}

/// The SHA-256 of `bytes`, as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Renders the startup script, after checking the URI, the checksum and the install path.
pub fn render_startup(settings: &StartupSettings) -> Result<String> {
    let uri = &settings.binary_uri;
    let valid_uri = uri
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(bucket, key)| !bucket.is_empty() && !key.is_empty() && !key.ends_with('/'));
    if !valid_uri {
        return Err(Error::InvalidValue {
            variable: "--binary-uri".into(),
            value: uri.clone(),
            problem: "not the S3 URI of an object".into(),
            accepted: "s3://bucket/key".into(),
        });
    }
    let sha = settings.binary_sha256.to_ascii_lowercase();
    if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::InvalidValue {
            variable: "--binary-sha256".into(),
            value: settings.binary_sha256.clone(),
            problem: "not a SHA-256".into(),
            accepted: "64 hexadecimal digits (sha256sum's output)".into(),
        });
    }
    if !settings.install_path.starts_with('/') || settings.install_path.ends_with('/') {
        return Err(Error::InvalidValue {
            variable: "--install-path".into(),
            value: settings.install_path.clone(),
            problem: "not an absolute file path".into(),
            accepted: "an absolute path such as /usr/local/airflow/mwaa-dr/bin/mwaa-dr".into(),
        });
    }
    Ok(TEMPLATE
        .replace("__BINARY_URI__", &sh_quote(uri))
        .replace(
            "__BINARY_VERSION__",
            &sh_quote(settings.binary_version.as_deref().unwrap_or("")),
        )
        .replace("__BINARY_SHA256__", &sh_quote(&sha))
        .replace("__INSTALL_PATH__", &sh_quote(&settings.install_path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> StartupSettings {
        StartupSettings {
            binary_uri: "s3://bucket/tools/mwaa-dr".into(),
            binary_version: None,
            binary_sha256: sha256_hex(b"binary"),
            install_path: super::super::DEFAULT_INSTALL_PATH.into(),
        }
    }

    #[test]
    fn writes_the_checksum_uri_and_path_in() {
        let script = render_startup(&settings()).expect("renders");
        assert!(script.contains(&format!(
            "MWAA_DR_BINARY_SHA256='{}'",
            sha256_hex(b"binary")
        )));
        assert!(script.contains("MWAA_DR_BINARY_URI='s3://bucket/tools/mwaa-dr'"));
        assert!(script.contains("MWAA_DR_BINARY_VERSION=''"));
        assert!(!script.contains("__BINARY"));
    }

    #[test]
    fn refuses_a_bad_uri_checksum_or_path_naming_the_flag() {
        for (change, flag) in [
            (
                (|s: &mut StartupSettings| s.binary_uri = "s3://bucket".into())
                    as fn(&mut StartupSettings),
                "--binary-uri",
            ),
            (|s| s.binary_uri = "https://x/y".into(), "--binary-uri"),
            (|s| s.binary_sha256 = "abc".into(), "--binary-sha256"),
            (|s| s.install_path = "bin/mwaa-dr".into(), "--install-path"),
        ] {
            let mut s = settings();
            change(&mut s);
            let err = render_startup(&s).expect_err("refused").to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
    }
}
