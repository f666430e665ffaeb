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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{files_under, mwaa_dr, run, silent_server};
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

/// The binary in the background, stderr read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

impl Running {
    /// Waits (up to a minute) until the run says it reached `point`.
    fn wait_for(&self, point: &str) -> bool {
        let marker = format!("failpoint {point} reached");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200))
                && line.contains(&marker)
            {
                return true;
            }
        }
        false
    }

    /// Sends SIGTERM and returns the exit code.
    fn terminate(mut self) -> i32 {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let code = self
            .child
            .wait()
            .map(|s| s.code().unwrap_or(-1))
            .unwrap_or(-1);
        let _ = self.reader.join();
        code
    }
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
    stop_at_env(dir, &[], point, stop, args)
}

fn stop_at_env(
    dir: &Path,
    env: &[(&str, &str)],
    point: &str,
    stop: Stop,
    args: &[&str],
) -> (i32, String, bool) {
    let armed = match stop {
        Stop::Error => format!("{point}=error"),
        _ => point.to_string(),
    };
    let mut env = env.to_vec();
    env.push(("MWAA_DR_TEST_FAILPOINT", &armed));
    let mut running = spawn(dir, &env, args);
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
        let v = run(mwaa_dr(dir).arg("--store").arg(store).args(["verify", id]));
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

/// The common end of a trial on the store: what is listed verifies, no lock is left (a
/// killed run's lock is removed by the next run, which `list` is not: only counted), and,
/// unless the run was killed, no unlisted object.
fn check_store(trial: &mut Trial, dir: &Path, store: &Path, stop: Stop) -> Vec<String> {
    check_store_allowing(trial, dir, store, matches!(stop, Stop::Kill))
}

fn check_store_allowing(
    trial: &mut Trial,
    dir: &Path,
    store: &Path,
    orphans_allowed: bool,
) -> Vec<String> {
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
    if !orphans_allowed {
        trial.check(orphans.is_empty(), format!("orphans left: {orphans:?}"));
    }
    // A kill -9 leaves its lock; the next run that takes a lock removes it.
    let _ = run(mwaa_dr(dir)
        .arg("--store")
        .arg(store)
        .args(["prune", "--keep-last", "1000"]));
    let (_, locks_after_next) = leftovers(store, &ids);
    trial.check(
        locks_after_next.is_empty(),
        format!("locks left after the next run: {locks_after_next:?} (before it: {locks:?})"),
    );
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
        "restore.shadow_loaded",
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
            // After a committed restore the target runs the restored scheduler job, which a
            // second restore keeps as the target's own (and renumbers the backup's): `job`
            // then holds one row more, by design.
            let committed = after == full;
            let comparable = |c: Vec<(String, i64)>| -> Vec<(String, i64)> {
                c.into_iter()
                    .filter(|(t, _)| !(committed && t == "job"))
                    .collect()
            };
            let rerun_counts = comparable(counts(&dst).await);
            let full_counts = comparable(full_counts.clone());
            let complete = again.code == 0 && rerun_counts == full_counts;
            trial.check(
                complete,
                format!(
                    "rerun exit {}: {} counts differ: {:?}",
                    again.code,
                    again.stderr,
                    rerun_counts
                        .iter()
                        .zip(&full_counts)
                        .filter(|(a, b)| a != b)
                        .collect::<Vec<_>>()
                ),
            );
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
            trial.check(
                after == before || after == cleaned,
                "partial cleanup visible",
            );
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
        "prune.scanned",
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
            let newest = before.iter().max().cloned().unwrap_or_default();
            let mut trial = Trial::new("prune", format!("{} at {point}", stop.label()));
            let (code, stderr, reached) = stop_at(
                dir.path(),
                point,
                stop,
                &store_args(&store, &["prune", "--keep-last", "1"]),
            );
            check_exit(&mut trial, stop, code, &stderr, reached);
            // Failing between a manifest and its objects leaves the objects unlisted; a
            // later prune collects them once old (`--incomplete-after`).
            let ids = check_store_allowing(
                &mut trial,
                dir.path(),
                &store,
                matches!(stop, Stop::Kill)
                    || (matches!(stop, Stop::Error) && point == "prune.manifest_deleted"),
            );
            trial.check(
                ids.iter().all(|id| before.contains(id)) && ids.contains(&newest),
                format!("listed after: {ids:?}, before: {before:?}"),
            );
            trial.state = format!("{} of {} backups listed", ids.len(), before.len());
            let again = run(mwaa_dr(dir.path()).arg("--store").arg(&store).args([
                "prune",
                "--keep-last",
                "1",
            ]));
            let after = listed(dir.path(), &store).unwrap_or_default();
            let ok = again.code == 0 && after == vec![newest.clone()];
            trial.check(ok, format!("rerun: {} {after:?}", again.stderr));
            trial.rerun = if ok { "ok" } else { "FAILED" }.into();
            trials.push(trial);
        }
    }
}

/// Runs `args` to the end (no failpoint), with `env`.
fn run_env(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> crate::common::Run {
    let mut cmd = mwaa_dr(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd.args(args))
}

async fn store_fault_trials(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    // Backup: the k-th object creation fails (the first is the lock file).
    for k in 1..=4 {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let fault = format!("create#{k}");
        let mut trial = Trial::new("backup", format!("store fails call {k} of create"));
        let out = run_env(
            dir.path(),
            &[("MWAA_DR_TEST_STORE_FAULT", &fault)],
            &store_args(&store, &["backup", "--jobs", "1", "--db", src]),
        );
        trial.exit = out.code;
        trial.check(out.code == 1, format!("exit {}: {}", out.code, out.stderr));
        let ids = check_store(&mut trial, dir.path(), &store, Stop::Error);
        trial.state = format!("{} backups listed", ids.len());
        let again = run(mwaa_dr(dir.path())
            .arg("--store")
            .arg(&store)
            .args(["backup", "--db", src]));
        trial.check(again.code == 0, format!("rerun: {}", again.stderr));
        trial.rerun = if again.code == 0 { "ok" } else { "FAILED" }.into();
        trials.push(trial);
    }
    // Restore: the k-th object read fails.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_backup(dir.path(), src);
    for k in 1..=4 {
        let dst = fresh_db(bench, false);
        let before = whole_db_digest(&dst).await;
        let fault = format!("open#{k}");
        let mut trial = Trial::new("restore", format!("store fails call {k} of open"));
        let out = run_env(
            dir.path(),
            &[("MWAA_DR_TEST_STORE_FAULT", &fault)],
            &store_args(&store, &["--yes", "restore", "--clean", "--db", &dst]),
        );
        trial.exit = out.code;
        trial.check(out.code == 1, format!("exit {}: {}", out.code, out.stderr));
        restore_failed_cleanly(&mut trial, dir.path(), &store, &dst, &before).await;
        trials.push(trial);
    }
    // Prune: the k-th deletion fails.
    for k in 1..=4 {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with_backup(dir.path(), src);
        store_with_backup(dir.path(), src);
        store_with_backup(dir.path(), src);
        let before = listed(dir.path(), &store).unwrap_or_default();
        let fault = format!("delete#{k}");
        let mut trial = Trial::new("prune", format!("store fails call {k} of delete"));
        let out = run_env(
            dir.path(),
            &[("MWAA_DR_TEST_STORE_FAULT", &fault)],
            &store_args(&store, &["prune", "--keep-last", "1"]),
        );
        trial.exit = out.code;
        trial.check(out.code == 1, format!("exit {}: {}", out.code, out.stderr));
        let ids = listed(dir.path(), &store).unwrap_or_default();
        trial.check(
            ids.iter().all(|id| before.contains(id)),
            "a backup appeared",
        );
        trial.state = format!("{} of {} backups listed", ids.len(), before.len());
        // A failed deletion may leave the objects of a backup whose manifest went first:
        // invisible, and collected by `prune` once old (`--incomplete-after`).
        let (orphans, locks) = leftovers(&store, &ids);
        trial.leftovers = format!("{} unlisted objects, {} locks", orphans.len(), locks.len());
        trial.check(locks.is_empty(), "lock left");
        let again =
            run(mwaa_dr(dir.path())
                .arg("--store")
                .arg(&store)
                .args(["prune", "--keep-last", "1"]));
        let ok = again.code == 0 && listed(dir.path(), &store).unwrap_or_default().len() == 1;
        trial.check(ok, format!("rerun: {}", again.stderr));
        trial.rerun = if ok { "ok" } else { "FAILED" }.into();
        trials.push(trial);
    }
}

/// The end of a restore that failed: the target as it was, the store clean, and the same
/// restore then succeeding.
async fn restore_failed_cleanly(
    trial: &mut Trial,
    dir: &Path,
    store: &Path,
    dst: &str,
    before: &[(String, i64, String)],
) {
    let unchanged = whole_db_digest(dst).await == before;
    trial.state = if unchanged {
        "target unchanged"
    } else {
        "CHANGED"
    }
    .into();
    trial.check(unchanged, "target changed");
    check_store(trial, dir, store, Stop::Error);
    let again = run(mwaa_dr(dir)
        .arg("--store")
        .arg(store)
        .args(["--yes", "restore", "--clean", "--db", dst]));
    trial.check(again.code == 0, format!("rerun: {}", again.stderr));
    trial.rerun = if again.code == 0 { "ok" } else { "FAILED" }.into();
}

/// Every way to damage a stored backup: restore and verify refuse it, the target unchanged.
async fn corruption_trials(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    type Damage = fn(&Path);
    fn object(backup: &Path) -> PathBuf {
        backup.join("dag_run.csv.zst")
    }
    fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = std::fs::read(path).expect("read");
        f(&mut bytes);
        std::fs::write(path, bytes).expect("write");
    }
    let damages: [(&str, Damage); 8] = [
        ("one byte of an object flipped", |b| {
            rewrite(&object(b), |x| {
                let i = x.len() / 2;
                x[i] ^= 0x55;
            })
        }),
        ("an object truncated", |b| {
            rewrite(&object(b), |x| x.truncate(x.len() / 2))
        }),
        ("an object emptied", |b| rewrite(&object(b), Vec::clear)),
        ("an object deleted", |b| {
            std::fs::remove_file(object(b)).expect("rm");
        }),
        ("bytes appended to an object", |b| {
            rewrite(&object(b), |x| x.extend_from_slice(b"junk"))
        }),
        ("one byte of the manifest changed", |b| {
            rewrite(&b.join("manifest.json"), |x| {
                if let Some(i) = x.iter().position(|c| c.is_ascii_digit()) {
                    x[i] = if x[i] == b'9' { b'1' } else { x[i] + 1 };
                }
            })
        }),
        ("the manifest truncated", |b| {
            rewrite(&b.join("manifest.json"), |x| x.truncate(x.len() / 2))
        }),
        ("the manifest deleted", |b| {
            std::fs::remove_file(b.join("manifest.json")).expect("rm");
        }),
    ];
    for (name, damage) in damages {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with_backup(dir.path(), src);
        let id = listed(dir.path(), &store)
            .ok()
            .and_then(|ids| ids.first().cloned())
            .expect("a backup");
        damage(&store.join("backups").join(&id));
        let dst = fresh_db(bench, false);
        let before = whole_db_digest(&dst).await;
        let mut trial = Trial::new("restore", format!("corruption: {name}"));
        let out = run(mwaa_dr(dir.path())
            .arg("--store")
            .arg(&store)
            .args(["--yes", "restore", "--clean", "--db", &dst]));
        trial.exit = out.code;
        // A backup without a readable manifest does not exist (4); a damaged one is refused (1).
        trial.check(
            out.code == 1 || out.code == 4,
            format!("exit {}: {}", out.code, out.stderr),
        );
        let unchanged = whole_db_digest(&dst).await == before;
        trial.state = if unchanged {
            "target unchanged"
        } else {
            "CHANGED"
        }
        .into();
        trial.check(unchanged, "target changed");
        let verify = run(mwaa_dr(dir.path())
            .arg("--store")
            .arg(&store)
            .args(["verify", &id]));
        trial.check(verify.code != 0, "verify accepted the damaged backup");
        trial.leftovers = format!("verify exit {}", verify.code);
        let (_, locks) = leftovers(&store, &[]);
        trial.check(locks.is_empty(), "lock left");
        // The remedy: a new backup, which restores.
        store_with_backup(dir.path(), src);
        let again = run(mwaa_dr(dir.path())
            .arg("--store")
            .arg(&store)
            .args(["--yes", "restore", "--clean", "--db", &dst]));
        trial.check(
            again.code == 0,
            format!("restore of a new backup: {}", again.stderr),
        );
        trial.rerun = if again.code == 0 {
            "new backup restores"
        } else {
            "FAILED"
        }
        .into();
        trials.push(trial);
    }
}

/// A run held at its locked failpoint while a second command runs on the same store.
async fn concurrency_trials(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    let holders: [(&str, &str); 3] = [
        ("backup", "backup.locked"),
        ("restore", "restore.locked"),
        ("prune", "prune.locked"),
    ];
    for (first, point) in holders {
        for second in ["backup", "restore", "prune", "verify", "list"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = store_with_backup(dir.path(), src);
            store_with_backup(dir.path(), src);
            let dst = fresh_db(bench, false);
            let args_of = |command: &str| -> Vec<String> {
                let mut args = vec!["--store".to_string(), store.display().to_string()];
                let rest: Vec<&str> = match command {
                    "backup" => vec!["backup", "--db", src],
                    "restore" => vec!["--yes", "restore", "--clean", "--db", &dst],
                    "prune" => vec!["prune", "--keep-last", "5"],
                    "verify" => vec!["verify"],
                    _ => vec!["list"],
                };
                args.extend(rest.into_iter().map(str::to_string));
                args
            };
            let mut trial = Trial::new(
                &format!("{first} + {second}"),
                format!("{second} while {first} holds its lock"),
            );
            let first_args = args_of(first);
            let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
            let holder = spawn(
                dir.path(),
                &[("MWAA_DR_TEST_FAILPOINT", point)],
                &first_args,
            );
            let reached = holder.wait_for(point);
            trial.check(reached, "the first run never held its lock");
            let second_args = args_of(second);
            let second_args: Vec<&str> = second_args.iter().map(String::as_str).collect();
            let out = run(mwaa_dr(dir.path()).args(&second_args));
            let exclusive = first == "prune" || second == "prune";
            let takes_lock = !matches!(second, "verify" | "list");
            let expected = if exclusive && takes_lock { 5 } else { 0 };
            trial.exit = out.code;
            trial.check(
                out.code == expected,
                format!("exit {} (expected {expected}): {}", out.code, out.stderr),
            );
            let code = holder.terminate();
            trial.check(code == 130, format!("the first run exited {code}"));
            let ids = check_store(&mut trial, dir.path(), &store, Stop::Term);
            trial.state = format!(
                "second exit {}, first exit {code}, {} listed",
                out.code,
                ids.len()
            );
            trial.rerun = "n/a".into();
            trials.push(trial);
        }
    }
}

/// Holds the first run at `point` while `second` runs to the end; returns the second's
/// result, then the first's exit code after SIGTERM, and whether the first reached `point`.
fn held_pair(
    dir: &Path,
    env: &[(&str, &str)],
    first: &[&str],
    point: &str,
    second: &[&str],
) -> (crate::common::Run, i32, bool) {
    let mut armed = env.to_vec();
    armed.push(("MWAA_DR_TEST_FAILPOINT", point));
    let holder = spawn(dir, &armed, first);
    let reached = holder.wait_for(point);
    let out = run_env(dir, env, second);
    (out, holder.terminate(), reached)
}

/// Failover beside prune and restore on the same store, and a legacy restore beside prune:
/// a run that needs the store exclusively is refused (locked, 5) while another holds it;
/// shared holders run side by side; every stopped run's rerun finishes.
async fn command_pair_trials(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    // (first, where it is held, second, the second's expected exit)
    let failover_pairs: [(&str, &str, &str, i32); 4] = [
        ("prune", "prune.locked", "failover", 5),
        ("failover", "restore.locked", "prune", 5),
        ("failover", "restore.locked", "restore", 0),
        ("restore", "restore.locked", "failover", 0),
    ];
    for (first, point, second, expected) in failover_pairs {
        let Some(ws) = WarmStandby::new(bench, src).await else {
            return;
        };
        let env: Vec<(&str, &str)> = ws.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let other = fresh_db(bench, false);
        let args_of = |command: &str| -> Vec<&str> {
            match command {
                "prune" => store_args(&ws.store, &["prune", "--keep-last", "1"]),
                "restore" => {
                    store_args(&ws.store, &["--yes", "restore", "--clean", "--db", &other])
                }
                _ => store_args(&ws.store, &["--yes", "failover"]),
            }
        };
        let mut trial = Trial::new(
            &format!("{first} + {second}"),
            format!("{second} while {first} is held at {point}"),
        );
        let (out, code, reached) = held_pair(
            ws.dir.path(),
            &env,
            &args_of(first),
            point,
            &args_of(second),
        );
        trial.check(reached, format!("the {first} never reached {point}"));
        trial.exit = out.code;
        trial.check(
            out.code == expected,
            format!("exit {} (expected {expected}): {}", out.code, out.stderr),
        );
        trial.check(code == 130, format!("the {first} exited {code}"));
        trial.state = format!("second exit {}, first exit {code}", out.code);
        // The failover, resumed, finishes (one that ran beside a shared holder finished
        // already); the store keeps a verifiable backup.
        let finished_beside = second == "failover" && out.code == 0;
        let again = if finished_beside {
            out
        } else {
            run_env(ws.dir.path(), &env, &args_of("failover"))
        };
        let finished = again.code == 0
            && dag_runs(&ws.standby).await > 0
            && ws.aws.schedule_state(&ws.schedule).await == "DISABLED";
        trial.check(
            finished,
            format!("failover rerun exit {}: {}", again.code, again.stderr),
        );
        trial.rerun = match (finished, finished_beside) {
            (false, _) => "FAILED",
            (true, true) => "n/a (the failover finished)",
            (true, false) => "failover finished",
        }
        .into();
        check_store_allowing(&mut trial, ws.dir.path(), &ws.store, false);
        trial.check(sessions_left(&ws.standby).await == 0, "server session left");
        trials.push(trial);
    }
    // A legacy restore reads its store under a shared lock: prune is refused meanwhile, and
    // it is refused while prune holds the store.
    let key = fernet::Fernet::generate_key();
    let legacy_src = crate::legacy::source_db(bench, "mx_lg_src", VERSION, &key);
    let dir = tempfile::tempdir().expect("tempdir");
    let location = dir.path().join("legacy");
    crate::legacy::write_legacy_backup(&legacy_src, VERSION, &key, &location).await;
    let location_arg = location.to_str().expect("utf-8 path");
    let env = [("SECONDARY_FERNET_KEY", key.as_str())];
    let legacy_pairs: [(&str, &str, &str); 2] = [
        ("restore --from-legacy", "restore_legacy.locked", "prune"),
        ("prune", "prune.locked", "restore --from-legacy"),
    ];
    for (n, (first, point, second)) in legacy_pairs.into_iter().enumerate() {
        let dst = crate::legacy::target_db(bench, &format!("mx_lg_dst{n}"), VERSION);
        let before = whole_db_digest(&dst).await;
        let legacy = [
            "--yes",
            "restore",
            "--db",
            dst.as_str(),
            "--from-legacy",
            location_arg,
            "--airflow-version",
            VERSION,
        ];
        let prune = ["--store", location_arg, "prune", "--keep-last", "1"];
        let args_of = |command: &str| -> Vec<&str> {
            if command == "prune" {
                prune.to_vec()
            } else {
                legacy.to_vec()
            }
        };
        let mut trial = Trial::new(
            &format!("{first} + {second}"),
            format!("{second} while {first} is held at {point}"),
        );
        let (out, code, reached) =
            held_pair(dir.path(), &env, &args_of(first), point, &args_of(second));
        trial.check(reached, format!("the {first} never reached {point}"));
        trial.exit = out.code;
        trial.check(
            out.code == 5,
            format!("exit {} (expected 5): {}", out.code, out.stderr),
        );
        trial.check(code == 130, format!("the {first} exited {code}"));
        let unchanged = whole_db_digest(&dst).await == before;
        trial.check(unchanged, "target changed");
        trial.state = format!(
            "second exit {}, first exit {code}, target {}",
            out.code,
            if unchanged { "unchanged" } else { "CHANGED" }
        );
        let (_, locks) = leftovers(&location, &[]);
        trial.leftovers = format!("{} locks", locks.len());
        trial.check(locks.is_empty(), format!("locks left: {locks:?}"));
        let again = run_env(dir.path(), &env, &legacy);
        trial.check(again.code == 0, format!("rerun: {}", again.stderr));
        trial.rerun = if again.code == 0 { "ok" } else { "FAILED" }.into();
        trials.push(trial);
    }
}

/// A restore and a cleanup of the same database at once: the one that comes second waits
/// for the tables the first holds, gives up after MWAA_DR_DB_LOCK_TIMEOUT_SECS with a
/// retryable error, and changes nothing; the first, stopped, leaves the target as it was.
async fn database_concurrency_trials(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_backup(dir.path(), src);
    let restore_args = |db: &str| -> Vec<String> {
        [
            "--store",
            &store.display().to_string(),
            "--yes",
            "restore",
            "--clean",
            "--db",
            db,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let cleanup_args = |db: &str| -> Vec<String> {
        ["--yes", "cleanup", "--db", db]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let pairs: [(&str, &str, &str); 2] = [
        ("restore", "restore.table_loaded", "cleanup"),
        ("cleanup", "cleanup.table_deleted", "restore"),
    ];
    for (first, point, second) in pairs {
        let dst = fresh_db(bench, false);
        let out = run(mwaa_dr(dir.path()).args(restore_args(&dst)));
        assert_eq!(out.code, 0, "{}", out.stderr);
        let before = whole_db_digest(&dst).await;
        let mut trial = Trial::new(
            &format!("{first} + {second}"),
            format!("{second} of the same database while {first} is in its transaction"),
        );
        let args_of = |command: &str| {
            if command == "restore" {
                restore_args(&dst)
            } else {
                cleanup_args(&dst)
            }
        };
        let first_args = args_of(first);
        let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
        let holder = spawn(
            dir.path(),
            &[("MWAA_DR_TEST_FAILPOINT", point)],
            &first_args,
        );
        let reached = holder.wait_for(point);
        trial.check(reached, "the first run never reached its transaction");
        let second_args = args_of(second);
        let second_args: Vec<&str> = second_args.iter().map(String::as_str).collect();
        let out = run_env(
            dir.path(),
            &[("MWAA_DR_DB_LOCK_TIMEOUT_SECS", "2")],
            &second_args,
        );
        trial.exit = out.code;
        trial.check(out.code == 1, format!("exit {}: {}", out.code, out.stderr));
        trial.check(
            out.stderr.contains("55P03") && out.stderr.contains("may pass"),
            format!("not a retryable lock timeout: {}", out.stderr),
        );
        let code = holder.terminate();
        trial.check(code == 130, format!("the first run exited {code}"));
        let unchanged = whole_db_digest(&dst).await == before;
        trial.check(unchanged, "target changed");
        trial.check(sessions_left(&dst).await == 0, "server session left");
        trial.state = format!(
            "second exit {}, first exit {code}, target {}",
            out.code,
            if unchanged { "unchanged" } else { "CHANGED" }
        );
        check_store(&mut trial, dir.path(), &store, Stop::Term);
        let again = run(mwaa_dr(dir.path()).args(&second_args));
        trial.check(again.code == 0, format!("rerun: {}", again.stderr));
        trial.rerun = if again.code == 0 { "ok" } else { "FAILED" }.into();
        trials.push(trial);
    }
}

/// The command that consumes `variable`, run against servers that accept connections and
/// never answer (the database, AWS): the value is resolved and used, not only parsed.
fn consumer(variable: &str, out_dir: &str) -> Vec<String> {
    let args: Vec<&str> = if variable.starts_with("HEALTH_CHECK_")
        || variable.starts_with("MWAA_DR_AWS_")
        || matches!(
            variable,
            "MWAA_SIMULATE_DR" | "PRIMARY_MWAA_ENVIRONMENT_NAME" | "PRIMARY_REGION"
        ) {
        vec!["health-check"]
    } else if variable.starts_with("METADATA_")
        || matches!(
            variable,
            "MWAA_DR_DAG_RUN"
                | "PRIMARY_BACKUP_SCHEDULE"
                | "MWAA_DAGS_S3_PATH"
                | "MWAA_BACKUP_FILE_NAME"
                | "PRIMARY_REPLICATION_POLLING_INTERVAL_SECS"
        )
    {
        vec![
            "dags",
            "render",
            "--out",
            out_dir,
            "--binary-uri",
            "s3://bucket/mwaa-dr",
            "--binary-sha256",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ]
    } else if variable.starts_with("SECONDARY_")
        || variable.starts_with("STACK_")
        || matches!(
            variable,
            "DR_TYPE"
                | "MWAA_VERSION"
                | "AWS_ACCOUNT_ID"
                | "STATE_MACHINE_TIMEOUT_MINS"
                | "MWAA_CREATE_ENV_POLLING_INTERVAL_SECS"
                | "DR_SNS_TOPIC_ARN"
                | "MWAA_NOTIFICATION_EMAILS"
                | "MWAA_UPDATE_EXECUTION_ROLE"
                | "DR_VARIABLE_RESTORE_STRATEGY"
                | "DR_CONNECTION_RESTORE_STRATEGY"
                | "PRIMARY_MWAA_ROLE_ARN"
                | "PRIMARY_DAGS_BUCKET_NAME"
                | "PRIMARY_VPC_ID"
                | "PRIMARY_SUBNET_IDS"
                | "PRIMARY_SECURITY_GROUP_IDS"
        )
    {
        vec!["--yes", "--dry-run", "failover"]
    } else {
        vec!["--dry-run", "backup"]
    };
    args.into_iter().map(str::to_string).collect()
}

/// Runs the binary with `env`, killed if it has not ended within `limit`; returns the exit
/// code (`-2` when it had to be killed), stdout and stderr.
fn run_bounded(
    dir: &Path,
    env: &[(String, String)],
    args: &[String],
    limit: Duration,
) -> (i32, String, String) {
    use std::io::Read;
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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code().unwrap_or(-1);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break -2;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        code,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Every configuration variable with values outside what it accepts: `config`, `list` and
/// the command that consumes the variable fail with a code of the documented table or
/// accept the text, never panic, never hang, never touch the store.
fn configuration_trials(trials: &mut Vec<Trial>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(mwaa_dr(dir.path()).args(["--output", "json", "config"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("config JSON");
    let names: Vec<String> = doc["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    let (_server, addr) = silent_server();
    let store = dir.path().join("store");
    let silent_db = format!("postgres://u:pw@{addr}/airflow");
    let base: Vec<(String, String)> = [
        ("DR_BACKUP_STORE", store.display().to_string()),
        ("AWS_ENDPOINT_URL", format!("http://{addr}")),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("PRIMARY_REGION", "us-east-1".into()),
        ("SECONDARY_REGION", "us-east-2".into()),
        ("PRIMARY_MWAA_ENVIRONMENT_NAME", "primary".into()),
        ("SECONDARY_MWAA_ENVIRONMENT_NAME", "secondary".into()),
        ("PRIMARY_DB_URL", silent_db.clone()),
        ("SECONDARY_DB_URL", silent_db),
        ("DR_TYPE", "WARM_STANDBY".into()),
        ("MWAA_DR_DB_CONNECT_TIMEOUT_SECS", "1".into()),
        ("MWAA_DR_AWS_TIMEOUT_SECS", "1".into()),
        ("MWAA_DR_AWS_MAX_ATTEMPTS", "1".into()),
        ("HEALTH_CHECK_MAX_RETRY", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bad = [
        "-1",
        "NaN",
        "1e308",
        "99999999999999999999999",
        "\u{1b}[31mred",
        "[\"unterminated",
        "postgres://u:p@h",
        "",
    ];
    // The documented exit codes (README "Exit codes"); 101 is a panic.
    const DOCUMENTED: [i32; 7] = [0, 1, 2, 3, 4, 5, 6];
    let trial_of = |name: &String| -> Trial {
        let mut trial = Trial::new("config", format!("{name} with {} bad values", bad.len()));
        let out_dir = tempfile::tempdir().expect("tempdir");
        let consuming = consumer(name, out_dir.path().to_str().expect("utf-8 path"));
        let mut codes = Vec::new();
        for value in bad {
            for command in [vec!["config"], vec!["list"]] {
                let out = run(mwaa_dr(dir.path())
                    .env(name, value)
                    .env("DR_BACKUP_STORE", &store)
                    .args(&command));
                codes.push(out.code);
                trial.check(
                    matches!(out.code, 0 | 2),
                    format!(
                        "{name}={value:?} {command:?}: exit {}: {}",
                        out.code, out.stderr
                    ),
                );
                trial.check(
                    !out.stdout.contains('\u{1b}') && !out.stderr.contains('\u{1b}'),
                    format!("{name}: a raw escape reached the terminal"),
                );
            }
            let mut env = base.clone();
            env.retain(|(k, _)| k != name);
            env.push((name.clone(), value.to_string()));
            let (code, stdout, stderr) =
                run_bounded(dir.path(), &env, &consuming, Duration::from_secs(30));
            codes.push(code);
            trial.check(
                DOCUMENTED.contains(&code),
                format!("{name}={value:?} {consuming:?}: exit {code}: {stderr}"),
            );
            trial.check(
                !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
                format!("{name}: a raw escape reached the terminal from {consuming:?}"),
            );
        }
        codes.sort_unstable();
        codes.dedup();
        trial.exit = *codes.last().unwrap_or(&0);
        let command = consuming
            .iter()
            .find(|a| !a.starts_with('-'))
            .cloned()
            .unwrap_or_default();
        trial.state = format!("exit codes {codes:?} (config, list, {command})");
        trial.rerun = "n/a".into();
        trial
    };
    // The consuming commands mostly wait on the silent servers' timeouts: run the
    // variables side by side.
    let chunks: Vec<&[String]> = names.chunks(names.len().div_ceil(8).max(1)).collect();
    let results: Vec<Trial> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(|| chunk.iter().map(trial_of).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("configuration trials"))
            .collect()
    });
    let touched = files_under(&store);
    for mut trial in results {
        trial.leftovers = if touched.is_empty() {
            "none".into()
        } else {
            "store touched".into()
        };
        trial.check(touched.is_empty(), format!("store touched: {touched:?}"));
        trials.push(trial);
    }
}

/// A database connection killed under a restore, and under a cleanup, waiting on a table.
async fn connection_trials(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_backup(dir.path(), src);
    let cases = [
        ("restore", "task_instance"),
        ("restore", "xcom"),
        ("restore", "dag_run"),
        ("cleanup", "task_instance"),
        ("cleanup", "dag_run"),
    ];
    for (command, table) in cases {
        let dst = fresh_db(bench, false);
        let args: Vec<String> = if command == "restore" {
            store_args(&store, &["--yes", "restore", "--clean", "--db", &dst])
        } else {
            // A cleanup empties a restored database.
            let out = run(mwaa_dr(dir.path())
                .arg("--store")
                .arg(&store)
                .args(["--yes", "restore", "--db", &dst]));
            assert_eq!(out.code, 0, "restore: {}", out.stderr);
            vec!["--yes", "cleanup", "--db", &dst]
        }
        .into_iter()
        .map(str::to_string)
        .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let before = whole_db_digest(&dst).await;
        let holder = crate::faults::hold_table(&dst, table).await;
        let mut trial = Trial::new(
            command,
            format!("connection killed while waiting on {table}"),
        );
        let mut running = spawn(dir.path(), &[], &args);
        // Kill the session once it waits.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut killed = 0i64;
        while killed == 0 && Instant::now() < deadline {
            let mut conn = connect(&dst).await;
            killed = sqlx::query_scalar(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'mwaa-dr' AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut conn)
            .await
            .expect("terminate");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let code = running
            .child
            .wait()
            .map(|s| s.code().unwrap_or(-1))
            .unwrap_or(-1);
        let _ = running.reader.join();
        let stderr: String = running.lines.try_iter().collect::<Vec<_>>().join("\n");
        drop(holder);
        trial.exit = code;
        trial.check(killed > 0, format!("the {command} never waited"));
        trial.check(code == 1, format!("exit {code}: {stderr}"));
        trial.check(
            stderr.contains("retryable") || stderr.contains("may pass"),
            format!("not transient: {stderr}"),
        );
        if command == "restore" {
            restore_failed_cleanly(&mut trial, dir.path(), &store, &dst, &before).await;
        } else {
            let unchanged = whole_db_digest(&dst).await == before;
            trial.state = if unchanged {
                "target unchanged"
            } else {
                "CHANGED"
            }
            .into();
            trial.check(unchanged, "target changed");
            trial.check(sessions_left(&dst).await == 0, "server session left");
            trial.leftovers = "none".into();
            let again = run(mwaa_dr(dir.path()).args(&args));
            trial.check(again.code == 0, format!("rerun: {}", again.stderr));
            trial.rerun = if again.code == 0 { "ok" } else { "FAILED" }.into();
        }
        trials.push(trial);
    }
}

/// A Warm-Standby setup of its own: the primary UNAVAILABLE, the secondary AVAILABLE, a
/// health-check schedule, a store with one backup, an empty standby database.
struct WarmStandby {
    aws: crate::aws::Aws,
    schedule: String,
    dir: tempfile::TempDir,
    store: PathBuf,
    standby: String,
    env: Vec<(&'static str, String)>,
}

impl WarmStandby {
    async fn new(bench: &Bench, src: &str) -> Option<WarmStandby> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let aws = crate::aws::Aws::get(&format!("mxfo{n}"))?;
        let (primary, secondary, schedule) = (
            format!("primary-{}", aws.tag),
            format!("secondary-{}", aws.tag),
            format!("health-{}", aws.tag),
        );
        aws.create_schedule(&schedule).await;
        aws.seed_environment(
            crate::aws::PRIMARY_REGION,
            serde_json::json!({"Name": primary, "Status": "UNAVAILABLE"}),
        );
        aws.seed_environment(
            crate::aws::SECONDARY_REGION,
            serde_json::json!({"Name": secondary, "Status": "AVAILABLE"}),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with_backup(dir.path(), src);
        let standby = fresh_db(bench, false);
        let mut env = aws.vars();
        env.extend([
            ("DR_TYPE", "WARM_STANDBY".to_string()),
            ("PRIMARY_MWAA_ENVIRONMENT_NAME", primary),
            ("SECONDARY_MWAA_ENVIRONMENT_NAME", secondary),
            ("SECONDARY_DB_URL", standby.clone()),
            ("HEALTH_CHECK_SCHEDULE_NAME", schedule.clone()),
            ("HEALTH_CHECK_MAX_RETRY", "0".to_string()),
        ]);
        Some(WarmStandby {
            aws,
            schedule,
            dir,
            store,
            standby,
            env,
        })
    }
}

/// Two failovers at once: the second is refused (locked) while the first runs; the first,
/// stopped, is resumed and finished by the next run.
async fn two_failovers_trial(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    let Some(ws) = WarmStandby::new(bench, src).await else {
        return;
    };
    let env: Vec<(&str, &str)> = ws.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = store_args(&ws.store, &["--yes", "failover"]);
    let point = "failover.confirm_primary_unhealthy";
    let mut trial = Trial::new(
        "failover + failover",
        "a second failover while one runs".into(),
    );
    let mut armed = env.clone();
    armed.push(("MWAA_DR_TEST_FAILPOINT", point));
    let first = spawn(ws.dir.path(), &armed, &args);
    let reached = first.wait_for(point);
    trial.check(reached, "the first failover never started");
    let second = run_env(ws.dir.path(), &env, &args);
    trial.exit = second.code;
    trial.check(
        second.code == 5,
        format!("second exit {}: {}", second.code, second.stderr),
    );
    let code = first.terminate();
    trial.check(code == 130, format!("the first failover exited {code}"));
    trial.state = format!("second exit {}, first exit {code}", second.code);
    let again = run_env(ws.dir.path(), &env, &args);
    let finished = again.code == 0 && dag_runs(&ws.standby).await > 0;
    trial.check(
        finished,
        format!("rerun exit {}: {}", again.code, again.stderr),
    );
    trial.rerun = if finished {
        "resumed and finished"
    } else {
        "FAILED"
    }
    .into();
    let locks = files_under(&ws.store)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("locks/"))
        .count();
    trial.leftovers = if locks == 0 {
        "none".into()
    } else {
        format!("{locks} locks")
    };
    trial.check(locks == 0, "locks left after the rerun");
    trials.push(trial);
}

/// A Warm-Standby failover stopped before each of its steps: the rerun resumes it and
/// finishes it, the standby holds nothing or the whole backup, the failover lock goes away.
async fn failover_trials(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    let steps = [
        "confirm_primary_unhealthy",
        "disable_health_check",
        "confirm_secondary_available",
        "restore_latest_backup",
        "notify",
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = fresh_db(bench, false);
    let reference_store = store_with_backup(dir.path(), src);
    let out = run(mwaa_dr(dir.path())
        .arg("--store")
        .arg(&reference_store)
        .args(["--yes", "restore", "--db", &reference]));
    assert_eq!(out.code, 0, "reference restore: {}", out.stderr);
    let full_runs = dag_runs(&reference).await;
    for step in steps {
        for stop in Stop::ALL {
            let Some(ws) = WarmStandby::new(bench, src).await else {
                return;
            };
            let (aws, schedule, trial_dir, store, standby, env) = (
                &ws.aws,
                &ws.schedule,
                &ws.dir,
                &ws.store,
                &ws.standby,
                &ws.env,
            );
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let point = format!("failover.{step}");
            let mut trial = Trial::new("failover", format!("{} at {step}", stop.label()));
            let args = store_args(store, &["--yes", "failover"]);
            let (code, stderr, reached) = stop_at_env(trial_dir.path(), &env, &point, stop, &args);
            check_exit(&mut trial, stop, code, &stderr, reached);
            let runs = dag_runs(standby).await;
            trial.state = match runs {
                0 => "standby not restored".to_string(),
                r if r == full_runs => "standby restored".to_string(),
                r => format!("PARTIAL ({r} runs)"),
            };
            trial.check(runs == 0 || runs == full_runs, "partial restore visible");
            trial.check(sessions_left(standby).await == 0, "server session left");
            let again = run_env(trial_dir.path(), &env, &args);
            let finished = again.code == 0
                && dag_runs(standby).await == full_runs
                && aws.schedule_state(schedule).await == "DISABLED";
            trial.check(
                finished,
                format!("rerun exit {}: {}", again.code, again.stderr),
            );
            trial.rerun = if finished {
                "resumed and finished"
            } else {
                "FAILED"
            }
            .into();
            let locks: Vec<PathBuf> = files_under(store)
                .into_iter()
                .filter(|p| p.to_string_lossy().contains("locks/"))
                .collect();
            trial.leftovers = match locks.len() {
                0 => "none".into(),
                l => format!("{l} locks"),
            };
            trial.check(
                locks.is_empty(),
                format!("locks left after the rerun: {locks:?}"),
            );
            trials.push(trial);
        }
    }
    backup_restore_trials(bench, src, full_runs, trials).await;
    two_failovers_trial(bench, src, trials).await;
}

/// A Backup-Restore failover stopped before it creates the secondary, after it sent
/// CreateEnvironment but before it recorded that, while it waits for it, and before it
/// restores: the rerun resumes, and MWAA receives exactly one
/// CreateEnvironment in all.
async fn backup_restore_trials(bench: &Bench, src: &str, full_runs: i64, trials: &mut Vec<Trial>) {
    // `create_sent`: CreateEnvironment sent, the step not yet recorded.
    let steps = [
        "create_secondary_environment",
        "create_sent",
        "wait_secondary_available",
        "restore_latest_backup",
    ];
    for step in steps {
        for stop in Stop::ALL {
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let Some(aws) = crate::aws::Aws::get(&format!("mxbr{n}")) else {
                return;
            };
            let (primary, secondary) = (
                format!("primary-{}", aws.tag),
                format!("secondary-{}", aws.tag),
            );
            aws.seed_environment(
                crate::aws::PRIMARY_REGION,
                serde_json::json!({
                    "Name": primary, "Status": "AVAILABLE", "AirflowVersion": "2.10.3",
                    "ExecutionRoleArn": "arn:aws:iam::123456789012:role/primary-role",
                    "SourceBucketArn": "arn:aws:s3:::primary-dags", "DagS3Path": "dags",
                    "NetworkConfiguration": {"SubnetIds": ["subnet-p1", "subnet-p2"], "SecurityGroupIds": ["sg-p"]},
                    "EnvironmentClass": "mw1.small"
                }),
            );
            let trial_dir = tempfile::tempdir().expect("tempdir");
            let store = store_with_backup(trial_dir.path(), src);
            let standby = fresh_db(bench, false);
            let mut env: Vec<(&str, String)> = aws.vars();
            env.extend([
                ("DR_TYPE", "BACKUP_RESTORE".to_string()),
                ("PRIMARY_MWAA_ENVIRONMENT_NAME", primary.clone()),
                ("SECONDARY_MWAA_ENVIRONMENT_NAME", secondary.clone()),
                ("SECONDARY_DB_URL", standby.clone()),
                ("HEALTH_CHECK_MAX_RETRY", "0".to_string()),
                ("MWAA_CREATE_ENV_POLLING_INTERVAL_SECS", "1".to_string()),
                (
                    "SECONDARY_MWAA_ROLE_ARN",
                    "arn:aws:iam::123456789012:role/secondary-role".to_string(),
                ),
                ("SECONDARY_DAGS_BUCKET_NAME", "secondary-dags".to_string()),
                (
                    "SECONDARY_SUBNET_IDS",
                    r#"["subnet-s1", "subnet-s2"]"#.to_string(),
                ),
                ("SECONDARY_SECURITY_GROUP_IDS", r#"["sg-s"]"#.to_string()),
            ]);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let saved = run_env(
                trial_dir.path(),
                &env,
                &store_args(&store, &["backup", "--environment-only"]),
            );
            assert_eq!(saved.code, 0, "{}", saved.stderr);
            aws.standin(
                "PATCH",
                &format!(
                    "environments/{primary}?region={}",
                    crate::aws::PRIMARY_REGION
                ),
                Some(serde_json::json!({"Status": "UNAVAILABLE"})),
            );
            aws.standin(
                "POST",
                "next-create",
                Some(serde_json::json!({"Name": secondary, "Delay": 1})),
            );
            let point = format!("failover.{step}");
            let mut trial = Trial::new(
                "failover",
                format!("{} at {step} (Backup-Restore)", stop.label()),
            );
            let args = store_args(&store, &["--yes", "failover"]);
            let (code, stderr, reached) = stop_at_env(trial_dir.path(), &env, &point, stop, &args);
            check_exit(&mut trial, stop, code, &stderr, reached);
            let runs = dag_runs(&standby).await;
            trial.check(runs == 0 || runs == full_runs, "partial restore visible");
            let again = run_env(trial_dir.path(), &env, &args);
            let creates = aws.requests("CreateEnvironment", &secondary).len();
            trial.state = format!("{creates} CreateEnvironment in all");
            let finished = again.code == 0 && dag_runs(&standby).await == full_runs;
            trial.check(
                finished,
                format!("rerun exit {}: {}", again.code, again.stderr),
            );
            trial.check(
                creates == 1,
                format!("{creates} CreateEnvironment requests"),
            );
            trial.rerun = if finished {
                "resumed and finished"
            } else {
                "FAILED"
            }
            .into();
            let locks = files_under(&store)
                .into_iter()
                .filter(|p| p.to_string_lossy().contains("locks/"))
                .count();
            trial.leftovers = if locks == 0 {
                "none".into()
            } else {
                format!("{locks} locks")
            };
            trial.check(locks == 0, "locks left after the rerun");
            trials.push(trial);
        }
    }
}

async fn dag_runs(url: &str) -> i64 {
    let mut conn = connect(url).await;
    sqlx::query_scalar("SELECT count(*) FROM dag_run")
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

/// A database and an S3 endpoint that accept connections and never answer.
fn silent_trials(src: &str, trials: &mut Vec<Trial>) {
    let (_server, addr) = silent_server();
    let silent_db = format!("postgres://u:pw@{addr}/airflow");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_backup(dir.path(), src);
    /// command, fault, arguments, environment, longest acceptable run in seconds
    type Case<'a> = (&'a str, &'a str, Vec<&'a str>, Vec<(&'a str, String)>, u64);
    let cases: [Case; 3] = [
        (
            "backup",
            "the database never answers",
            store_args(&store, &["backup", "--db", &silent_db]),
            vec![("MWAA_DR_DB_CONNECT_TIMEOUT_SECS", "2".into())],
            20,
        ),
        (
            "restore",
            "the database never answers",
            store_args(&store, &["--yes", "restore", "--clean", "--db", &silent_db]),
            vec![("MWAA_DR_DB_CONNECT_TIMEOUT_SECS", "2".into())],
            20,
        ),
        (
            "backup",
            "the S3 endpoint never answers",
            vec!["--store", "s3://frozen/dr", "backup", "--db", src],
            vec![
                ("AWS_ENDPOINT_URL", format!("http://{addr}")),
                ("AWS_ACCESS_KEY_ID", "testing".into()),
                ("AWS_SECRET_ACCESS_KEY", "testing".into()),
                ("AWS_REGION", "us-east-1".into()),
                ("MWAA_DR_AWS_TIMEOUT_SECS", "2".into()),
                ("MWAA_DR_AWS_MAX_ATTEMPTS", "2".into()),
            ],
            40,
        ),
    ];
    for (command, fault, args, env, limit) in cases {
        let mut trial = Trial::new(command, fault.to_string());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        let out = run_env(dir.path(), &env, &args);
        let seconds = started.elapsed().as_secs();
        trial.exit = out.code;
        trial.check(out.code == 1, format!("exit {}: {}", out.code, out.stderr));
        trial.check(seconds < limit, format!("took {seconds} s"));
        trial.check(
            out.stderr.contains("this may pass"),
            format!("not reported as transient: {}", out.stderr),
        );
        trial.state = format!("failed after {seconds} s, transient");
        check_store(&mut trial, dir.path(), &store, Stop::Error);
        trial.rerun = "n/a (the server is down)".into();
        trials.push(trial);
    }
}

/// An S3 store that freezes mid-operation (a proxy in front of moto stops answering): a
/// backup after its first object, a restore at the first object read of its load, with its
/// transaction open. Each fails within the AWS timeout as transient, lists no partial
/// backup, leaves the target as it was, and succeeds once S3 answers again.
async fn frozen_s3_trials(bench: &Bench, src: &str, trials: &mut Vec<Trial>) {
    let Some((_s3, bucket)) = crate::store::moto_bucket("matrix_frozen").await else {
        return;
    };
    let moto = std::env::var("MWAA_DR_TEST_MOTO_URL").expect("moto url");
    let proxy = crate::common::FreezingProxy::start(&moto, ".csv.zst");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("s3://{bucket}/dr");
    let env_of = |endpoint: &str| -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", endpoint.to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("MWAA_DR_AWS_TIMEOUT_SECS", "2".into()),
            ("MWAA_DR_AWS_MAX_ATTEMPTS", "2".into()),
        ]
    };
    let (frozen, working) = (env_of(&proxy.url), env_of(&moto));
    let pairs = |env: &[(&'static str, String)]| -> Vec<(&str, String)> { env.to_vec() };
    let run_with = |env: &[(&'static str, String)], args: &[&str]| {
        let env = pairs(env);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_env(dir.path(), &env, args)
    };
    // The listed backups, each verified, through the working endpoint.
    let listed_s3 = || -> Result<Vec<String>, String> {
        let out = run_with(&working, &["--store", &store, "--output", "json", "list"]);
        let doc: Value =
            serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {}", out.stderr))?;
        let ids: Vec<String> = doc
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["backup_id"].as_str().map(str::to_string))
            .collect();
        for id in &ids {
            let v = run_with(&working, &["--store", &store, "verify", id]);
            if v.code != 0 {
                return Err(format!("listed backup {id} does not verify: {}", v.stderr));
            }
        }
        Ok(ids)
    };
    let limit = Duration::from_secs(40);

    // A backup: S3 freezes at its second object.
    let mut trial = Trial::new("backup", "the S3 endpoint freezes mid-backup".into());
    proxy.freeze_at(2);
    let started = Instant::now();
    let out = run_with(
        &frozen,
        &["--store", &store, "backup", "--jobs", "1", "--db", src],
    );
    let took = started.elapsed();
    trial.exit = out.code;
    trial.check(proxy.seen() >= 2, "S3 never froze");
    trial.check(out.code == 1, format!("exit {}: {}", out.code, out.stderr));
    trial.check(took < limit, format!("took {took:?}"));
    trial.check(
        out.stderr.contains("may pass"),
        format!("not reported as transient: {}", out.stderr),
    );
    let ids = listed_s3().unwrap_or_else(|e| {
        trial.check(false, e);
        Vec::new()
    });
    trial.check(
        ids.is_empty(),
        format!("listed after the frozen backup: {ids:?}"),
    );
    trial.state = format!(
        "failed after {} s, transient, {} listed",
        took.as_secs(),
        ids.len()
    );
    // What it wrote before S3 froze it cannot remove: unlisted, collected by `prune`.
    trial.leftovers = "unlisted objects (collected by prune)".into();
    let again = run_with(&working, &["--store", &store, "backup", "--db", src]);
    let ok = again.code == 0 && listed_s3().map(|ids| ids.len()) == Ok(1);
    trial.check(ok, format!("rerun: {}", again.stderr));
    trial.rerun = if ok { "ok" } else { "FAILED" }.into();
    trials.push(trial);

    // A restore: S3 freezes at the load's first object, after the verification's reads.
    let mut trial = Trial::new("restore", "the S3 endpoint freezes mid-restore".into());
    // A proxy of its own: the frozen one holds its connections for good.
    let proxy = crate::common::FreezingProxy::start(&moto, ".csv.zst");
    let frozen = env_of(&proxy.url);
    proxy.freeze_at(usize::MAX);
    let out = run_with(&frozen, &["--store", &store, "verify"]);
    trial.check(out.code == 0, format!("verify: {}", out.stderr));
    let verified = proxy.seen();
    let dst = fresh_db(bench, false);
    let before = whole_db_digest(&dst).await;
    proxy.freeze_at(verified + 1);
    let args = [
        "--store", &store, "--yes", "restore", "--clean", "--db", &dst,
    ];
    let started = Instant::now();
    let out = run_with(&frozen, &args);
    let took = started.elapsed();
    trial.exit = out.code;
    trial.check(proxy.seen() > verified, "S3 never froze");
    trial.check(out.code == 1, format!("exit {}: {}", out.code, out.stderr));
    trial.check(took < limit, format!("took {took:?}"));
    trial.check(
        out.stderr.contains("may pass"),
        format!("not reported as transient: {}", out.stderr),
    );
    let unchanged = whole_db_digest(&dst).await == before;
    trial.check(unchanged, "target changed");
    trial.check(sessions_left(&dst).await == 0, "server session left");
    trial.state = format!(
        "failed after {} s, transient, target {}",
        took.as_secs(),
        if unchanged { "unchanged" } else { "CHANGED" }
    );
    trial.leftovers = "none".into();
    let again = run_with(&working, &args);
    trial.check(again.code == 0, format!("rerun: {}", again.stderr));
    trial.rerun = if again.code == 0 { "ok" } else { "FAILED" }.into();
    trials.push(trial);
}

fn render(trials: &[Trial]) -> String {
    let mut groups: Vec<(String, usize, usize)> = Vec::new();
    for t in trials {
        let group = if t.command.contains('+') {
            "concurrent runs".to_string()
        } else {
            t.command.split(' ').next().unwrap_or_default().to_string()
        };
        match groups.iter_mut().find(|(g, _, _)| *g == group) {
            Some((_, n, f)) => {
                *n += 1;
                *f += usize::from(!t.failures.is_empty());
            }
            None => groups.push((group, 1, usize::from(!t.failures.is_empty()))),
        }
    }
    let failed: usize = groups.iter().map(|(_, _, f)| f).sum();
    let mut out = String::from(
        "# Reliability: the fault matrix\n\n\
         Generated by `scripts/fault-matrix.sh` (the `matrix::` test of the suite, which fails on\n\
         any failing trial); do not edit by hand. Each trial runs the real binary against the\n\
         bench PostgreSQL and a local store holding the Airflow 2.10.3 sample metadata, stops it\n\
         (kill -9, SIGTERM, SIGINT, or an injected failure at a named failpoint, a store call\n\
         failing, damaged objects, a killed database session, a concurrent run, bad\n\
         configuration) and then checks: the exit code is one of the documented table; the\n\
         target holds either its previous state or the complete result, never a part; every\n\
         listed backup verifies; no lock and no unlisted object is left after the grace period\n\
         (kill -9 excepted: its lock is stale at once for the next run on the host, its objects\n\
         are unlisted and collected by `prune`); and running the command again succeeds.\n\n\
         The failpoints are named points in the operations, armed only by\n\
         `MWAA_DR_TEST_FAILPOINT=<name>[=pause|=error]`; `MWAA_DR_TEST_STORE_FAULT=<op>#<k>`\n\
         makes the store fail its k-th call of one operation. Both exist for this matrix and\n\
         do nothing when unset.\n\n",
    );
    out.push_str(&format!(
        "**{} trials, {failed} failing.**\n\n| commands | trials | failing |\n|---|---|---|\n",
        trials.len()
    ));
    for (group, n, f) in &groups {
        out.push_str(&format!("| {group} | {n} | {f} |\n"));
    }
    out.push_str("\n| command | fault | exit | state after | left behind | rerun | verdict |\n|---|---|---|---|---|---|---|\n");
    for t in trials {
        let verdict = if t.failures.is_empty() {
            "pass".to_string()
        } else {
            format!(
                "FAIL: {}",
                t.failures.join("; ").replace('\n', " ").replace('|', "/")
            )
        };
        let exit = if t.exit == -1 {
            "killed".to_string()
        } else {
            t.exit.to_string()
        };
        out.push_str(&format!(
            "| {} | {} | {exit} | {} | {} | {} | {verdict} |\n",
            t.command, t.fault, t.state, t.leftovers, t.rerun
        ));
    }
    out
}

#[tokio::test]
async fn the_fault_matrix_has_no_failing_trial() {
    let Some(bench) = Bench::get() else { return };
    let src = fresh_db(&bench, true);
    let mut trials = Vec::new();
    backup_trials(&bench, &src, &mut trials).await;
    restore_trials(&bench, &src, &mut trials).await;
    cleanup_trials(&bench, &src, &mut trials).await;
    prune_trials(&src, &mut trials).await;
    store_fault_trials(&bench, &src, &mut trials).await;
    corruption_trials(&bench, &src, &mut trials).await;
    connection_trials(&bench, &src, &mut trials).await;
    silent_trials(&src, &mut trials);
    frozen_s3_trials(&bench, &src, &mut trials).await;
    failover_trials(&bench, &src, &mut trials).await;
    concurrency_trials(&bench, &src, &mut trials).await;
    command_pair_trials(&bench, &src, &mut trials).await;
    database_concurrency_trials(&bench, &src, &mut trials).await;
    configuration_trials(&mut trials);
    let doc = render(&trials);
    let regenerating = std::env::var("MWAA_DR_RELIABILITY_OUT").ok();
    if let Some(path) = &regenerating {
        std::fs::write(path, &doc).expect("write the reliability document");
    }
    let failing: Vec<String> = trials
        .iter()
        .filter(|t| !t.failures.is_empty())
        .map(|t| format!("{} / {}: {}", t.command, t.fault, t.failures.join("; ")))
        .collect();
    assert!(
        failing.is_empty(),
        "{} failing trials:\n{}",
        failing.len(),
        failing.join("\n")
    );
    if regenerating.is_none() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/RELIABILITY.md");
        let checked_in = std::fs::read_to_string(&path).expect("docs/RELIABILITY.md");
        if let Err(stale) = same_rows(&rows_of(&doc), &rows_of(&checked_in)) {
            panic!(
                "docs/RELIABILITY.md does not show the trials this matrix runs ({stale}); \
                 regenerate it with scripts/fault-matrix.sh and commit it"
            );
        }
    }
}

/// The (command, fault) rows of a rendered matrix.
fn rows_of(doc: &str) -> Vec<(String, String)> {
    doc.lines()
        .skip_while(|line| !line.starts_with("| command | fault |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| {
            let mut cells = line.split('|').skip(1).map(str::trim);
            Some((cells.next()?.to_string(), cells.next()?.to_string()))
        })
        .collect()
}

/// Whether the two documents list the same rows, and if not, which differ.
fn same_rows(ran: &[(String, String)], documented: &[(String, String)]) -> Result<(), String> {
    let show = |rows: Vec<&(String, String)>| -> String {
        rows.iter()
            .take(10)
            .map(|(c, f)| format!("`{c} / {f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing: Vec<_> = ran.iter().filter(|r| !documented.contains(r)).collect();
    let extra: Vec<_> = documented.iter().filter(|r| !ran.contains(r)).collect();
    if missing.is_empty() && extra.is_empty() && ran.len() == documented.len() {
        return Ok(());
    }
    Err(format!(
        "{} trials run, {} rows documented; not documented: [{}]; documented but not run: [{}]",
        ran.len(),
        documented.len(),
        show(missing),
        show(extra)
    ))
}

#[test]
fn the_reliability_rows_are_compared_as_a_set_of_command_and_fault() {
    let trial = |c: &str, f: &str| {
        let mut t = Trial::new(c, f.to_string());
        t.state = "x".into();
        t
    };
    let doc = render(&[
        trial("backup", "kill -9 at a"),
        trial("prune", "SIGTERM at b"),
    ]);
    let rows = rows_of(&doc);
    assert_eq!(
        rows,
        vec![
            ("backup".to_string(), "kill -9 at a".to_string()),
            ("prune".to_string(), "SIGTERM at b".to_string())
        ]
    );
    assert!(same_rows(&rows, &rows).is_ok());
    let fewer = rows_of(&render(&[trial("backup", "kill -9 at a")]));
    let stale = same_rows(&rows, &fewer).expect_err("a row missing");
    assert!(stale.contains("prune / SIGTERM at b"), "{stale}");
}
