//! Real Apache Airflow end to end (`scripts/airflow-e2e.sh`): Airflow itself produces the
//! metadata, the binary under test backs it up and restores it into a freshly migrated
//! database, and the result is checked table by table, with Airflow's CLI, and by running
//! Airflow's scheduler on the restored database.
//!
//! Needs the bench PostgreSQL (the test fails without it), Python 3 and
//! the cached Airflow venvs (`scripts/airflow-venv.sh` builds a missing one from PyPI). One
//! run takes about two minutes; the script runs one at a time per machine.

use std::path::Path;
use std::process::Command;

use crate::common::bench_server;

fn airflow_e2e(version: &str) {
    let Some(pg_url) = bench_server("MWAA_DR_TEST_PG_URL") else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/airflow-e2e.sh");
    let out = Command::new(&script)
        .arg(version)
        .env("MWAA_DR_BIN", env!("CARGO_BIN_EXE_mwaa-dr"))
        .env("MWAA_DR_TEST_PG_URL", pg_url)
        .output()
        .expect("scripts/airflow-e2e.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/airflow-e2e.sh {version} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // The summary: what was checked and how long each step took.
    let summary = stdout
        .find("==> Summary")
        .map_or(stdout.as_ref(), |at| &stdout[at..]);
    eprintln!("{summary}");
}

#[test]
fn airflow_2_4_3_end_to_end() {
    airflow_e2e("2.4.3");
}

#[test]
fn airflow_2_10_3_end_to_end() {
    airflow_e2e("2.10.3");
}

#[test]
fn airflow_3_0_6_end_to_end() {
    airflow_e2e("3.0.6");
}

/// The newest Airflow MWAA ships; 3.2.1 shares its DAG-file API and is covered by the round
/// trips and the 3.x upgrade path.
#[test]
fn airflow_3_3_1_end_to_end() {
    airflow_e2e("3.3.1");
}
