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

/// The connection parameters whose value is a secret, in URL queries and in libpq's
/// key=value strings alike (libpq spells them in lower case; a user may not).
const SECRET_PARAMETERS: &[&str] = &["password", "sslpassword"];

pub(crate) fn is_secret_parameter(name: &str) -> bool {
    // A query key may be percent-encoded (`pass%77ord`); compare what the driver will see.
    let decoded: String = url::form_urlencoded::parse(name.as_bytes())
        .map(|(k, _)| k.into_owned())
        .next()
        .unwrap_or_default();
    SECRET_PARAMETERS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(name.trim()) || s.eq_ignore_ascii_case(decoded.trim()))
}

/// Masks every password of a connection string, whether or not the rest of it parses, so
/// that even an invalid value can be named in an error: the userinfo password of a URL
/// (`scheme://user:password@host/...`), `password=` and `sslpassword=` query parameters, and
/// the same keys of a libpq key=value string (`host=h password='x y'`).
pub fn redact_url(raw: &str) -> String {
    match raw.find("://") {
        Some(scheme_end) => {
            let rest_start = scheme_end + 3;
            format!(
                "{}{}",
                &raw[..rest_start],
                redact_authority_and_query(&raw[rest_start..])
            )
        }
        // Without a scheme it may be a key=value string, or a URL whose "://" is mistyped.
        None => redact_userinfo(&redact_key_values(raw)),
    }
}

/// `rest` is what follows `scheme://`.
fn redact_authority_and_query(rest: &str) -> String {
    // The userinfo ends at the last '@' before the query; a password may contain an
    // unencoded '?', '/' or '@', so when nothing before the first '?' has an '@', the
    // last '@' of all ends it.
    let at = match rest.find('?') {
        Some(q) => rest[..q].rfind('@').or_else(|| rest.rfind('@')),
        None => rest.rfind('@'),
    };
    let (authority, tail) = match at {
        Some(at) => (redact_userinfo(&rest[..=at]), &rest[at + 1..]),
        None => (String::new(), rest),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_query(query)),
        None => tail.to_string(),
    };
    format!("{authority}{tail}")
}

/// Masks the password of `user:password@...`: everything from the first ':' to the last '@'.
fn redact_userinfo(text: &str) -> String {
    let Some(at) = text.rfind('@') else {
        return text.to_string();
    };
    match text[..at].find(':') {
        Some(colon) => format!("{}:***{}", &text[..colon], &text[at..]),
        None => text.to_string(),
    }
}

/// Masks secret parameters of a URL query (`a=1&password=x#frag`).
fn redact_query(query: &str) -> String {
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_parameter(key) => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect();
    let mut out = masked.join("&");
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Masks secret keys of a libpq key=value string: `key = value` pairs separated by
/// whitespace, values optionally single-quoted with backslash escapes. When the text stops
/// being key=value pairs, the rest is masked if it mentions a secret key, since where its
/// value ends cannot be told.
fn redact_key_values(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    while i < bytes.len() {
        let start = i;
        i = skip_space(i);
        out.push_str(&text[start..i]);
        if i >= bytes.len() {
            break;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &text[key_start..i];
        let eq = skip_space(i);
        if eq >= bytes.len() || bytes[eq] != b'=' {
            // Not key=value (any more): keep the text unless it may hold a secret.
            let rest = &text[key_start..];
            let lower = rest.to_ascii_lowercase();
            if SECRET_PARAMETERS.iter().any(|s| lower.contains(s)) {
                out.push_str("***");
            } else {
                out.push_str(rest);
            }
            return out;
        }
        let value_start = skip_space(eq + 1);
        let mut j = value_start;
        if j < bytes.len() && bytes[j] == b'\'' {
            j += 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            j = (j + 1).min(bytes.len());
        } else {
            while j < bytes.len() && !bytes[j].is_ascii_whitespace() {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            j = j.min(bytes.len());
        }
        out.push_str(&text[key_start..value_start]);
        if is_secret_parameter(key) {
            out.push_str("***");
        } else {
            out.push_str(&text[value_start..j]);
        }
        i = j;
    }
    out
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

    #[test]
    fn redacts_password_query_parameters() {
        for (raw, expected) in [
            (
                "postgres://u@h/db?password=QSECRET",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgres://h:5432/db?user=u&password=QSECRET&sslmode=disable",
                "postgres://h:5432/db?user=u&password=***&sslmode=disable",
            ),
            (
                "postgres://u@h/db?sslpassword=QSECRET&PASSWORD=QSECRET#frag",
                "postgres://u@h/db?sslpassword=***&PASSWORD=***#frag",
            ),
            (
                "postgres://h/db?pass%77ord=Q%53ECRET",
                "postgres://h/db?pass%77ord=***",
            ),
            (
                "postgres://u:QSECRET@h/db?password=QSECRET&application_name=a@b",
                "postgres://u:***@h/db?password=***&application_name=a@b",
            ),
            (
                "postgres://u:QSE?CRET@h/db?password=QSECRET",
                "postgres://u:***@h/db?password=***",
            ),
        ] {
            assert_eq!(redact_url(raw), expected, "{raw}");
        }
    }

    #[test]
    fn redacts_key_value_connection_strings() {
        for (raw, expected) in [
            (
                "host=h password=QSECRET dbname=d",
                "host=h password=*** dbname=d",
            ),
            (
                "host=h password = 'Q SECRET \\' x' dbname=d",
                "host=h password = *** dbname=d",
            ),
            ("sslpassword=QSECRET", "sslpassword=***"),
            ("host=h PASSWORD=QSECRET", "host=h PASSWORD=***"),
            // No longer key=value: what follows may be the secret, so it goes.
            ("host=h password QSECRET", "host=h ***"),
            // Multi-byte text is kept whole.
            ("host=h pässword=x ü=\\é", "host=h pässword=x ü=\\é"),
            ("postgres//u:QSECRET@h/db", "postgres//u:***@h/db"),
        ] {
            assert_eq!(redact_url(raw), expected, "{raw}");
        }
    }
}
