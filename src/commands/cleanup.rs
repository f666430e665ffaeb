//! `mwaa-dr cleanup`: empty the restorable tables of a (standby) database in one transaction.

use serde::Serialize;
use sqlx::Connection;

use crate::config::Config;
use crate::db::cleanup::{TableCount, cleanup};
use crate::db::{connect, db_error};
use crate::error::Result;
use crate::output;

#[derive(Serialize)]
struct CleanupDoc<'a> {
    target: &'a str,
    dry_run: bool,
    tables: &'a [TableCount],
}

pub async fn run(config: &Config) -> Result<()> {
    let db = config.target_db("cleanup")?;
    let catalog = config.catalog()?;
    let mut conn = connect(&db).await?;
    if !config.dry_run {
        super::confirm(
            config,
            &format!("Delete the restorable rows of {}?", db.redacted()),
        )?;
    }
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| db_error("begin", db.redacted(), e))?;
    let counts = cleanup(&mut tx, &catalog, config.dry_run).await?;
    if config.dry_run {
        tx.rollback()
            .await
            .map_err(|e| db_error("rollback", db.redacted(), e))?;
    } else {
        tx.commit()
            .await
            .map_err(|e| db_error("commit", db.redacted(), e))?;
    }
    let doc = CleanupDoc {
        target: db.redacted(),
        dry_run: config.dry_run,
        tables: &counts,
    };
    output::emit(config.output, &doc, || {
        let verb = if config.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let rows: Vec<Vec<String>> = counts
            .iter()
            .map(|c| vec![c.table.clone(), c.rows.to_string()])
            .collect();
        format!(
            "{} {verb}:\n{}",
            db.redacted(),
            output::table(&["TABLE", "ROWS"], &rows)
        )
    });
    Ok(())
}
