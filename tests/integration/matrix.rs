//! The fault matrix: every run of backup, restore, cleanup and prune stopped at each of its
//! failpoints by kill -9, SIGTERM, SIGINT or an injected failure; the database connection
//! killed under a restore; corrupted objects and manifests; concurrent runs. Each trial
//! checks the invariants (nothing lost, nothing partial visible, no lock or orphan left
//! after the grace period, an exit code from the documented table, a rerun that succeeds)
//! and becomes a row of `docs/RELIABILITY.md`, which `scripts/fault-matrix.sh` regenerates
//! (`MWAA_DR_RELIABILITY_OUT`). In the suite it runs on the sample metadata and fails on any
//! failing trial.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{mwaa_dr, run};
use crate::pg::{Bench, connect, whole_db_digest};

const VERSION: &str = "2.10.3";
const GRACE: Duration = Duration::from_secs(25);

/// How a trial ends a run at a failpoint.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill,
    Term,
    Int,
    /// The failpoint fails the operation with a transient error.
    Error,
}

impl Stop {
    const ALL: [Stop; 4] = [Stop::Kill, Stop::Term, Stop::Int, Stop::Error];

    fn label(self) -> &'static str {
        match self {
            Stop::Kill => "kill -9",
            Stop::Term => "SIGTERM",
            Stop::Int => "SIGINT",
            Stop::Error => "injected error",
        }
    }

    /// The exit codes the documented table allows for this stop (`-1`: killed by a signal).
    fn expected(self) -> &'static [i32] {
        match self {
            Stop::Kill => &[-1],
            Stop::Term | Stop::Int => &[130],
            Stop::Error => &[1],
        }
    }
}

/// One trial's row.
struct Trial {
    command: String,
    fault: String,
    exit: i32,
    state: String,
    leftovers: String,
    rerun: String,
    failures: Vec<String>,
}

impl Trial {
    fn new(command: &str, fault: String) -> Trial {
        Trial {
            command: command.into(),
            fault,
            exit: 0,
            state: String::new(),
            leftovers: String::new(),
            rerun: String::new(),
            failures: Vec::new(),
        }
    }

    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn fresh_db(bench: &Bench, sample: bool) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    bench.airflow_db(&format!("mx{n}"), VERSION, sample)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The binary in the background, stderr read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

fn spawn(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Running {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("mwaa-dr"));
    cmd.env_clear().current_dir(dir);
    for keep in ["PATH", "HOME"] {
        if let Ok(value) = std::env::var(keep) {
            cmd.env(keep, value);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Running {
        child,
        lines,
        reader,
    }
}

/// Runs `args` armed at `point`, stops it there with `stop`; returns (exit code, stderr,
/// whether the point was reached).
fn stop_at(dir: &Path, point: &str, stop: Stop, args: &[&str]) -> (i32, String, bool) {
    let armed = match stop {
        Stop::Error => format!("{point}=error"),
        _ => point.to_string(),
    };
    let mut running = spawn(dir, &[("MWAA_DR_TEST_FAILPOINT", &armed)], args);
    let marker = format!("failpoint {point} reached");
    let mut stderr = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reached = false;
    while Instant::now() < deadline {
        match running.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                reached |= line.contains(&marker);
                stderr.push_str(&line);
                stderr.push('\n');
                if reached {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if matches!(running.child.try_wait(), Ok(Some(_))) {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if reached {
        let signal = match stop {
            Stop::Kill => Some("-KILL"),
            Stop::Term => Some("-TERM"),
            Stop::Int => Some("-INT"),
            Stop::Error => None,
        };
        if let Some(signal) = signal {
            let _ = std::process::Command::new("kill")
                .args([signal, &running.child.id().to_string()])
                .status();
        }
    }
    let started = Instant::now();
    let code = loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            break status.code().unwrap_or(-1);
        }
        if started.elapsed() > GRACE {
            let _ = running.child.kill();
            let _ = running.child.wait();
            stderr.push_str("(did not stop within the grace period)\n");
            break -2;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = running.reader.join();
    for line in running.lines.try_iter() {
        stderr.push_str(&line);
        stderr.push('\n');
    }
    (code, stderr, reached)
}

fn store_args<'a>(store: &'a Path, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--store", store.to_str().expect("utf-8 path")];
    args.extend_from_slice(rest);
    args
}

/// The backups `list` shows, each verified.
fn listed(dir: &Path, store: &Path) -> Result<Vec<String>, String> {
    let out = run(mwaa_dr(dir)
        .arg("--store")
        .arg(store)
        .args(["--output", "json", "list"]));
    if out.code != 0 {
        return Err(format!("list exit {}: {}", out.code, out.stderr));
    }
    let doc: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
    let ids: Vec<String> = doc
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["backup_id"].as_str().map(str::to_string))
        .collect();
    for id in &ids {
        let v = run(mwaa_dr(dir)
            .arg("--store")
            .arg(store)
            .args(["verify", id]));
        if v.code != 0 {
            return Err(format!("listed backup {id} does not verify: {}", v.stderr));
        }
    }
    Ok(ids)
}

/// Objects of the store outside complete backups, and lock files.
fn leftovers(store: &Path, complete: &[String]) -> (Vec<String>, Vec<String>) {
    let mut orphans = Vec::new();
    let mut locks = Vec::new();
    for path in files_under(store) {
        let rel = path
            .strip_prefix(store)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if rel.starts_with("locks/") || rel.starts_with("failover-locks/") {
            locks.push(rel);
        } else if let Some(rest) = rel.strip_prefix("backups/") {
            let id = rest.split('/').next().unwrap_or_default();
            if !complete.iter().any(|c| c == id) {
                orphans.push(rel);
            }
        }
    }
    (orphans, locks)
}

/// The common end of a trial on the store: what is listed verifies, and (unless killed)
/// no orphan and no lock is left.
fn check_store(trial: &mut Trial, dir: &Path, store: &Path, stop: Stop) -> Vec<String> {
    let ids = match listed(dir, store) {
        Ok(ids) => ids,
        Err(e) => {
            trial.check(false, e);
            Vec::new()
        }
    };
    let (orphans, locks) = leftovers(store, &ids);
    trial.leftovers = match (orphans.len(), locks.len()) {
        (0, 0) => "none".into(),
        (o, l) => format!("{o} unlisted objects, {l} stale locks"),
    };
    if !matches!(stop, Stop::Kill) {
        trial.check(orphans.is_empty(), format!("orphans left: {orphans:?}"));
        trial.check(locks.is_empty(), format!("locks left: {locks:?}"));
    }
    ids
}

fn check_exit(trial: &mut Trial, stop: Stop, code: i32, stderr: &str, reached: bool) {
    trial.exit = code;
    trial.check(reached, format!("failpoint not reached: {stderr}"));
    trial.check(
        stop.expected().contains(&code),
        format!("exit {code}, expected {:?}: {stderr}", stop.expected()),
    );
    trial.check(code != 101, "panic");
}

async fn counts(url: &str) -> Vec<(String, i64)> {
    whole_db_digest(url)
        .await
        .into_iter()
        .map(|(t, n, _)| (t, n))
        .collect()
}

async fn backup_trials(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    let points = [
        "backup.snapshot",
        "backup.locked",
        "backup.table_written",
        "backup.exported",
        "backup.committed",
    ];
    for point in points {
        for stop in Stop::ALL {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = dir.path().join("store");
            let before = whole_db_digest(src).await;
            let mut trial = Trial::new("backup", format!("{} at {point}", stop.label()));
            let (code, stderr, reached) = stop_at(
                dir.path(),
                point,
                stop,
                &store_args(&store, &["backup", "--jobs", "1", "--db", src]),
            );
            check_exit(&mut trial, stop, code, &stderr, reached);
            let ids = check_store(&mut trial, dir.path(), &store, stop);
            trial.state = match ids.len() {
                0 => "no backup listed".into(),
                n => format!("{n} complete backup listed"),
            };
            trial.check(whole_db_digest(src).await == before, "source changed");
            let again = run(mwaa_dr(dir.path())
                .arg("--store")
                .arg(&store)
                .args(["backup", "--db", src]));
            trial.check(again.code == 0, format!("rerun: {}", again.stderr));
            trial.rerun = if again.code == 0 { "ok" } else { "FAILED" }.into();
            trials.push(trial);
        }
    }
    let _ = bench;
}

/// A store with one backup of `src`.
fn store_with_backup(dir: &Path, src: &str) -> PathBuf {
    let store = dir.join("store");
    let out = run(mwaa_dr(dir)
        .arg("--store")
        .arg(&store)
        .args(["backup", "--db", src]));
    assert_eq!(out.code, 0, "backup: {}", out.stderr);
    store
}

async fn restore_trials(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_backup(dir.path(), src);
    let reference = fresh_db(bench, false);
    let out = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["--yes", "restore", "--clean", "--db", &reference]));
    assert_eq!(out.code, 0, "reference restore: {}", out.stderr);
    let full = whole_db_digest(&reference).await;
    let full_counts = counts(&reference).await;
    let points = [
        "restore.locked",
        "restore.verified",
        "restore.cleaned",
        "restore.table_loaded",
        "restore.before_commit",
        "restore.committed",
    ];
    for point in points {
        for stop in Stop::ALL {
            let dst = fresh_db(bench, false);
            let before = whole_db_digest(&dst).await;
            let mut trial = Trial::new("restore", format!("{} at {point}", stop.label()));
            let (code, stderr, reached) = stop_at(
                dir.path(),
                point,
                stop,
                &store_args(&store, &["--yes", "restore", "--clean", "--db", &dst]),
            );
            check_exit(&mut trial, stop, code, &stderr, reached);
            let after = whole_db_digest(&dst).await;
            trial.state = if after == before {
                "target unchanged".into()
            } else if after == full {
                "restore complete".into()
            } else {
                "PARTIAL".into()
            };
            trial.check(after == before || after == full, "partial restore visible");
            check_store(&mut trial, dir.path(), &store, stop);
            trial.check(sessions_left(&dst).await == 0, "server session left");
            let again = run(mwaa_dr(dir.path())
                .arg("--store")
                .arg(&store)
                .args(["--yes", "restore", "--clean", "--db", &dst]));
            let complete = again.code == 0 && counts(&dst).await == full_counts;
            trial.check(complete, format!("rerun: {}", again.stderr));
            trial.rerun = if complete { "ok" } else { "FAILED" }.into();
            trials.push(trial);
        }
    }
}

async fn sessions_left(url: &str) -> i64 {
    // A killed client's session ends when the server notices; give it the grace period.
    let deadline = Instant::now() + GRACE;
    loop {
        let mut conn = connect(url).await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mwaa-dr' AND datname = current_database()",
        )
        .fetch_one(&mut conn)
        .await
        .expect("activity");
        if n == 0 || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn cleanup_trials(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_backup(dir.path(), src);
    let restored = |db: &str| {
        let out = run(mwaa_dr(dir.path())
            .arg("--store")
            .arg(&store)
            .args(["--yes", "restore", "--db", db]));
        assert_eq!(out.code, 0, "restore: {}", out.stderr);
    };
    let reference = fresh_db(bench, false);
    restored(&reference);
    let out = run(mwaa_dr(dir.path()).args(["--yes", "cleanup", "--db", &reference]));
    assert_eq!(out.code, 0, "reference cleanup: {}", out.stderr);
    let cleaned = whole_db_digest(&reference).await;
    let points = [
        "cleanup.connected",
        "cleanup.begun",
        "cleanup.table_deleted",
        "cleanup.before_commit",
        "cleanup.committed",
    ];
    for point in points {
        for stop in Stop::ALL {
            let dst = fresh_db(bench, false);
            restored(&dst);
            let before = whole_db_digest(&dst).await;
            let mut trial = Trial::new("cleanup", format!("{} at {point}", stop.label()));
            let (code, stderr, reached) =
                stop_at(dir.path(), point, stop, &["--yes", "cleanup", "--db", &dst]);
            check_exit(&mut trial, stop, code, &stderr, reached);
            let after = whole_db_digest(&dst).await;
            trial.state = if after == before {
                "target unchanged".into()
            } else if after == cleaned {
                "cleanup complete".into()
            } else {
                "PARTIAL".into()
            };
            trial.check(after == before || after == cleaned, "partial cleanup visible");
            trial.check(sessions_left(&dst).await == 0, "server session left");
            trial.leftovers = "none".into();
            let again = run(mwaa_dr(dir.path()).args(["--yes", "cleanup", "--db", &dst]));
            let ok = again.code == 0 && whole_db_digest(&dst).await == cleaned;
            trial.check(ok, format!("rerun: {}", again.stderr));
            trial.rerun = if ok { "ok" } else { "FAILED" }.into();
            trials.push(trial);
        }
    }
}

async fn prune_trials(src: &str, trials: &mut Vec<Trial>) {
    let points = [
        "prune.locked",
        "prune.manifest_deleted",
        "prune.backup_deleted",
        "prune.done",
    ];
    for point in points {
        for stop in Stop::ALL {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = store_with_backup(dir.path(), src);
            store_with_backup(dir.path(), src);
            store_with_backup(dir.path(), src);
            let before = listed(dir.path(), &store).unwrap_or_default();
            let newest = before.last().cloned().unwrap_or_default();
            let mut trial = Trial::new("prune", format!("{} at {point}", stop.label()));
            let (code, stderr, reached) = stop_at(
                dir.path(),
                point,
                stop,
                &store_args(&store, &["prune", "--keep-last", "1"]),
            );
            check_exit(&mut trial, stop, code, &stderr, reached);
            let ids = check_store(&mut trial, dir.path(), &store, stop);
            trial.check(
                ids.iter().all(|id| before.contains(id)) && ids.contains(&newest),
                format!("listed after: {ids:?}, before: {before:?}"),
            );
            trial.state = format!("{} of {} backups listed", ids.len(), before.len());
            let again = run(mwaa_dr(dir.path())
                .arg("--store")
                .arg(&store)
                .args(["prune", "--keep-last", "1"]));
            let after = listed(dir.path(), &store).unwrap_or_default();
            let ok = again.code == 0 && after == vec![newest.clone()];
            trial.check(ok, format!("rerun: {} {after:?}", again.stderr));
            trial.rerun = if ok { "ok" } else { "FAILED" }.into();
            trials.push(trial);
        }
    }
}
