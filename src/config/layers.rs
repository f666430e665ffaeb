//! Where a value can come from, in precedence order: flag > environment > .env file > default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// The layer a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Flag,
    Env,
    EnvFile,
    Default,
    Unset,
}

impl Source {
    pub fn label(&self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::EnvFile => ".env file",
            Source::Default => "default",
            Source::Unset => "unset",
        }
    }
}

/// The raw layers, captured once. Tests build them directly; the binary takes them from the
/// process environment and the `.env` file. Nothing here writes the process environment.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    /// Variable name -> value given by a command-line flag.
    pub flags: BTreeMap<String, String>,
    /// Variable name -> the flag that gave it (`--jobs`), for errors about flag values.
    pub flag_names: BTreeMap<String, &'static str>,
    pub env: BTreeMap<String, String>,
    pub env_file: BTreeMap<String, String>,
    /// The `.env` file that was read, if any.
    pub env_file_path: Option<PathBuf>,
}

impl Layers {
    /// The process environment (non-UTF-8 entries are skipped: no variable of ours has them).
    pub fn from_process_env() -> Self {
        Layers {
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            ..Layers::default()
        }
    }

    /// Reads the `.env` file. `explicit` is true when the user named the file: then a missing
    /// file is an error; the default `./.env` may be absent.
    pub fn load_env_file(&mut self, path: &Path, explicit: bool) -> Result<()> {
        if !path.exists() {
            if explicit {
                return Err(Error::EnvFile {
                    path: path.to_path_buf(),
                    problem: crate::error::ENV_FILE_NOT_FOUND.into(),
                });
            }
            return Ok(());
        }
        let iter = dotenvy::from_path_iter(path).map_err(|e| Error::EnvFile {
            path: path.to_path_buf(),
            problem: describe_dotenv_error(&e, path),
        })?;
        let mut values = BTreeMap::new();
        for item in iter {
            let (key, value) = item.map_err(|e| Error::EnvFile {
                path: path.to_path_buf(),
                problem: describe_dotenv_error(&e, path),
            })?;
            values.insert(key, value);
        }
        self.env_file = values;
        self.env_file_path = Some(path.to_path_buf());
        Ok(())
    }

    /// Records that `flag` gave `value` to the variable `name`.
    pub fn set_flag(&mut self, name: &str, flag: &'static str, value: impl Into<String>) {
        self.flags.insert(name.to_string(), value.into());
        self.flag_names.insert(name.to_string(), flag);
    }

    /// The flag that set `name`, when one did.
    pub fn flag_name(&self, name: &str) -> Option<&'static str> {
        self.flag_names.get(name).copied()
    }

    /// The highest-precedence value of `name`, with its layer.
    pub fn lookup(&self, name: &str) -> Option<(String, Source)> {
        if let Some(v) = self.flags.get(name) {
            return Some((v.clone(), Source::Flag));
        }
        if let Some(v) = self.env.get(name) {
            return Some((v.clone(), Source::Env));
        }
        if let Some(v) = self.env_file.get(name) {
            return Some((v.clone(), Source::EnvFile));
        }
        None
    }
}

/// dotenvy's messages for a bad line quote the line itself, which may hold a secret; keep
/// only its number and the variable name.
fn describe_dotenv_error(err: &dotenvy::Error, path: &Path) -> String {
    match err {
        dotenvy::Error::LineParse(line, index) => {
            let number = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.lines().position(|l| l.trim() == line.trim()))
                .map(|i| format!("line {}", i + 1))
                .unwrap_or_else(|| "a line".to_string());
            let name = line
                .split('=')
                .next()
                .map(str::trim)
                .filter(|n| {
                    !n.is_empty()
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                })
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            format!(
                "{number}{name} is not KEY=VALUE (error at character {}; the value is not shown, it may be a secret)",
                index + 1
            )
        }
        dotenvy::Error::Io(io) => io.to_string(),
        dotenvy::Error::EnvVar(e) => e.to_string(),
        _ => "unreadable".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers() -> Layers {
        let mut l = Layers::default();
        l.flags.insert("A".into(), "flag".into());
        l.env.insert("A".into(), "env".into());
        l.env.insert("B".into(), "env".into());
        l.env_file.insert("A".into(), "file".into());
        l.env_file.insert("B".into(), "file".into());
        l.env_file.insert("C".into(), "file".into());
        l
    }

    #[test]
    fn flag_beats_env_and_file() {
        assert_eq!(layers().lookup("A"), Some(("flag".into(), Source::Flag)));
    }

    #[test]
    fn env_beats_file() {
        assert_eq!(layers().lookup("B"), Some(("env".into(), Source::Env)));
    }

    #[test]
    fn file_applies_when_nothing_else() {
        assert_eq!(layers().lookup("C"), Some(("file".into(), Source::EnvFile)));
        assert_eq!(layers().lookup("D"), None);
    }
}
