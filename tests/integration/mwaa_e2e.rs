//! The MWAA path end to end on real Airflow (`scripts/mwaa-e2e.sh`): the stand-in forwards
//! InvokeRestApi to a real Airflow REST API with its scheduler running; `mwaa-dr backup` and
//! `mwaa-dr failover` (Warm-Standby, then Backup-Restore into a created environment mapped to
//! a third Airflow) run with no database URL, and Airflow's own CLI on the secondary shows the
//! primary's runs, task states, variables, connection, pool and paused flags.
//!
//! Before the Warm-Standby failover, the drill of the unattended recovery: the workflow
//! `deploy --print-definition` generates runs on moto's Step Functions, fired by its
//! health-check schedule with `simulate_dr`; the restore DAG runs in the standby's Airflow and
//! answers the task token; `failover --via-step-functions --execution ARN` follows the
//! execution the schedule started and its timeline shows every step ok; the schedule is
//! disabled, SNS receives the outcome and the standby's CLI shows the primary's history
//! (`scripts/lib/sfn-drill.py`).
//!
//! Needs the bench PostgreSQL and moto (the test fails without them), Python 3 and the cached
//! Airflow venvs. Three Airflows, one at a time; the script runs one at a time per machine.

use std::path::Path;
use std::process::Command;

use crate::common::bench_server;

fn mwaa_e2e(version: &str) {
    let Some(pg_url) = bench_server("MWAA_DR_TEST_PG_URL") else {
        return;
    };
    let Some(moto) = bench_server("MWAA_DR_TEST_MOTO_URL") else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mwaa-e2e.sh");
    let out = Command::new(&script)
        .arg(version)
        .env("MWAA_DR_BIN", env!("CARGO_BIN_EXE_mwaa-dr"))
        .env("MWAA_DR_TEST_PG_URL", pg_url)
        .env("MWAA_DR_TEST_MOTO_URL", moto)
        .output()
        .expect("scripts/mwaa-e2e.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/mwaa-e2e.sh {version} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("recovery time: Warm-Standby"),
        "no summary:\n{stdout}"
    );
    assert!(
        stdout.contains("execution SUCCEEDED through")
            && stdout.contains("followed by mwaa-dr")
            && stdout.contains("schedule DISABLED; SNS: mwaa-dr failover to"),
        "no drill in the summary:\n{stdout}"
    );
    let summary = stdout
        .find("==> Summary")
        .map_or(stdout.as_ref(), |at| &stdout[at..]);
    eprintln!("{summary}");
}

#[test]
fn mwaa_e2e_airflow_2_10_3() {
    mwaa_e2e("2.10.3");
}

#[test]
fn mwaa_e2e_airflow_3_0_6() {
    mwaa_e2e("3.0.6");
}
