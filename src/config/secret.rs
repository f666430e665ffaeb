//! Values that must never be printed: database passwords and Fernet keys.

use std::fmt;

/// A secret string. `Debug` and `Display` print `***`; only `expose` gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Masks the password of a URL-like string (`scheme://user:password@host/...`), whether or
/// not the rest of it parses, so that even an invalid URL can be named in an error.
pub fn redact_url(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://") else {
        return raw.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &raw[rest_start..];
    // The userinfo ends at the last '@' before the path; passwords may contain '/' or '@'
    // when not percent-encoded, so look for the last '@' overall.
    let Some(at) = rest.rfind('@') else {
        return raw.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &raw[..rest_start],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("postgresql+psycopg2://airflow:p%40ss@db:5432/airflow"),
            "postgresql+psycopg2://airflow:***@db:5432/airflow"
        );
        assert_eq!(
            redact_url("postgres://u:pa@ss/w@host/db"),
            "postgres://u:***@host/db"
        );
        assert_eq!(redact_url("postgres://u@host/db"), "postgres://u@host/db");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
