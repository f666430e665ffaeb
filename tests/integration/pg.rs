//! Databases on the bench PostgreSQL made from the committed real Airflow schema fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::{Connection, PgConnection};

use crate::common::bench_server;

pub struct Bench {
    admin_url: String,
    bin: PathBuf,
}

pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

impl Bench {
    /// The bench PostgreSQL. Without it (MWAA_DR_TEST_PG_URL unset) the test fails: run the
    /// suite through scripts/test.sh, which starts the server.
    pub fn get() -> Option<Bench> {
        let admin_url = bench_server("MWAA_DR_TEST_PG_URL")?;
        let bin = std::env::var("MWAA_DR_TEST_PG_BIN")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
        Some(Bench {
            admin_url,
            bin: bin.into(),
        })
    }

    pub fn url(&self, db: &str) -> String {
        match self.admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{db}"),
            None => panic!("bench URL has no database: {}", self.admin_url),
        }
    }

    fn psql(&self, url: &str, args: &[&str]) {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
            .args(args)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fresh database `name` with the schema of Airflow `version`, optionally filled with
    /// the sample metadata (`sample-metadata.sql` on Airflow 2, `sample-metadata-3.sql` on 3).
    pub fn airflow_db(&self, name: &str, version: &str, sample: bool) -> String {
        let name = format!("{name}_{}", std::process::id());
        self.psql(
            &self.admin_url,
            &[
                "-c",
                &format!("DROP DATABASE IF EXISTS {name}"),
                "-c",
                &format!("CREATE DATABASE {name}"),
            ],
        );
        let url = self.url(&name);
        let schema = fixture(&format!("airflow/schema-{version}.sql"));
        self.psql(&url, &["-f", schema.to_str().expect("utf-8 path")]);
        if sample {
            let data = fixture(if version.starts_with("2.") {
                "data/sample-metadata.sql"
            } else {
                "data/sample-metadata-3.sql"
            });
            self.psql(&url, &["-f", data.to_str().expect("utf-8 path")]);
        }
        url
    }

    pub fn sql(&self, url: &str, sql: &str) {
        self.psql(url, &["-c", sql]);
    }
}

pub async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.expect("connect")
}

/// A digest of `SELECT cols FROM table [WHERE filter]`, order-independent and byte-exact.
pub async fn digest(
    url: &str,
    table: &str,
    columns: &[String],
    filter: Option<&str>,
) -> (i64, String) {
    let mut conn = connect(url).await;
    let cols = columns
        .iter()
        .map(|c| format!("t.\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = filter.map(|f| format!(" WHERE {f}")).unwrap_or_default();
    let sql = format!(
        "SELECT count(*), coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '') FROM (SELECT {cols} FROM \"{table}\" AS t{filter}) r"
    );
    sqlx::query_as(&sql)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A digest of every table of the database: proves a failed run changed no row. (Sequence
/// counters are left out: PostgreSQL never rolls back a nextval.)
pub async fn whole_db_digest(url: &str) -> Vec<(String, i64, String)> {
    let mut conn = connect(url).await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    let mut out = Vec::new();
    for t in tables {
        let (n, d): (i64, String) = sqlx::query_as(&format!(
            "SELECT count(*), coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '') FROM \"{t}\" r"
        ))
        .fetch_one(&mut conn)
        .await
        .expect("digest");
        out.push((t, n, d));
    }
    out
}
