//! Shared test plumbing: running the binary in a clean environment, finding the bench servers.

use std::path::Path;

use assert_cmd::Command;

/// The binary with an empty environment (only PATH and HOME) in `dir`, so no variable or
/// `.env` of the developer's leaks into a test.
pub fn mwaa_dr(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("mwaa-dr").expect("binary built");
    cmd.env_clear().current_dir(dir);
    for keep in ["PATH", "HOME"] {
        if let Ok(value) = std::env::var(keep) {
            cmd.env(keep, value);
        }
    }
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A bench server's address from the variable `scripts/testbench.sh` exports. A test that
/// needs a server fails without it: it never passes silently. (`Option` is kept so that the
/// tests read `let Some(x) = ... else { return }` as before.)
pub fn bench_server(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => panic!(
            "{var} is not set: run the suite through scripts/test.sh, which starts the servers"
        ),
    }
}

/// A TCP server on loopback that accepts every connection and never sends a byte: a
/// database or an endpoint that hangs. It runs until the listener is dropped.
pub fn silent_server() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = listener.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in accepted.incoming().flatten() {
            held.push(stream);
        }
    });
    (listener, format!("127.0.0.1:{port}"))
}

/// Every file under `dir`, recursively (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
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
