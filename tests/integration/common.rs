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

/// A loopback TCP proxy in front of `upstream` (`http://host:port`) that forwards every
/// byte until the `freeze_at`-th request whose first bytes contain `pattern` (1-based); from
/// that request on it forwards nothing in either direction and answers no new connection,
/// as an endpoint frozen mid-operation does. It runs until the test process ends.
pub struct FreezingProxy {
    pub url: String,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    freeze_at: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FreezingProxy {
    pub fn start(upstream: &str, pattern: &'static str) -> FreezingProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(AtomicUsize::new(0));
        let freeze_at = Arc::new(AtomicUsize::new(usize::MAX));
        let frozen = Arc::new(AtomicBool::new(false));
        let (seen2, freeze_at2) = (seen.clone(), freeze_at.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for client in listener.incoming().flatten() {
                if frozen.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_in, mut s_out) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mut s_in, mut c_out) = (server, client);
                let (frozen_up, frozen_down) = (frozen.clone(), frozen.clone());
                let (seen, freeze_at) = (seen2.clone(), freeze_at2.clone());
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let chunk = &buf[..n];
                        let starts_request = chunk.starts_with(b"GET ")
                            || chunk.starts_with(b"PUT ")
                            || chunk.starts_with(b"POST ")
                            || chunk.starts_with(b"HEAD ")
                            || chunk.starts_with(b"DELETE ");
                        if starts_request
                            && chunk
                                .windows(pattern.len())
                                .any(|w| w == pattern.as_bytes())
                        {
                            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                            if n >= freeze_at.load(Ordering::SeqCst) {
                                frozen_up.store(true, Ordering::SeqCst);
                            }
                        }
                        if frozen_up.load(Ordering::SeqCst) {
                            continue;
                        }
                        if s_out.write_all(chunk).is_err() {
                            break;
                        }
                    }
                });
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = c_out.shutdown(std::net::Shutdown::Both);
                                break;
                            }
                            Ok(n) => n,
                        };
                        if frozen_down.load(Ordering::SeqCst) {
                            // Frozen: hold the client's connection open, send nothing more.
                            loop {
                                std::thread::park();
                            }
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        FreezingProxy {
            url,
            seen,
            freeze_at,
        }
    }

    /// Requests matching the pattern so far.
    pub fn seen(&self) -> usize {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Freezes at the `k`-th matching request from now on (counting restarts at zero).
    pub fn freeze_at(&self, k: usize) {
        self.seen.store(0, std::sync::atomic::Ordering::SeqCst);
        self.freeze_at.store(k, std::sync::atomic::Ordering::SeqCst);
    }
}
