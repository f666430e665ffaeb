//! Real Airflow's CLI against a database: the cached venv of a release (scripts/airflow-venv.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The cached venv of a real Airflow release; the test fails when it cannot be created.
pub fn airflow_venv(version: &str) -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/airflow-venv.sh");
    let problem = match Command::new(&script).arg(version).output() {
        Ok(out) if out.status.success() => {
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if path.join("bin/airflow").is_file() {
                return Some(path);
            }
            format!("{} has no bin/airflow", path.display())
        }
        Ok(out) => format!(
            "{} {version} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ),
        Err(e) => format!("{} cannot run: {e}", script.display()),
    };
    panic!(
        "the Airflow {version} venv is needed (scripts/airflow-venv.sh {version} makes it): {problem}"
    )
}

/// Airflow's CLI on the database `url` with the Fernet key list `fernet_key`.
pub fn airflow(venv: &Path, home: &Path, url: &str, fernet_key: &str, args: &[&str]) -> String {
    let db = url.replacen("postgres://", "postgresql+psycopg2://", 1);
    let mut cmd = Command::new(venv.join("bin/airflow"));
    cmd.env_clear()
        .args(args)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AIRFLOW_HOME", home)
        .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", db)
        .env("AIRFLOW__CORE__FERNET_KEY", fernet_key)
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False");
    let out = cmd.output().expect("airflow runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "airflow {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
