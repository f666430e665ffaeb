//! Where the backups live: an S3 prefix or a local directory.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub const ACCEPTED_LOCATIONS: &str =
    "s3://BUCKET[/PREFIX], file:///ABSOLUTE/PATH or a plain directory path";

/// A parsed backup store location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    S3 { bucket: String, prefix: String },
    Local { path: PathBuf },
}

impl StoreLocation {
    pub fn s3(bucket: &str, prefix: &str) -> Self {
        StoreLocation::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }
    }
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let value = raw.trim();
        if value.is_empty() {
            return Err("it is empty".into());
        }
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("the s3:// URL names no bucket".into());
            }
            return Ok(StoreLocation::s3(bucket, prefix));
        }
        if let Some(rest) = value.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err("a file:// URL needs an absolute path (file:///…)".into());
            }
            return Ok(StoreLocation::Local { path: rest.into() });
        }
        if let Some((scheme, _)) = value.split_once("://") {
            return Err(format!("scheme {scheme}:// is not supported"));
        }
        Ok(StoreLocation::Local { path: value.into() })
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StoreLocation::Local { path } => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_form() {
        assert_eq!(
            "s3://bucket/some/prefix/".parse(),
            Ok(StoreLocation::s3("bucket", "some/prefix"))
        );
        assert_eq!("s3://bucket".parse(), Ok(StoreLocation::s3("bucket", "")));
        assert_eq!(
            "file:///var/backups".parse(),
            Ok(StoreLocation::Local {
                path: "/var/backups".into()
            })
        );
        assert_eq!(
            "./backups".parse(),
            Ok(StoreLocation::Local {
                path: "./backups".into()
            })
        );
        assert!("gs://bucket".parse::<StoreLocation>().is_err());
        assert!("file://relative".parse::<StoreLocation>().is_err());
        assert!("s3:///prefix".parse::<StoreLocation>().is_err());
    }
}
