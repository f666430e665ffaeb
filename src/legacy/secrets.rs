//! The original's plaintext `variable.csv` and `connection.csv`, read strictly and sealed with
//! the target's Fernet key the way Airflow itself writes those rows.

use std::collections::HashMap;

use super::csv::{Record, RecordReader};
use crate::airflow::fernet::FernetKeys;
use crate::error::{Error, Result};

/// A variable as `variable.csv` holds it; `val` is plaintext until sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct Variable {
    pub line: u64,
    pub key: String,
    pub val: String,
    pub description: Option<String>,
    pub is_encrypted: bool,
}

/// A connection as `connection.csv` holds it; `password` and `extra` are plaintext until
/// sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    pub line: u64,
    pub conn_id: String,
    pub conn_type: String,
    pub description: Option<String>,
    pub extra: Option<String>,
    pub host: Option<String>,
    pub login: Option<String>,
    pub password: Option<String>,
    pub port: Option<i32>,
    pub schema: Option<String>,
    pub is_encrypted: bool,
    pub is_extra_encrypted: bool,
}

// Plaintext secrets never reach logs.
impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Variable({} line {}, val ***)", self.key, self.line)
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Connection({} line {}, password ***, extra ***)",
            self.conn_id, self.line
        )
    }
}

impl Variable {
    /// Airflow's `Variable.set_val`: every value is encrypted, the empty string too.
    pub fn seal(&mut self, keys: &FernetKeys) {
        self.val = keys.encrypt(self.val.as_bytes());
        self.is_encrypted = true;
    }
}

impl Connection {
    /// Airflow's `Connection` setters: a password or extra is encrypted when it is not empty.
    pub fn seal(&mut self, keys: &FernetKeys) {
        if let Some(password) = &mut self.password {
            *password = keys.encrypt(password.as_bytes());
            self.is_encrypted = true;
        }
        if let Some(extra) = &mut self.extra {
            *extra = keys.encrypt(extra.as_bytes());
            self.is_extra_encrypted = true;
        }
    }
}

fn optional(field: &str) -> Option<String> {
    (!field.is_empty()).then(|| field.to_string())
}

/// Every record of a comma CSV with `columns.len()` fields; errors name `resource` and the line.
async fn records(bytes: &[u8], resource: &str, columns: &[String]) -> Result<Vec<Record>> {
    let mut reader = RecordReader::new(bytes, b',');
    let mut out = Vec::new();
    loop {
        let record = reader
            .next_record()
            .await
            .map_err(|e| Error::failed("read", format!("{resource} line {}", e.line), e.problem))?;
        let Some(record) = record else {
            return Ok(out);
        };
        if record.fields.len() != columns.len() {
            return Err(Error::failed(
                "read",
                format!("{resource} line {}", record.line),
                format!(
                    "{} fields, the original writes {}: {}",
                    record.fields.len(),
                    columns.len(),
                    columns.join(",")
                ),
            ));
        }
        out.push(record);
    }
}

/// The first key seen twice, with both lines.
fn duplicate<'a>(keys: impl Iterator<Item = (&'a str, u64)>) -> Option<(&'a str, u64, u64)> {
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for (key, line) in keys {
        if let Some(first) = seen.insert(key, line) {
            return Some((key, first, line));
        }
    }
    None
}

/// Reads `variable.csv` (`key,val,description`). An empty `val` is the empty string (Airflow
/// variables hold text), an empty description is NULL.
pub async fn read_variables(
    bytes: &[u8],
    resource: &str,
    columns: &[String],
) -> Result<Vec<Variable>> {
    let index = |name: &str| columns.iter().position(|c| c == name);
    let (Some(k), Some(v), Some(d)) = (index("key"), index("val"), index("description")) else {
        return Err(Error::failed(
            "read legacy format",
            "config/legacy-format.json (built in)",
            "the variable columns need key, val and description",
        ));
    };
    let mut out = Vec::new();
    for record in records(bytes, resource, columns).await? {
        let f = &record.fields;
        if f[k].is_empty() {
            return Err(Error::failed(
                "read",
                format!("{resource} line {}", record.line),
                "a variable without a key",
            ));
        }
        out.push(Variable {
            line: record.line,
            key: f[k].clone(),
            val: f[v].clone(),
            description: optional(&f[d]),
            is_encrypted: false,
        });
    }
    if let Some((key, first, again)) = duplicate(out.iter().map(|v| (v.key.as_str(), v.line))) {
        return Err(Error::failed(
            "read",
            format!("{resource} line {again}"),
            format!("variable {key} is also on line {first}"),
        ));
    }
    Ok(out)
}

/// Reads `connection.csv`. Empty fields are NULL, except `conn_type` (NOT NULL: the empty
/// string); `port` must be an integer.
pub async fn read_connections(
    bytes: &[u8],
    resource: &str,
    columns: &[String],
) -> Result<Vec<Connection>> {
    let mut out = Vec::new();
    for record in records(bytes, resource, columns).await? {
        let field = |name: &str| -> &str {
            columns
                .iter()
                .position(|c| c == name)
                .and_then(|i| record.fields.get(i))
                .map(String::as_str)
                .unwrap_or_default()
        };
        let at = || format!("{resource} line {}", record.line);
        if field("conn_id").is_empty() {
            return Err(Error::failed(
                "read",
                at(),
                "a connection without a conn_id",
            ));
        }
        let port = match field("port") {
            "" => None,
            text => Some(text.parse::<i32>().map_err(|_| {
                Error::failed("read", at(), format!("port {text:?} is not an integer"))
            })?),
        };
        out.push(Connection {
            line: record.line,
            conn_id: field("conn_id").to_string(),
            conn_type: field("conn_type").to_string(),
            description: optional(field("description")),
            extra: optional(field("extra")),
            host: optional(field("host")),
            login: optional(field("login")),
            password: optional(field("password")),
            port,
            schema: optional(field("schema")),
            is_encrypted: false,
            is_extra_encrypted: false,
        });
    }
    if let Some((id, first, again)) = duplicate(out.iter().map(|c| (c.conn_id.as_str(), c.line))) {
        return Err(Error::failed(
            "read",
            format!("{resource} line {again}"),
            format!("connection {id} is also on line {first}"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &str) -> Vec<String> {
        names.split(',').map(str::to_string).collect()
    }

    #[tokio::test]
    async fn reads_and_seals_like_airflow() {
        let vars = read_variables(
            b"plain,hello,a plain one\r\nempty,,\r\nmulti,\"a,b\r\n\"\"c\"\"\",\r\n",
            "variable.csv",
            &cols("key,val,description"),
        )
        .await
        .expect("variables");
        assert_eq!(vars.len(), 3);
        assert_eq!(vars[1].val, "");
        assert_eq!(vars[1].description, None);
        assert_eq!(vars[2].val, "a,b\r\n\"c\"");
        assert_eq!(vars[2].line, 3);
        let keys = FernetKeys::parse(&fernet::Fernet::generate_key()).expect("key");
        let mut sealed = vars[1].clone();
        sealed.seal(&keys);
        assert!(sealed.is_encrypted);
        assert_eq!(keys.decrypt(&sealed.val).expect("decrypts"), b"");

        let columns = cols("conn_id,conn_type,description,extra,host,login,password,port,schema");
        let conns = read_connections(
            b"wh,postgres,,\"{\"\"sslmode\"\": \"\"require\"\"}\",wh.example,etl,s3cr3t,5432,dw\r\nbare,http,,,,,,,\r\n",
            "connection.csv",
            &columns,
        )
        .await
        .expect("connections");
        let mut wh = conns[0].clone();
        assert_eq!(wh.port, Some(5432));
        wh.seal(&keys);
        assert!(wh.is_encrypted && wh.is_extra_encrypted);
        assert_eq!(
            keys.decrypt(wh.password.as_deref().unwrap_or_default())
                .expect("password"),
            b"s3cr3t"
        );
        assert_eq!(
            keys.decrypt(wh.extra.as_deref().unwrap_or_default())
                .expect("extra"),
            br#"{"sslmode": "require"}"#
        );
        let mut bare = conns[1].clone();
        bare.seal(&keys);
        assert!(!bare.is_encrypted && !bare.is_extra_encrypted);
        assert_eq!((bare.password, bare.extra, bare.port), (None, None, None));
        assert!(!format!("{wh:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn errors_name_the_line() {
        let columns = cols("key,val,description");
        let err = read_variables(b"a,1,\r\nb,2\r\n", "variable.csv", &columns)
            .await
            .expect_err("short record")
            .to_string();
        assert!(err.contains("variable.csv line 2"), "{err}");
        let err = read_variables(b"a,1,\r\nb,2,\r\na,3,\r\n", "variable.csv", &columns)
            .await
            .expect_err("duplicate")
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("also on line 1"),
            "{err}"
        );
        let columns = cols("conn_id,conn_type,description,extra,host,login,password,port,schema");
        let err = read_connections(b"c,http,,,,,,port,\r\n", "connection.csv", &columns)
            .await
            .expect_err("bad port")
            .to_string();
        assert!(
            err.contains("connection.csv line 1") && err.contains("not an integer"),
            "{err}"
        );
    }
}
