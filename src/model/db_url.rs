//! Metadata database URLs: PostgreSQL URLs and their SQLAlchemy spellings.

use std::fmt;

use url::Url;

use super::secret::{Secret, is_secret_parameter, redact_url};

/// A validated PostgreSQL URL. The passwords (userinfo, `password=` / `sslpassword=` query
/// parameters) stay inside; printing shows `***` in their place.
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
            if trimmed.contains('=') {
                return Err("it is a key=value connection string; give the same settings as a URL: postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=…".into());
            }
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

    /// The URL MWAA's own images build from their raw `MWAA__DB__*` variables (see
    /// aws/amazon-mwaa-docker-images `get_db_connection_string`): user and password
    /// percent-encoded, `sslmode` as a query parameter.
    pub fn from_parts(
        host: &str,
        port: u16,
        database: &str,
        user: &str,
        password: &str,
        sslmode: Option<&str>,
    ) -> Result<DbUrl, String> {
        let mut url = Url::parse("postgres://placeholder/")
            .map_err(|e| format!("cannot build a URL ({e})"))?;
        url.set_host(Some(host))
            .map_err(|e| format!("host {host:?} is not valid ({e})"))?;
        url.set_port(Some(port))
            .map_err(|()| "the port is not valid".to_string())?;
        url.set_username(user)
            .map_err(|()| "the user name is not valid".to_string())?;
        url.set_password(Some(password))
            .map_err(|()| "the password is not valid".to_string())?;
        url.set_path(database);
        if let Some(mode) = sslmode {
            url.query_pairs_mut().append_pair("sslmode", mode);
        }
        DbUrl::parse(url.as_str())
    }

    /// The URL to hand to the PostgreSQL driver, password included.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    /// The URL with every password masked, for messages and `config`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// `HOST:PORT/DATABASE`: what a backup records of its source. No user, password or
    /// parameters, so a manifest never holds credentials.
    pub fn location(&self) -> String {
        Url::parse(self.url.expose())
            .ok()
            .and_then(|u| location(&u))
            .unwrap_or_else(|| self.database())
    }

    /// `message` with every password of this URL, as given and percent-decoded, masked:
    /// driver messages may echo connection details.
    pub fn scrub(&self, message: &str) -> String {
        let Ok(url) = Url::parse(self.url.expose()) else {
            return message.to_string();
        };
        let mut secrets: Vec<String> = Vec::new();
        if let Some(password) = url.password() {
            secrets.push(password.to_string());
            secrets.push(percent_decode(password));
        }
        for pair in url.query().unwrap_or_default().split('&') {
            if let Some((key, value)) = pair.split_once('=')
                && is_secret_parameter(key)
            {
                secrets.push(value.to_string());
                secrets.push(percent_decode(value));
            }
        }
        for (key, value) in url.query_pairs() {
            if is_secret_parameter(&key) {
                secrets.push(value.into_owned());
            }
        }
        // Longest first, so a password containing another is masked whole.
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        secrets.iter().fold(message.to_string(), |text, secret| {
            text.replace(secret.as_str(), "***")
        })
    }

    /// Database name, for messages.
    pub fn database(&self) -> String {
        Url::parse(self.url.expose())
            .map(|u| u.path().trim_start_matches('/').to_string())
            .unwrap_or_default()
    }
}

/// The user name and password of MWAA's `MWAA__DB__CREDENTIALS`, a JSON object
/// `{"username": …, "password": …}`. The error never contains the password.
pub fn mwaa_credentials(json: &str) -> Result<(String, String), String> {
    #[derive(serde::Deserialize)]
    struct Credentials {
        username: String,
        password: String,
    }
    serde_json::from_str::<Credentials>(json)
        .map(|c| (c.username, c.password))
        .map_err(|e| {
            format!(
                "not a JSON object with string fields username and password (at line {} column {})",
                e.line(),
                e.column()
            )
        })
}

/// `HOST:PORT/DATABASE` of a URL; a Unix socket directory given as `?host=` stands for the
/// host. `None` when the URL names no host.
fn location(url: &Url) -> Option<String> {
    let host = match url.host_str().filter(|h| !h.is_empty()) {
        Some(host) => host.to_string(),
        None => url
            .query_pairs()
            .find(|(k, _)| k == "host")
            .map(|(_, v)| v.into_owned())?,
    };
    let port = url.port().unwrap_or(5432);
    let database = url.path().trim_start_matches('/');
    Some(format!("{host}:{port}/{database}"))
}

/// What a manifest's `source.database` may show. Backups record `HOST:PORT/DATABASE`; older
/// ones recorded a URL, reduced here the same way, so no stored credential is ever shown.
pub fn stored_location(stored: &str) -> String {
    if stored.contains("://") {
        let normalized = match stored.split_once("://") {
            Some((_, rest)) => format!("postgres://{rest}"),
            None => stored.to_string(),
        };
        if let Some(location) = Url::parse(&normalized).ok().and_then(|u| location(&u)) {
            return location;
        }
    }
    redact_url(stored)
}

/// `%XX` escapes decoded (and nothing else: a '+' in a userinfo is a '+').
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'%'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

    #[test]
    fn query_passwords_never_show() {
        let url = DbUrl::parse(
            "postgresql+psycopg2://h:6543/airflow?user=u&password=p%40QSECRET&sslmode=disable&sslpassword=QKEY",
        )
        .expect("valid");
        for shown in [
            url.redacted().to_string(),
            url.to_string(),
            format!("{url:?}"),
            url.location(),
        ] {
            assert!(
                !shown.contains("QSECRET") && !shown.contains("QKEY"),
                "{shown}"
            );
        }
        assert_eq!(
            url.redacted(),
            "postgres://h:6543/airflow?user=u&password=***&sslmode=disable&sslpassword=***"
        );
        assert_eq!(url.location(), "h:6543/airflow");
        assert_eq!(
            url.scrub("auth failed for p@QSECRET / p%40QSECRET / QKEY"),
            "auth failed for *** / *** / ***"
        );
    }

    #[test]
    fn location_has_no_credentials() {
        let url = DbUrl::parse("postgres://airflow:s3cret@db.example/airflow").expect("valid");
        assert_eq!(url.location(), "db.example:5432/airflow");
        let socket =
            DbUrl::parse("postgres:///airflow?host=/run/postgresql&password=x").expect("valid");
        assert_eq!(socket.location(), "/run/postgresql:5432/airflow");
        assert_eq!(
            stored_location("postgres://u:***@h:5433/db?password=QSECRET"),
            "h:5433/db"
        );
        assert_eq!(stored_location("h:5433/db"), "h:5433/db");
        assert_eq!(
            stored_location("not://a url:QSECRET@x?password=QSECRET"),
            "x:5432/"
        );
    }

    #[test]
    fn key_value_strings_are_refused_without_their_password() {
        let err = DbUrl::parse("host=h port=5432 password=QSECRET dbname=d").expect_err("kv");
        assert!(
            err.contains("key=value") && err.contains("postgres://"),
            "{err}"
        );
        assert!(!err.contains("QSECRET"), "{err}");
    }

    #[test]
    fn builds_mwaas_url_from_its_raw_variables() {
        let (user, password) =
            mwaa_credentials(r#"{"username": "adminuser", "password": "p@ss/w:rd?&"}"#)
                .expect("credentials");
        let url = DbUrl::from_parts(
            "db.rds.amazonaws.com",
            5432,
            "AirflowMetadata",
            &user,
            &password,
            Some("require"),
        )
        .expect("url");
        assert_eq!(
            url.redacted(),
            "postgres://adminuser:***@db.rds.amazonaws.com:5432/AirflowMetadata?sslmode=require"
        );
        let parsed = Url::parse(url.expose()).expect("parses");
        assert_eq!(
            percent_decode(parsed.password().expect("password")),
            password
        );
    }

    #[test]
    fn mwaa_credentials_errors_never_show_the_password() {
        for bad in [
            r#"{"username": "u"}"#,
            r#"{"username": "u", "password": "hunter2""#,
            "hunter2",
        ] {
            let err = mwaa_credentials(bad).expect_err("refused");
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("username and password"), "{err}");
        }
    }

    /// What MWAA writes into AIRFLOW__DATABASE__SQL_ALCHEMY_CONN reaches the driver with TLS
    /// required: sqlx reads `sslmode` from the URL (psycopg2's spelling).
    #[test]
    fn mwaas_sqlalchemy_url_requires_tls_in_the_driver() {
        use sqlx::postgres::{PgConnectOptions, PgSslMode};
        for raw in [
            "postgresql+psycopg2://adminuser:pw@db.example:5432/AirflowMetadata?sslmode=require",
            "postgresql+psycopg2://adminuser:pw@db.example:5432/AirflowMetadata?sslmode=require&connect_timeout=10",
        ] {
            let url = DbUrl::parse(raw).expect("parses");
            let options: PgConnectOptions = url.expose().parse().expect("driver options");
            assert!(
                matches!(options.get_ssl_mode(), PgSslMode::Require),
                "{raw}"
            );
            assert_eq!(options.get_host(), "db.example");
            assert_eq!(options.get_database(), Some("AirflowMetadata"));
        }
    }
}
