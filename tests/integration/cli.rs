//! The command surface: `--help` of every subcommand, usage errors, unavailable commands.

use crate::common::{mwaa_dr, run};

/// Every command's path, nested ones included; each gets a `--help` snapshot.
const COMMANDS: &[&[&str]] = &[
    &["backup"],
    &["restore"],
    &["cleanup"],
    &["health-check"],
    &["failover"],
    &["list"],
    &["verify"],
    &["prune"],
    &["config"],
    &["dags"],
    &["dags", "render"],
    &["deploy"],
    &["undeploy"],
];

/// The subcommands a `--help` page lists under "Commands:", without `help`.
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn help_of_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let top = run(mwaa_dr(dir.path()).arg("--help"));
    assert_eq!(top.code, 0, "{}", top.stderr);
    insta::assert_snapshot!("help", top.stdout);
    for path in COMMANDS {
        let out = run(mwaa_dr(dir.path()).args(path.iter().copied().chain(["--help"])));
        assert_eq!(out.code, 0, "{path:?}: {}", out.stderr);
        insta::assert_snapshot!(format!("help-{}", path.join("-")), out.stdout);
        for sub in listed_commands(&out.stdout) {
            let nested: Vec<&str> = path.iter().copied().chain([sub.as_str()]).collect();
            assert!(
                COMMANDS.contains(&nested.as_slice()),
                "{nested:?} has no help snapshot: add it to COMMANDS"
            );
        }
    }
    for sub in listed_commands(&top.stdout) {
        assert!(
            COMMANDS.contains(&[sub.as_str()].as_slice()),
            "{sub} has no help snapshot: add it to COMMANDS"
        );
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
