//! `mwaa-dr config`: every resolved variable, its source, secrets redacted.

use serde::Serialize;

use crate::config::vars::{Group, spec};
use crate::config::{Config, Resolved};
use crate::error::Result;
use crate::output;

#[derive(Serialize)]
struct ConfigDoc<'a> {
    env_file: Option<String>,
    variables: &'a [Resolved],
}

pub fn run(config: &Config) -> Result<()> {
    let doc = ConfigDoc {
        env_file: config.env_file.as_ref().map(|p| p.display().to_string()),
        variables: config.entries(),
    };
    output::emit(config.output, &doc, || render(config));
    Ok(())
}

fn render(config: &Config) -> String {
    let mut out = String::new();
    match &config.env_file {
        Some(path) => out.push_str(&format!("env file: {}\n", path.display())),
        None => out.push_str("env file: none\n"),
    }
    let mut group: Option<Group> = None;
    let mut rows = Vec::new();
    let flush = |out: &mut String, group: Option<Group>, rows: &mut Vec<Vec<String>>| {
        if let Some(g) = group {
            out.push_str(&format!("\n# {}\n", g.title()));
            out.push_str(&output::table(&["NAME", "VALUE", "SOURCE"], rows));
            out.push('\n');
        }
        rows.clear();
    };
    for entry in config.entries() {
        let entry_group = spec(entry.name).map(|s| s.group);
        if entry_group != group {
            flush(&mut out, group, &mut rows);
            group = entry_group;
        }
        let value = match &entry.value {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut source = match &entry.note {
            Some(note) => format!("{} ({note})", entry.source.label()),
            None => entry.source.label().to_string(),
        };
        if let Some(why) = entry.no_effect {
            source.push_str(&format!("; no effect: {why}"));
        }
        rows.push(vec![entry.name.to_string(), value, source]);
    }
    flush(&mut out, group, &mut rows);
    out
}
