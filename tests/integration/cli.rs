//! The command surface: `--help` of every subcommand, usage errors, unavailable commands.

use crate::common::{mwaa_dr, run};

const SUBCOMMANDS: &[&str] = &[
    "backup",
    "restore",
    "cleanup",
    "health-check",
    "failover",
    "list",
    "verify",
    "prune",
    "config",
];

#[test]
fn help_of_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let top = run(mwaa_dr(dir.path()).arg("--help"));
    assert_eq!(top.code, 0, "{}", top.stderr);
    insta::assert_snapshot!("help", top.stdout);
    for sub in SUBCOMMANDS {
        let out = run(mwaa_dr(dir.path()).args([sub, "--help"]));
        assert_eq!(out.code, 0, "{sub}: {}", out.stderr);
        insta::assert_snapshot!(format!("help-{sub}"), out.stdout);
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(mwaa_dr(dir.path()).args(["backup", "--no-such-flag"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--no-such-flag"), "{}", out.stderr);
}

#[test]
fn usage_errors_are_json_with_json_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(mwaa_dr(dir.path()).args(["--output", "json", "prune"]));
    assert_eq!(out.code, 2);
    let doc: serde_json::Value = serde_json::from_str(&out.stderr).expect("JSON error on stderr");
    assert_eq!(doc["error"]["kind"], "usage");
    assert_eq!(doc["error"]["exit_code"], 2);
    assert!(out.stdout.is_empty());
}
