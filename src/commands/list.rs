//! `mwaa-dr list`: the backups in the store, newest first, and those that are unreadable.

use tokio_util::sync::CancellationToken;

use super::Need;
use crate::config::Config;
use crate::error::Result;
use crate::ops::list::{Entry, ListReport, Row, list};
use crate::output::{self, escape_control};

pub async fn run(config: &Config) -> Result<()> {
    let services = super::services(config, "list", &[Need::Store]).await?;
    let progress = crate::progress::Silent;
    let report = list(&services, &progress, &CancellationToken::new()).await?;
    output::emit(config.output, &report.entries, || render(&report));
    Ok(())
}

fn render(report: &ListReport) -> String {
    let rows: Vec<&Row> = report
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::Backup(row) => Some(row),
            Entry::Unreadable { .. } => None,
        })
        .collect();
    let mut text = if rows.is_empty() {
        format!("no backups in {}", escape_control(&report.store))
    } else {
        // `output::table` escapes every cell.
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.backup_id.clone(),
                    r.finished_at.clone(),
                    r.environment.clone().unwrap_or_else(|| r.source.clone()),
                    r.airflow_version.clone(),
                    r.rows.to_string(),
                    output::bytes(r.stored_bytes),
                ]
            })
            .collect();
        output::table(&["ID", "TIME", "SOURCE", "AIRFLOW", "ROWS", "SIZE"], &cells)
    };
    if !report.unreadable.is_empty() {
        text.push_str(&format!(
            "\n{} unreadable backup(s) not listed: {}",
            report.unreadable.len(),
            report
                .unreadable
                .iter()
                .map(|u| escape_control(&u.backup_id).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    text
}
