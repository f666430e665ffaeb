//! Airflow versions and the alembic revision each one's schema carries (`config/airflow-versions.json`).

use std::cmp::Ordering;

use serde::Deserialize;

const BUILTIN: &str = include_str!("../../config/airflow-versions.json");

#[derive(Debug, Clone, Deserialize)]
pub struct KnownVersion {
    pub version: String,
    pub alembic_revision: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VersionTable {
    versions: Vec<KnownVersion>,
}

impl VersionTable {
    /// The table shipped in the binary.
    pub fn builtin() -> Self {
        // The file is part of the source tree and checked by a unit test, so a parse failure
        // here is a build defect, not bad input.
        serde_json::from_str(BUILTIN).unwrap_or_else(|e| {
            panic!("config/airflow-versions.json is invalid: {e}");
        })
    }

    pub fn known_versions(&self) -> Vec<&str> {
        self.versions.iter().map(|v| v.version.as_str()).collect()
    }

    pub fn is_known(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v.version == version)
    }

    /// The version whose schema head is `revision`. Several versions can share one schema
    /// (2.10.3 and 2.11.0): then `stated` (MWAA_VERSION) picks among them, else the lowest.
    pub fn version_of_revision(&self, revision: &str, stated: Option<&str>) -> Option<&str> {
        let candidates: Vec<&str> = self
            .versions
            .iter()
            .filter(|v| v.alembic_revision.as_deref() == Some(revision))
            .map(|v| v.version.as_str())
            .collect();
        stated
            .and_then(|s| candidates.iter().find(|c| **c == s).copied())
            .or_else(|| candidates.into_iter().min_by(|a, b| compare_versions(a, b)))
    }

    /// Why a database whose alembic head is `revision` cannot be backed up, and what to do.
    /// A revision is an opaque hash, so an unknown one cannot be placed among the known ones:
    /// the likely cause is an Airflow newer than this build of mwaa-dr, whose schema no
    /// built-in catalog describes.
    pub fn unknown_revision(&self, revision: &str) -> String {
        let newest = self
            .versions
            .iter()
            .map(|v| v.version.as_str())
            .max_by(|a, b| compare_versions(a, b))
            .unwrap_or("none");
        format!(
            "alembic revision {revision} is not the schema head of any Airflow version this mwaa-dr supports ({}; newest {newest}). \
             If the environment runs a newer Airflow, use a release of mwaa-dr that supports it; \
             if the database is not fully migrated, run `airflow db migrate` with the environment's Airflow. \
             --airflow-version forces a version only for a database whose schema is exactly that version's",
            self.known_versions().join(", ")
        )
    }

    /// Whether two versions share one schema (then either restores into the other).
    pub fn same_schema(&self, a: &str, b: &str) -> bool {
        let revision = |v: &str| {
            self.versions
                .iter()
                .find(|k| k.version == v)
                .and_then(|k| k.alembic_revision.clone())
        };
        a == b || revision(a).is_some_and(|r| Some(r) == revision(b))
    }
}

/// `mwaa-dr --version`: the program's version and the Airflow versions it supports.
pub fn long_version() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{}\nsupported Airflow versions: {}",
            env!("CARGO_PKG_VERSION"),
            VersionTable::builtin().known_versions().join(", ")
        )
    });
    &TEXT
}

/// Compares dotted version strings numerically (`2.10.3` > `2.9.2`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a).cmp(&parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_parses_and_maps_revisions() {
        let table = VersionTable::builtin();
        assert!(table.is_known("2.4.3"));
        assert!(table.is_known("2.10.3"));
        assert!(!table.is_known("9.9.9"));
        assert_eq!(
            table.version_of_revision("5f2621c13b39", None),
            Some("2.10.3")
        );
        assert_eq!(
            table.version_of_revision("5f2621c13b39", Some("2.11.0")),
            Some("2.11.0")
        );
        assert_eq!(
            table.version_of_revision("5f2621c13b39", Some("2.8.1")),
            Some("2.10.3")
        );
        assert_eq!(
            table.version_of_revision("e07f49787c9d", None),
            Some("2.4.3")
        );
        assert_eq!(table.version_of_revision("000000000000", None), None);
        assert!(table.same_schema("2.11.0", "2.10.3"));
        assert!(!table.same_schema("2.10.1", "2.10.3"));
    }

    #[test]
    fn an_unknown_revision_is_named_with_what_to_do() {
        let table = VersionTable::builtin();
        let message = table.unknown_revision("ffffffffffff");
        assert!(message.contains("ffffffffffff"), "{message}");
        assert!(message.contains("newest 3.3.1"), "{message}");
        assert!(
            message.contains("use a release of mwaa-dr that supports it"),
            "{message}"
        );
        assert!(message.contains("airflow db migrate"), "{message}");
        for version in table.known_versions() {
            assert!(message.contains(version), "{version} not listed: {message}");
        }
    }

    #[test]
    fn the_long_version_lists_every_supported_airflow() {
        let text = long_version();
        assert!(text.starts_with(env!("CARGO_PKG_VERSION")), "{text}");
        assert!(
            text.contains("2.4.3, 2.5.1") && text.contains("3.0.6, 3.2.1, 3.3.1"),
            "{text}"
        );
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("2.10.3", "2.9.2"), Ordering::Greater);
        assert_eq!(compare_versions("2.4.3", "2.4.3"), Ordering::Equal);
        assert_eq!(compare_versions("2.8.1", "3.0.6"), Ordering::Less);
    }
}
