//! The binary for MWAA (`scripts/build-mwaa.sh`): it must load on Amazon Linux 2, whose
//! glibc is 2.26, so no dynamic symbol may ask for a newer one. Checked here with this
//! test's own reading of `objdump`, not only the script's.
//!
//! Needs objdump (binutils) and Python 3 with venv (the script installs Zig and
//! cargo-zigbuild from PyPI into a cached venv); the test fails without them. The build uses
//! the cached target dir `$HOME/.cache/mwaa-dr/target-mwaa`, so after the first build (about
//! 40 minutes on two busy cores) a run only rebuilds the crate when the sources changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

const FLOOR: (u32, u32) = (2, 26);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-mwaa.sh")
}

/// Runs a tool, failing the test with what to install when it is missing.
fn tool(program: &str, args: &[&str], install: &str) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): install {install}"))
}

fn objdump(flag: &str, bin: &Path) -> String {
    let bin = bin.to_str().expect("utf-8 path");
    let out = tool(
        "objdump",
        &[flag, bin],
        "binutils (apt-get install binutils)",
    );
    assert!(
        out.status.success(),
        "objdump {flag} {bin} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every (symbol, glibc version) in `objdump -T` output, e.g. `(GLIBC_2.3.4) __memcpy_chk`
/// gives ("__memcpy_chk", [2, 3, 4]).
fn glibc_symbols(dynsyms: &str) -> Vec<(String, Vec<u32>)> {
    dynsyms
        .lines()
        .filter_map(|line| {
            let at = line.find("GLIBC_")?;
            let rest = &line[at + "GLIBC_".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            // GLIBC_PRIVATE and the like carry no version number to compare.
            let version: Vec<u32> = rest[..end]
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let symbol = line
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned();
            Some((symbol, version))
        })
        .collect()
}

fn newer_than_floor(symbols: &[(String, Vec<u32>)]) -> Vec<String> {
    let floor = [FLOOR.0, FLOOR.1];
    symbols
        .iter()
        .filter(|(_, version)| version.as_slice() > floor.as_slice())
        .map(|(symbol, version)| {
            let v: Vec<String> = version.iter().map(u32::to_string).collect();
            format!("{symbol}@GLIBC_{}", v.join("."))
        })
        .collect()
}

fn section_names(headers: &str) -> Vec<String> {
    headers
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let index = fields.next()?;
            index.parse::<u32>().ok()?;
            fields.next().map(str::to_owned)
        })
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read binary");
    hex::encode(Sha256::digest(&bytes))
}

fn run_script(args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("bash runs scripts/build-mwaa.sh");
    eprintln!(
        "scripts/build-mwaa.sh {}:\n--- stdout\n{}\n--- stderr (tail)\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 40)
    );
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn require_tools() {
    tool(
        "objdump",
        &["--version"],
        "binutils (apt-get install binutils)",
    );
    let venv = tool(
        "python3",
        &["-c", "import venv, ensurepip"],
        "python3 and python3-venv",
    );
    assert!(
        venv.status.success(),
        "Python's venv module is missing (the build installs Zig from PyPI into a venv): install python3-venv"
    );
}

#[test]
fn mwaa_binary_needs_no_glibc_newer_than_2_26_is_stripped_and_runs() {
    require_tools();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out_arg = out_dir.path().to_str().expect("utf-8 path");
    let build = run_script(&["--out", out_arg]);
    assert!(build.status.success(), "scripts/build-mwaa.sh failed");
    let stdout = String::from_utf8_lossy(&build.stdout);
    let bin = out_dir.path().join("mwaa-dr");
    assert!(
        stdout.contains("sha256:") && stdout.contains("size:"),
        "the script prints the path, size and SHA-256: {stdout}"
    );

    let symbols = glibc_symbols(&objdump("-T", &bin));
    assert!(
        !symbols.is_empty(),
        "objdump -T lists no GLIBC_ symbol: the parse or the binary is wrong"
    );
    let newer = newer_than_floor(&symbols);
    assert!(
        newer.is_empty(),
        "symbols newer than GLIBC_2.26 (would not load on Amazon Linux 2): {newer:?}"
    );

    let sections = section_names(&objdump("-h", &bin));
    assert!(
        sections.iter().any(|s| s == ".text"),
        "objdump -h parse found no .text: {sections:?}"
    );
    let unstripped: Vec<&String> = sections
        .iter()
        .filter(|s| *s == ".symtab" || s.starts_with(".debug_"))
        .collect();
    assert!(unstripped.is_empty(), "not stripped: {unstripped:?}");

    let recorded = std::fs::read_to_string(out_dir.path().join("mwaa-dr.sha256"))
        .expect("mwaa-dr.sha256 written");
    assert_eq!(
        recorded.trim_end(),
        format!("{}  mwaa-dr", sha256_hex(&bin)),
        "mwaa-dr.sha256 is in sha256sum format and matches the file"
    );

    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .expect("the MWAA binary starts");
    assert!(version.status.success(), "mwaa-dr --version failed");
    assert!(
        String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")),
        "--version prints the crate version"
    );

    // --check accepts what the build made, and refuses it once it no longer matches its
    // recorded SHA-256.
    assert!(run_script(&["--check", "--out", out_arg]).status.success());
    std::fs::write(
        out_dir.path().join("mwaa-dr.sha256"),
        format!("{}  mwaa-dr\n", "0".repeat(64)),
    )
    .expect("rewrite sha256");
    let tampered = run_script(&["--check", "--out", out_arg]);
    assert!(
        !tampered.status.success(),
        "--check accepted a wrong SHA-256"
    );
    assert!(String::from_utf8_lossy(&tampered.stderr).contains("does not match"));
}

/// The floor check can fail: the binary built for the tests here links against this
/// machine's newer glibc, and both this test's parse and the script's `--check` say so,
/// naming the symbols.
#[test]
fn mwaa_floor_check_refuses_a_binary_linked_against_a_newer_glibc() {
    require_tools();
    let host_bin = Path::new(env!("CARGO_BIN_EXE_mwaa-dr"));
    let newer = newer_than_floor(&glibc_symbols(&objdump("-T", host_bin)));
    let libc = tool("ldd", &["--version"], "libc-bin");
    let host_glibc = String::from_utf8_lossy(&libc.stdout);
    assert!(
        !newer.is_empty(),
        "the host-built binary needs nothing newer than GLIBC_2.26, so this machine ({}) cannot show the check failing",
        host_glibc.lines().next().unwrap_or_default()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(host_bin, dir.path().join("mwaa-dr")).expect("copy binary");
    std::fs::write(
        dir.path().join("mwaa-dr.sha256"),
        format!("{}  mwaa-dr\n", sha256_hex(&dir.path().join("mwaa-dr"))),
    )
    .expect("write sha256");
    let out = run_script(&["--check", "--out", dir.path().to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--check accepted a host-built binary"
    );
    assert!(
        stderr.contains("newer than 2.26") && stderr.contains("(GLIBC_2.3"),
        "the refusal names the glibc floor and the offending symbols: {stderr}"
    );
}
