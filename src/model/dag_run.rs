//! The DR DAG run executing this process: `MWAA_DR_DAG_RUN=<dag_id>/<run_id>`, set by the
//! rendered DAGs for their task.

/// The variable the DR DAGs set for their task.
pub const DAG_RUN_VARIABLE: &str = "MWAA_DR_DAG_RUN";

/// What `MWAA_DR_DAG_RUN` accepts.
pub const ACCEPTED_DAG_RUN: &str = "<dag_id>/<run_id>, both non-empty (set by the DR DAG's task)";

/// One DAG run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagRunRef {
    pub dag_id: String,
    pub run_id: String,
}

impl DagRunRef {
    /// `<dag_id>/<run_id>`: a DAG id holds no `/`, so the first one splits them (a run id
    /// may hold more). The error says what is wrong; the caller names the variable.
    pub fn parse(value: &str) -> Result<DagRunRef, String> {
        match value.split_once('/') {
            Some((dag, run)) if !dag.is_empty() && !run.is_empty() => Ok(DagRunRef {
                dag_id: dag.to_string(),
                run_id: run.to_string(),
            }),
            _ => Err("not a DAG run".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_slash_splits_dag_and_run() {
        let run = DagRunRef::parse("restore_metadata/manual__a/b").expect("parses");
        assert_eq!(run.dag_id, "restore_metadata");
        assert_eq!(run.run_id, "manual__a/b");
        for bad in ["no-slash", "/run", "dag/", ""] {
            assert!(DagRunRef::parse(bad).is_err(), "{bad}");
        }
    }
}
