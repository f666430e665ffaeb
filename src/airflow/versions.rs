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
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("2.10.3", "2.9.2"), Ordering::Greater);
        assert_eq!(compare_versions("2.4.3", "2.4.3"), Ordering::Equal);
        assert_eq!(compare_versions("2.8.1", "3.0.6"), Ordering::Less);
    }
}
