//! Metadata database URLs: PostgreSQL URLs and their SQLAlchemy spellings.

use std::fmt;

use url::Url;

use super::secret::{Secret, redact_url};

/// A validated PostgreSQL URL. The password stays inside; printing shows `***` in its place.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    url: Secret,
    redacted: String,
}

pub const ACCEPTED: &str = "a PostgreSQL URL: postgres://USER:PASSWORD@HOST:PORT/DATABASE, postgresql://… or a SQLAlchemy URL such as postgresql+psycopg2://…";

impl DbUrl {
    /// Parses `raw`, translating `postgresql+DRIVER://` to `postgres://`. The error is a
    /// description of the problem; it never contains the password.
    pub fn parse(raw: &str) -> Result<DbUrl, String> {
        let trimmed = raw.trim();
        let Some((scheme, rest)) = trimmed.split_once("://") else {
            return Err("it has no scheme (expected postgres://…)".into());
        };
        let base = scheme.split('+').next().unwrap_or(scheme);
        if !matches!(base, "postgres" | "postgresql") {
            return Err(format!(
                "scheme {scheme:?} is not PostgreSQL; Airflow metadata must live in PostgreSQL"
            ));
        }
        let normalized = format!("postgres://{rest}");
        let url =
            Url::parse(&normalized).map_err(|e| format!("it does not parse as a URL ({e})"))?;
        let has_socket_host = url.query_pairs().any(|(k, _)| k == "host");
        if url.host_str().is_none_or(str::is_empty) && !has_socket_host {
            return Err("it names no host".into());
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err("it names no database (the path after the host)".into());
        }
        Ok(DbUrl {
            redacted: redact_url(&normalized),
            url: Secret::new(normalized),
        })
    }

    /// The URL to hand to the PostgreSQL driver, password included.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Database name, for messages.
    pub fn database(&self) -> String {
        Url::parse(self.url.expose())
            .map(|u| u.path().trim_start_matches('/').to_string())
            .unwrap_or_default()
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sqlalchemy_urls() {
        let url = DbUrl::parse("postgresql+psycopg2://airflow:s3cret@db.example:5432/airflow")
            .expect("valid");
        assert_eq!(
            url.expose(),
            "postgres://airflow:s3cret@db.example:5432/airflow"
        );
        assert_eq!(
            url.to_string(),
            "postgres://airflow:***@db.example:5432/airflow"
        );
        assert_eq!(url.database(), "airflow");
    }

    #[test]
    fn rejects_what_is_not_postgres() {
        for bad in [
            "mysql://u:p@h/db",
            "sqlite:////tmp/airflow.db",
            "postgres://u:p@h",
            "postgres//u:p@h/db",
            "postgres://u:p@:99999/db",
        ] {
            let err = DbUrl::parse(bad).expect_err(bad);
            assert!(!err.contains(":p@"), "{err}");
        }
    }
}
