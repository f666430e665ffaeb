//! Restore of a manifest backup: the row source of its verified objects, and the table
//! modes of the catalog (copy, missing rows, strategy, merge) on top of the shared engine
//! (`super::load`): ids kept, Fernet secrets re-encrypted for the target's key, references
//! following the target's ids.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::PgConnection;
use sqlx::postgres::PgCopyIn;
use tracing::{info, instrument};

use super::load::statements::{
    MergeLoad, StrategyLoad, key_match, merge_statement, strategy_statements, written_rows,
};
use super::load::{
    LoadReport, RowSource, clean_up, copy_rows, ensure_empty, extends_load_report, job_references,
    open,
};
use super::shadow::{self, ShadowBuild};
use super::{PgConnector, column_list, db_error, sqlstate, table_columns};
use crate::airflow::catalog::{
    Catalog, RENUMBERED_COPY_TABLES, RestoreMode, TableSpec, quote_ident, quote_literal,
};
use crate::airflow::fernet::{
    ENCRYPTED_COLUMNS, EncryptedColumn, FernetMode, FernetPlan, Rekey, encrypted_columns,
};
use crate::error::{Error, Result};
use crate::model::RestoreStrategy;
use crate::store::BackupStore;
use crate::store::manifest::{Manifest, TableEntry};
use crate::store::stream::Digested;
use crate::store::verify::{
    TableObject, check_digest, check_stored, open_table_object, read_rest, verify_tables,
};

pub use super::load::PROTECTED_VARIABLES;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub clean: bool,
    pub variable_strategy: RestoreStrategy,
    pub connection_strategy: RestoreStrategy,
    /// Re-encrypt Fernet secrets for the target's key, or copy the ciphertext as it is.
    pub fernet: FernetPlan,
    /// Connections that load the copied tables into their shadow tables, before the
    /// transaction.
    pub jobs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    #[serde(flatten)]
    pub load: LoadReport,
    /// Restored job ids that collided with the target's kept jobs, and their new ids.
    pub renumbered_jobs: BTreeMap<i64, i64>,
    /// Restored dag_run ids that collided with the DR DAGs' kept runs, and their new ids; the
    /// references to them (`references` of the catalog) follow.
    pub renumbered_dag_runs: BTreeMap<i64, i64>,
    /// Rows of tables restored by key (`references` of the catalog) whose id in the target
    /// differs from the backup's, per table; the references to them follow.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub remapped_ids: BTreeMap<String, u64>,
    /// How Fernet ciphertext was treated.
    pub fernet: FernetMode,
    /// Values re-encrypted for the target's key, per `table.column`; empty when copied.
    pub rekeyed: BTreeMap<String, u64>,
    /// Columns the target has and the backup lacks (`table.column`) given the value of
    /// Airflow's migration (the catalog's `added_columns`) on every restored row.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub added_columns: BTreeMap<String, String>,
    /// Tables loaded into shadow tables over `jobs` connections before the transaction and
    /// made the live tables in it.
    pub switched: Vec<String>,
    /// Connections the shadow tables were loaded over (0: none was).
    pub jobs: usize,
    /// Seconds spent verifying, before the load, the objects the transaction reads (those
    /// loaded into shadow tables are checked as they stream).
    pub verify_seconds: f64,
    /// Seconds spent loading and indexing the shadow tables, the target readable throughout.
    pub shadow_load_seconds: f64,
    /// Seconds of the restore's transaction, from its first statement to its commit: how
    /// long the target's restored tables could be locked against Airflow.
    pub lock_window_seconds: f64,
    /// Seconds spent validating, after the commit, the foreign keys made again at a switch
    /// (no reader or writer waits for it).
    pub validate_seconds: f64,
    /// Foreign keys made again at a switch that the existing rows do not satisfy; they stay
    /// `NOT VALID` (enforced for new rows).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys_not_validated: Vec<String>,
}

extends_load_report!(RestoreReport, load);

/// The rows of a manifest backup: each table's zstd CSV object from the store, checked
/// against the manifest (checksum, size, rows) as it streams. A damaged object fails its
/// load with the checksum mismatch, whatever decompression or the COPY made of its bytes.
struct ManifestRows<'a> {
    manifest: &'a Manifest,
    store: &'a dyn BackupStore,
    /// What the last object sent was seen to hold, and its name: a refused COPY is explained
    /// by a damaged object first.
    last: Option<(Arc<Mutex<Digested>>, String)>,
    /// Rows written frozen (`COPY ... FREEZE`), into a table made in the same transaction.
    freeze: bool,
}

impl<'a> ManifestRows<'a> {
    fn new(manifest: &'a Manifest, store: &'a dyn BackupStore) -> Self {
        ManifestRows {
            manifest,
            store,
            last: None,
            freeze: false,
        }
    }
}

#[async_trait]
impl RowSource for ManifestRows<'_> {
    type Table = TableEntry;
    type Sent = TableObject;

    fn name<'t>(&self, entry: &'t TableEntry) -> &'t str {
        &entry.name
    }

    fn columns(&self, entry: &TableEntry) -> Vec<String> {
        entry.columns.clone()
    }

    fn options(&self) -> &'static str {
        if self.freeze {
            "FORMAT csv, HEADER MATCH, FREEZE"
        } else {
            "FORMAT csv, HEADER MATCH"
        }
    }

    async fn send(
        &mut self,
        entry: &TableEntry,
        copy: &mut PgCopyIn<&mut PgConnection>,
    ) -> Result<TableObject> {
        let mut object = open_table_object(self.store, self.manifest, entry).await?;
        let sent = copy.read_from(&mut object.csv).await;
        let whole = read_rest(&mut object).await;
        self.last = Some((object.stored.clone(), object.resource.clone()));
        if let Err(e) = sent {
            if whole {
                check_stored(&object, entry, "load")?;
            }
            return Err(Error::failed("load", &object.resource, e));
        }
        Ok(object)
    }

    fn check(&self, entry: &TableEntry, object: TableObject, rows: u64) -> Result<()> {
        // Nothing the load wrote counts before this check passes: a mismatch fails the
        // restore (its shadow tables dropped, its transaction rolled back).
        check_stored(&object, entry, "load")?;
        if rows != entry.rows {
            return Err(Error::failed(
                "load",
                &object.resource,
                format!("loaded {rows} rows, the manifest says {}", entry.rows),
            ));
        }
        Ok(())
    }

    async fn refused(&self, entry: &TableEntry, err: sqlx::Error) -> Error {
        if let Some((stored, resource)) = &self.last
            && let Err(damaged) = check_digest(stored, resource, entry, "load")
        {
            return damaged;
        }
        db_error("load", &entry.name, err)
    }
}

/// One table of the plan and what the target and the options decided for it.
struct TableLoad<'a> {
    spec: &'a TableSpec,
    entry: &'a TableEntry,
    /// (column, migration value): columns the target has and the backup lacks.
    added: Vec<(&'a str, &'a str)>,
    /// The variable or connection strategy when the table is one of those.
    strategy: Option<RestoreStrategy>,
    /// Secrets re-encrypted in the staging table, before they reach the real one.
    rekey: Option<&'a Rekey>,
    /// Straight into the (checked empty) table: no staging, no statements after the COPY,
    /// unless a table it refers to in `follows` got new ids.
    direct: bool,
    /// Copied tables it refers to (`references`) whose colliding restored rows may get new ids.
    follows: Vec<&'a str>,
    /// Later tables refer to its rows by id.
    referenced: bool,
}

impl TableLoad<'_> {
    /// The backup's columns, then the added ones the COPY leaves to their load defaults.
    fn written(&self) -> Vec<String> {
        self.entry
            .columns
            .iter()
            .cloned()
            .chain(self.added.iter().map(|(c, _)| c.to_string()))
            .collect()
    }

    fn stage(&self) -> String {
        quote_ident(&format!("mwaa_dr_stage_{}", self.spec.name))
    }

    /// The statements' key: the catalog's, a strategy table's natural key otherwise.
    fn key(&self) -> &[String] {
        &self.spec.key
    }
}

/// The server process ids of a restore's loading sessions, for an interrupted run to end.
pub type Sessions = Mutex<Vec<i32>>;

/// Restores on `conn`: the copied tables load into shadow tables over `options.jobs`
/// connections of `connector` first (the target untouched and readable), then one
/// transaction cleans, switches the shadow tables in, loads the other tables and commits.
/// Objects must have been verified.
#[allow(clippy::too_many_arguments)]
pub async fn restore(
    conn: &mut PgConnection,
    connector: &PgConnector,
    catalog: &Catalog,
    manifest: &Manifest,
    store: Arc<dyn BackupStore>,
    options: &RestoreOptions,
    progress: &dyn crate::progress::Progress,
    sessions: &Sessions,
) -> Result<RestoreReport> {
    let source = Source {
        catalog,
        manifest,
        store: store.as_ref(),
        options,
        progress,
    };
    let loads = plan_shadows(conn, &source).await?;
    // The objects loaded into shadow tables are checked as they stream (nothing of them
    // counts before the switch); the others are verified whole before the transaction reads
    // them, so that a damaged one never holds the target's tables.
    let shadowed: BTreeSet<&str> = loads.iter().map(|l| l.spec.name.as_str()).collect();
    let verified = Instant::now();
    verify_tables(store.clone(), manifest, |t| {
        !shadowed.contains(t.name.as_str())
    })
    .await?;
    let verify_seconds = verified.elapsed().as_secs_f64();
    info!(
        seconds = verify_seconds,
        objects = manifest.tables.len() - shadowed.len(),
        "objects the transaction reads verified"
    );
    let loading = Instant::now();
    let shadows = match load_shadows(conn, connector, &source, loads, sessions).await {
        Ok(shadows) => shadows,
        Err(e) => {
            let _ = shadow::drop_all(conn).await;
            return Err(e);
        }
    };
    let shadow_load_seconds = loading.elapsed().as_secs_f64();
    let mut result = transaction_retried(conn, &source, &shadows).await;
    if let Ok(report) = &mut result {
        report.verify_seconds = verify_seconds;
    }
    if !shadows.is_empty() {
        if let Ok(report) = &mut result {
            report.jobs = options.jobs.max(1);
            report.shadow_load_seconds = shadow_load_seconds;
            let validating = Instant::now();
            report.foreign_keys_not_validated = match shadow::validate_foreign_keys(
                conn,
                connector,
                &report.switched,
                options.jobs,
            )
            .await
            {
                Ok(failed) => failed,
                Err(e) => vec![e.to_string()],
            };
            report.validate_seconds = validating.elapsed().as_secs_f64();
            for failed in &report.foreign_keys_not_validated {
                tracing::warn!("foreign key not validated: {failed}");
            }
        }
        // What is left there went the transaction's other way; a failure to drop it is
        // repaired by the next restore.
        let _ = shadow::drop_all(conn).await;
    }
    result
}

/// How many times the restore's transaction runs when PostgreSQL ends it to break a deadlock
/// or a serialization failure with another session of the target (the standby's scheduler
/// holding a `dag` row the transaction unpauses while it reads a table being switched in).
const TRANSACTION_ATTEMPTS: u32 = 3;

/// [`transaction`], run again (after a short pause) when PostgreSQL chose it as the victim of
/// a deadlock or a serialization failure: it rolled back whole, and the shadow tables are
/// still loaded, so another attempt costs the transaction only.
async fn transaction_retried(
    conn: &mut PgConnection,
    source: &Source<'_>,
    shadows: &BTreeSet<String>,
) -> Result<RestoreReport> {
    let mut attempt = 1;
    loop {
        let result = transaction(conn, source, shadows).await;
        match &result {
            Err(e)
                if attempt < TRANSACTION_ATTEMPTS
                    && matches!(sqlstate(e).as_deref(), Some("40P01" | "40001")) =>
            {
                tracing::warn!(
                    attempt,
                    "the restore transaction was rolled back to resolve a conflict with another session ({e}); running it again"
                );
                tokio::time::sleep(std::time::Duration::from_millis(250 * u64::from(attempt)))
                    .await;
                attempt += 1;
            }
            _ => return result,
        }
    }
}

/// What a restore reads from.
struct Source<'a> {
    catalog: &'a Catalog,
    manifest: &'a Manifest,
    store: &'a dyn BackupStore,
    options: &'a RestoreOptions,
    progress: &'a dyn crate::progress::Progress,
}

impl Source<'_> {
    /// Steps the progress shows: each shadow load, then each table of the transaction.
    fn steps(&self, shadows: usize) -> usize {
        shadows
            + self
                .catalog
                .tables
                .iter()
                .filter(|t| self.manifest.table(&t.name).is_some())
                .count()
    }
}

/// One table loaded into its shadow.
struct ShadowLoad<'a> {
    spec: &'a TableSpec,
    entry: &'a TableEntry,
    /// (column, migration value): columns the target has and the backup lacks.
    added: Vec<(&'a str, &'a str)>,
}

/// The copied tables with rows that go through shadow tables (none when this session may not
/// replace the target's tables). Without `clean`, refuses a target table holding rows first.
async fn plan_shadows<'a>(
    conn: &mut PgConnection,
    source: &Source<'a>,
) -> Result<Vec<ShadowLoad<'a>>> {
    let mut loads = Vec::new();
    for spec in &source.catalog.tables {
        let Some(entry) = source.manifest.table(&spec.name) else {
            continue;
        };
        if spec.restore != RestoreMode::Copy || entry.rows == 0 {
            continue;
        }
        let Some(target_cols) = table_columns(conn, &spec.name).await? else {
            continue;
        };
        if entry.columns.iter().any(|c| !target_cols.contains(c)) {
            // The transaction refuses it, naming the column.
            continue;
        }
        if !source.options.clean {
            let keep = source.catalog.keep_condition(spec, &target_cols);
            ensure_empty(conn, &spec.name, keep.as_deref()).await?;
        }
        loads.push(ShadowLoad {
            spec,
            entry,
            added: spec.added_values(&target_cols, &entry.columns),
        });
    }
    let listed: Vec<String> = loads.iter().map(|l| l.spec.name.clone()).collect();
    if loads.is_empty() || !shadow::can_replace(conn, &listed).await? {
        return Ok(Vec::new());
    }
    Ok(loads)
}

/// Loads `loads` into their shadow tables over the option's connections and builds their
/// indexes and constraints; returns the tables loaded.
async fn load_shadows(
    conn: &mut PgConnection,
    connector: &PgConnector,
    source: &Source<'_>,
    loads: Vec<ShadowLoad<'_>>,
    sessions: &Sessions,
) -> Result<BTreeSet<String>> {
    let names: BTreeSet<String> = loads.iter().map(|l| l.spec.name.clone()).collect();
    if loads.is_empty() {
        return Ok(names);
    }
    shadow::lock_restores(conn, connector.describe()).await?;
    shadow::reset(conn).await?;
    let workers = source.options.jobs.max(1);
    let steps = source.steps(loads.len());
    let work = ShadowWork::new(loads);
    let running = (0..workers).map(|_| shadow_worker(connector, source, &work, steps, sessions));
    futures::future::try_join_all(running).await?;
    info!(tables = names.len(), workers, "shadow tables loaded");
    Ok(names)
}

/// What one loading connection does next.
enum ShadowStep {
    /// Create the shadow of table `.0` (an index into the loads) and COPY its rows in.
    Load(usize),
    /// Build one index of a loaded shadow table.
    Index(usize, String),
    /// Once its indexes exist: its constraints, ANALYZE; the table is then ready.
    Finish(usize),
}

/// The shadow load's steps: every table's load, then, as each load ends, each of its
/// indexes, then its constraints. The connections take the longest step left first
/// (estimated from the table's CSV size), as `pg_restore -j` spreads its items, so that no
/// connection is left with a large table's load or index while the others wait.
struct ShadowWork<'a> {
    loads: Vec<ShadowLoad<'a>>,
    state: Mutex<WorkState>,
    /// Rung when a step ends (it may have made others ready) or fails.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct WorkState {
    /// (estimated cost, step), taken largest cost first.
    ready: Vec<(u64, ShadowStep)>,
    /// Steps being done.
    running: usize,
    /// Per table: indexes not built yet, constraints, rows loaded.
    tables: BTreeMap<usize, (usize, Vec<String>, u64)>,
    failed: bool,
}

impl<'a> ShadowWork<'a> {
    fn new(loads: Vec<ShadowLoad<'a>>) -> Self {
        let ready = loads
            .iter()
            .enumerate()
            .map(|(i, l)| (l.entry.csv_bytes, ShadowStep::Load(i)))
            .collect();
        ShadowWork {
            loads,
            state: Mutex::new(WorkState {
                ready,
                ..WorkState::default()
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The next step, waiting while the running ones may still make some ready; `None`
    /// when everything is done or another connection failed.
    async fn next(&self) -> Option<ShadowStep> {
        loop {
            let changed = self.changed.notified();
            {
                let mut state = self.state.lock().ok()?;
                if state.failed {
                    return None;
                }
                if let Some(at) = (0..state.ready.len()).max_by_key(|&i| state.ready[i].0) {
                    state.running += 1;
                    return Some(state.ready.swap_remove(at).1);
                }
                if state.running == 0 {
                    return None;
                }
            }
            changed.await;
        }
    }

    /// Records the end of `step`; returns the table it made ready (its rows) if any.
    fn done(&self, step: ShadowStep, build: Option<(ShadowBuild, u64)>) -> Option<(usize, u64)> {
        let mut finished = None;
        if let Ok(mut state) = self.state.lock() {
            state.running -= 1;
            let table = match step {
                ShadowStep::Load(table) => {
                    let (build, rows) = build.unwrap_or_default();
                    let cost = self.loads[table].entry.csv_bytes;
                    let pending = build.indexes.len();
                    for sql in build.indexes {
                        state.ready.push((cost / 4, ShadowStep::Index(table, sql)));
                    }
                    state
                        .tables
                        .insert(table, (pending, build.constraints, rows));
                    Some(table)
                }
                ShadowStep::Index(table, _) => {
                    if let Some(t) = state.tables.get_mut(&table) {
                        t.0 = t.0.saturating_sub(1);
                    }
                    Some(table)
                }
                ShadowStep::Finish(table) => {
                    finished = state.tables.get(&table).map(|t| (table, t.2));
                    None
                }
            };
            if let Some(table) = table
                && state.tables.get(&table).is_some_and(|t| t.0 == 0)
            {
                let cost = self.loads[table].entry.csv_bytes;
                state.ready.push((cost / 8, ShadowStep::Finish(table)));
            }
        }
        self.changed.notify_waiters();
        finished
    }

    fn fail(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.failed = true;
        }
        self.changed.notify_waiters();
    }

    fn constraints(&self, table: usize) -> Vec<String> {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.tables.get(&table).map(|t| t.1.clone()))
            .unwrap_or_default()
    }
}

/// One loading connection: takes the next step until none is left.
async fn shadow_worker(
    connector: &PgConnector,
    source: &Source<'_>,
    work: &ShadowWork<'_>,
    steps: usize,
    sessions: &Sessions,
) -> Result<()> {
    let result = shadow_steps(connector, source, work, steps, sessions).await;
    if result.is_err() {
        work.fail();
    }
    result
}

async fn shadow_steps(
    connector: &PgConnector,
    source: &Source<'_>,
    work: &ShadowWork<'_>,
    steps: usize,
    sessions: &Sessions,
) -> Result<()> {
    let mut conn = connector.connect().await?;
    let pid = super::backend_pid(&mut conn, connector.describe()).await?;
    if let Ok(mut pids) = sessions.lock() {
        pids.push(pid);
    }
    // The shadow tables count only once the restore's transaction commits, which is durable
    // and flushes their writes before it: their own commits need not wait for the disk.
    for sql in [
        "SET synchronous_commit = off",
        "SET maintenance_work_mem = '256MB'",
    ] {
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .map_err(|e| db_error("configure", "restore", e))?;
    }
    let mut rows = ManifestRows::new(source.manifest, source.store);
    rows.freeze = true;
    while let Some(step) = work.next().await {
        let built = match &step {
            ShadowStep::Load(table) => {
                let load = &work.loads[*table];
                let name = &load.spec.name;
                source.progress.start(name, *table, steps);
                source.progress.advance(name, load.entry.csv_bytes);
                Some(load_shadow(&mut conn, load, &mut rows).await?)
            }
            ShadowStep::Index(table, sql) => {
                let name = &work.loads[*table].spec.name;
                let started = Instant::now();
                run_all(&mut conn, std::slice::from_ref(sql), name).await?;
                info!(table = %name, seconds = started.elapsed().as_secs_f64(), index = %sql, "shadow index built");
                None
            }
            ShadowStep::Finish(table) => {
                let name = &work.loads[*table].spec.name;
                let started = Instant::now();
                let mut statements = work.constraints(*table);
                statements.push(format!("ANALYZE {}", shadow::shadow_of(name)));
                run_all(&mut conn, &statements, name).await?;
                info!(table = %name, seconds = started.elapsed().as_secs_f64(), "shadow constraints added, analyzed");
                None
            }
        };
        if let Some((table, loaded)) = work.done(step, built) {
            source.progress.finish(&work.loads[table].spec.name, loaded);
            crate::failpoint::reach_raced("restore.shadow_loaded").await?;
        }
    }
    Ok(())
}

async fn run_all(conn: &mut PgConnection, statements: &[String], table: &str) -> Result<()> {
    for sql in statements {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("build shadow table", table, e))?;
    }
    Ok(())
}

/// Creates the shadow of one table and loads it; returns what builds its indexes and
/// constraints, and the rows loaded.
#[instrument(skip_all, fields(table = %load.spec.name))]
async fn load_shadow(
    conn: &mut PgConnection,
    load: &ShadowLoad<'_>,
    rows_source: &mut ManifestRows<'_>,
) -> Result<(ShadowBuild, u64)> {
    let name = &load.spec.name;
    let started = Instant::now();
    // Made and filled in one transaction, the rows are written frozen: the index builds and
    // ANALYZE that read them next, and any later VACUUM, have nothing to write back.
    run_all(conn, &["BEGIN".to_string()], name).await?;
    shadow::create(conn, name).await?;
    let dest = shadow::shadow_of(name);
    let mut previous = Vec::new();
    for (column, _) in &load.added {
        previous.push(column_default(conn, name, column).await?);
    }
    let (set, reset) = load_defaults(&dest, &load.added, &previous);
    run_all(conn, &set, name).await?;
    let rows = copy_rows(conn, &dest, rows_source, load.entry).await?;
    run_all(conn, &reset, name).await?;
    run_all(conn, &["COMMIT".to_string()], name).await?;
    let build = shadow::build_statements(conn, name).await?;
    info!(
        rows,
        load_seconds = started.elapsed().as_secs_f64(),
        indexes = build.indexes.len(),
        "shadow table loaded"
    );
    Ok((build, rows))
}

impl RestoreReport {
    /// The report of a transaction that has cleaned `cleaned` and loaded nothing yet.
    fn started(cleaned: Vec<crate::db::cleanup::TableCount>, fernet: &FernetPlan) -> RestoreReport {
        RestoreReport {
            load: LoadReport {
                cleaned,
                ..LoadReport::default()
            },
            renumbered_jobs: BTreeMap::new(),
            renumbered_dag_runs: BTreeMap::new(),
            remapped_ids: BTreeMap::new(),
            fernet: fernet.mode(),
            rekeyed: match fernet {
                FernetPlan::Reencrypt(_) => {
                    ENCRYPTED_COLUMNS.iter().map(|c| (c.name(), 0)).collect()
                }
                FernetPlan::Copy(_) => BTreeMap::new(),
            },
            added_columns: BTreeMap::new(),
            switched: Vec::new(),
            jobs: 0,
            verify_seconds: 0.0,
            shadow_load_seconds: 0.0,
            validate_seconds: 0.0,
            lock_window_seconds: 0.0,
            foreign_keys_not_validated: Vec::new(),
        }
    }
}

/// The restore's transaction: cleanup, each table (shadow tables switched in, the others
/// loaded), job references, sequences, unpause, commit. Returns its report with the
/// transaction's duration.
async fn transaction(
    conn: &mut PgConnection,
    source: &Source<'_>,
    shadows: &BTreeSet<String>,
) -> Result<RestoreReport> {
    let (catalog, manifest, options, progress) = (
        source.catalog,
        source.manifest,
        source.options,
        source.progress,
    );
    let window = Instant::now();
    let mut tx = open(conn).await?;
    let carried = if options.clean {
        carried_tables(&mut tx, catalog, options, shadows).await?
    } else {
        BTreeSet::new()
    };
    let cleaned = if options.clean {
        clean_up(&mut tx, catalog, &carried).await?
    } else {
        Vec::new()
    };
    let mut report = RestoreReport::started(cleaned, &options.fernet);
    let plan = plan_tables(&mut tx, catalog, manifest, options, &carried).await?;
    if let Some(extra) = manifest
        .tables
        .iter()
        .find(|t| catalog.table(&t.name).is_none())
    {
        report.skipped.push(extra.name.clone());
    }
    let mut rows_source = ManifestRows::new(manifest, source.store);
    let total = source.steps(shadows.len());
    for (index, load) in plan.iter().enumerate() {
        let name = &load.spec.name;
        let shadowed = shadows.contains(name);
        progress.start(name, shadows.len() + index, total);
        if !shadowed {
            progress.advance(name, load.entry.csv_bytes);
        }
        if load.strategy == Some(RestoreStrategy::DoNothing) {
            progress.finish(name, 0);
            report.skipped.push(name.clone());
            continue;
        }
        let carry_live = !carried.contains(name);
        let rows = load_table(
            &mut tx,
            load,
            shadowed,
            carry_live,
            &mut rows_source,
            &mut report,
        )
        .await?;
        progress.finish(name, rows);
        report.loaded(name, rows);
        if report.loaded.len() == 1 {
            crate::failpoint::reach_raced("restore.table_loaded").await?;
        }
    }
    if !report.renumbered_jobs.is_empty() {
        let loaded: Vec<&str> = report.loaded.iter().map(|t| t.table.as_str()).collect();
        rewrite_job_references(&mut tx, catalog, &report.renumbered_jobs, &loaded).await?;
    }
    super::load::finish(tx, &mut report.load, &manifest.active_dags).await?;
    report.lock_window_seconds = window.elapsed().as_secs_f64();
    info!(
        seconds = report.lock_window_seconds,
        switched = report.switched.len(),
        "restore transaction committed"
    );
    Ok(report)
}

/// The shadow tables a clean restore switches in whole whatever the transaction finds: plain
/// copies (not `job`, whose ids may collide with the target's running jobs) without Fernet
/// secrets to re-encrypt or references to follow, and, for a table whose restored ids could
/// collide with the rows cleanup keeps, none kept. Cleanup copies their kept rows into the
/// shadow instead of deleting the others (`cleanup`).
async fn carried_tables(
    conn: &mut PgConnection,
    catalog: &Catalog,
    options: &RestoreOptions,
    shadows: &BTreeSet<String>,
) -> Result<BTreeSet<String>> {
    let referenced = catalog.referenced_tables();
    let mut carried = BTreeSet::new();
    for spec in catalog.tables.iter().filter(|t| shadows.contains(&t.name)) {
        let rekeyed =
            options.fernet.rekey().is_some() && encrypted_columns(&spec.name).next().is_some();
        if spec.restore != RestoreMode::Copy
            || spec.name == "job"
            || rekeyed
            || !spec.references.is_empty()
        {
            continue;
        }
        if referenced.contains(spec.name.as_str()) || spec.name == "log" {
            let columns = table_columns(conn, &spec.name).await?.unwrap_or_default();
            if let Some(keep) = catalog.keep_condition(spec, &columns) {
                let kept: bool = sqlx::query_scalar(&format!(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE ({keep}) IS TRUE)",
                    quote_ident(&spec.name)
                ))
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| db_error("inspect", &spec.name, e))?;
                if kept {
                    continue;
                }
            }
        }
        carried.insert(spec.name.clone());
    }
    Ok(carried)
}

/// The manifest's tables in catalog order, each checked to fit the target first: the table
/// and every column of the backup exist, a table restored as a copy is empty (but for the
/// `carried` ones, which a shadow table replaces whole).
async fn plan_tables<'a>(
    conn: &mut PgConnection,
    catalog: &'a Catalog,
    manifest: &'a Manifest,
    options: &'a RestoreOptions,
    carried: &BTreeSet<String>,
) -> Result<Vec<TableLoad<'a>>> {
    let referenced = catalog.referenced_tables();
    let mut plan = Vec::new();
    for spec in &catalog.tables {
        let Some(entry) = manifest.table(&spec.name) else {
            continue;
        };
        let Some(target_cols) = table_columns(conn, &spec.name).await? else {
            return Err(Error::failed(
                "restore",
                &spec.name,
                "the backup has this table but the target database does not",
            ));
        };
        if let Some(missing) = entry.columns.iter().find(|c| !target_cols.contains(c)) {
            return Err(Error::failed(
                "restore",
                &spec.name,
                format!(
                    "column {missing} of the backup does not exist in the target (is the target an older Airflow version?)"
                ),
            ));
        }
        let carry = carried.contains(&spec.name);
        if spec.restore == RestoreMode::Copy && !carry {
            let keep = catalog.keep_condition(spec, &target_cols);
            ensure_empty(conn, &spec.name, keep.as_deref()).await?;
        }
        let rekey = options
            .fernet
            .rekey()
            .filter(|_| encrypted_columns(&spec.name).next().is_some());
        let is_referenced = referenced.contains(spec.name.as_str());
        // Restored rows can only collide with rows the target keeps: without any, the table
        // loads straight in as every other copy does.
        let renumbered = spec.restore == RestoreMode::Copy
            && (is_referenced || spec.name == "log")
            && !carry
            && holds_rows(conn, &spec.name).await?;
        let follows: Vec<&str> = spec
            .references
            .values()
            .map(String::as_str)
            .filter(|t| RENUMBERED_COPY_TABLES.contains(t))
            .collect();
        plan.push(TableLoad {
            spec,
            entry,
            added: spec.added_values(&target_cols, &entry.columns),
            strategy: strategy_of(spec, options),
            rekey,
            direct: spec.restore == RestoreMode::Copy
                && spec.name != "job"
                && !renumbered
                && rekey.is_none()
                && spec.references.len() == follows.len(),
            follows,
            referenced: is_referenced,
        });
    }
    Ok(plan)
}

/// Whether `table` holds any row (before a copy's load: the rows the restore keeps).
async fn holds_rows(conn: &mut PgConnection, table: &str) -> Result<bool> {
    sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM {})",
        quote_ident(table)
    ))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error("inspect", table, e))
}

/// The variable or connection strategy when `spec` is one of those tables.
fn strategy_of(spec: &TableSpec, options: &RestoreOptions) -> Option<RestoreStrategy> {
    match spec.name.as_str() {
        "variable" => Some(options.variable_strategy),
        "connection" => Some(options.connection_strategy),
        _ => None,
    }
}

/// The temporary table mapping a table's restored ids (backup's -> target's).
fn id_map(table: &str) -> String {
    quote_ident(&format!("mwaa_dr_ids_{table}"))
}

/// Loads one table: a plain copy loaded into its shadow (`shadowed`) is switched in whole
/// (with `carry_live`, taking the rows the live table still holds), one without a shadow
/// goes straight into the table; any other is staged (from its shadow when it has one) and
/// goes through the statements of its mode. Returns the rows written.
#[instrument(skip_all, fields(table = %load.spec.name))]
async fn load_table(
    conn: &mut PgConnection,
    load: &TableLoad<'_>,
    shadowed: bool,
    carry_live: bool,
    rows_source: &mut ManifestRows<'_>,
    report: &mut RestoreReport,
) -> Result<u64> {
    let table = quote_ident(&load.spec.name);
    let direct = load.direct && load.follows.iter().all(|t| !renumbered(report, t));
    if !(carry_live || direct && shadowed) {
        // carried_tables chose only tables that are switched in whole.
        return Err(Error::failed(
            "restore",
            &load.spec.name,
            "cleanup left this table to its shadow table, which cannot replace it",
        ));
    }
    if direct && shadowed {
        return switch_in(conn, load, carry_live, report).await;
    }
    let dest = if direct {
        table.clone()
    } else {
        sqlx::query(&format!(
            "CREATE TEMP TABLE {} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP",
            load.stage()
        ))
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("stage", &load.spec.name, e))?;
        load.stage()
    };
    // A plain load goes into a table that is empty (checked above): dropping its secondary
    // indexes and building them once after the COPY is much faster than updating them row by
    // row. Inside the transaction, so a failure brings them back untouched.
    let dropped = if direct {
        drop_secondary_indexes(conn, &load.spec.name).await?
    } else {
        Vec::new()
    };
    let reset = set_added_defaults(conn, load, direct, &dest, report).await?;
    let rows = if shadowed {
        // Checked against the manifest when the shadow was loaded.
        let columns = column_list(&load.written());
        sqlx::query(&format!(
            "INSERT INTO {dest} ({columns}) SELECT {columns} FROM {}",
            shadow::shadow_of(&load.spec.name)
        ))
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("load", &load.spec.name, e))?
        .rows_affected()
    } else {
        copy_rows(conn, &dest, rows_source, load.entry).await?
    };
    for sql in reset {
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("restore column default", &load.spec.name, e))?;
    }
    if direct {
        for (name, definition) in &dropped {
            sqlx::query(definition)
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error("rebuild index", name, e))?;
        }
        info!(rows, indexes = dropped.len(), "loaded");
        return Ok(rows);
    }
    let affected = merge_staged(conn, load, report).await?;
    info!(rows, affected, "loaded");
    Ok(affected)
}

/// Makes the loaded shadow of a plainly copied table the live table (`carry_live`: with the
/// rows the live table still holds). Returns the rows the backup gave it.
async fn switch_in(
    conn: &mut PgConnection,
    load: &TableLoad<'_>,
    carry_live: bool,
    report: &mut RestoreReport,
) -> Result<u64> {
    let kept = shadow::switch(conn, &load.spec.name, carry_live).await?;
    for (column, value) in &load.added {
        report
            .added_columns
            .insert(format!("{}.{column}", load.spec.name), value.to_string());
    }
    report.switched.push(load.spec.name.clone());
    info!(rows = load.entry.rows, kept, "shadow table switched in");
    Ok(load.entry.rows)
}

/// The COPY fills the added columns from their defaults: for the load they are the
/// migration's values (a NOT NULL column without a default would refuse every row). DDL
/// inside the transaction, so a failure puts the target's defaults back with the rest.
/// Returns the statements that put the target's defaults back after the COPY.
async fn set_added_defaults(
    conn: &mut PgConnection,
    load: &TableLoad<'_>,
    direct: bool,
    dest: &str,
    report: &mut RestoreReport,
) -> Result<Vec<String>> {
    if load.added.is_empty() {
        return Ok(Vec::new());
    }
    let name = &load.spec.name;
    let mut previous = Vec::new();
    if direct {
        for (column, _) in &load.added {
            previous.push(column_default(conn, name, column).await?);
        }
    }
    let (set, reset) = load_defaults(dest, &load.added, &previous);
    for sql in set {
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("set load default", name, e))?;
    }
    for (column, value) in &load.added {
        report
            .added_columns
            .insert(format!("{name}.{column}"), value.to_string());
    }
    info!(columns = ?load.added, "added columns get the migration's values");
    // A staging table is dropped at commit with its defaults.
    Ok(if direct { reset } else { Vec::new() })
}

/// From the staging table into the real one: references follow the target's ids, secrets
/// are re-encrypted, the mode's statements run, and the ids of a referenced table are mapped.
/// Returns the rows the last statement wrote.
async fn merge_staged(
    conn: &mut PgConnection,
    load: &TableLoad<'_>,
    report: &mut RestoreReport,
) -> Result<u64> {
    let spec = load.spec;
    let stage = load.stage();
    for (column, referenced_table) in &spec.references {
        remap_staged(
            conn,
            &stage,
            &spec.name,
            column,
            referenced_table,
            &load.entry.columns,
        )
        .await?;
    }
    if let Some(rekey) = load.rekey {
        // Only the rows the statements below write: APPEND skips the target's keys.
        let append = matches!(
            (spec.restore, load.strategy),
            (RestoreMode::MissingRows, _) | (RestoreMode::Strategy, Some(RestoreStrategy::Append))
        );
        let written = written_rows(&spec.name, load.key(), append);
        for column in encrypted_columns(&spec.name) {
            let count =
                rekey_staged(conn, &stage, &written, column, &load.entry.columns, rekey).await?;
            *report.rekeyed.entry(column.name()).or_default() += count;
        }
    }
    if spec.restore == RestoreMode::Copy && spec.name == "job" {
        renumber_colliding(conn, "job", &stage, &mut report.renumbered_jobs).await?;
    }
    if spec.restore == RestoreMode::Copy && spec.name == "log" {
        // The DR run's own event log rows (kept under their ids from the target's sequence)
        // collide with the backup's; nothing refers to a log row, so restored ones just move.
        renumber_colliding(conn, "log", &stage, &mut BTreeMap::new()).await?;
    }
    if spec.restore == RestoreMode::Copy && spec.name == "dag_run" {
        renumber_colliding(conn, "dag_run", &stage, &mut report.renumbered_dag_runs).await?;
        map_renumbered(conn, "dag_run", &report.renumbered_dag_runs).await?;
    }
    let mut affected = 0;
    for sql in mode_statements(load) {
        affected = sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("restore", &spec.name, e))?
            .rows_affected();
    }
    if load.referenced
        && spec.restore != RestoreMode::Copy
        && load.entry.columns.iter().any(|c| c == "id")
        && !spec.key.is_empty()
    {
        map_ids(conn, load, report).await?;
    }
    Ok(affected)
}

/// Staged ids of `table` that rows the target keeps hold (its live jobs, the DR DAGs' runs)
/// get new ids past both, into `renumbered`: the kept rows are in use under their ids.
async fn renumber_colliding(
    conn: &mut PgConnection,
    table: &str,
    stage: &str,
    renumbered: &mut BTreeMap<i64, i64>,
) -> Result<()> {
    let target = quote_ident(table);
    let collisions: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT s.id::bigint FROM {stage} s JOIN {target} d ON d.id = s.id ORDER BY s.id"
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("inspect", table, e))?;
    if collisions.is_empty() {
        return Ok(());
    }
    let top: i64 = sqlx::query_scalar(&format!(
        "SELECT GREATEST((SELECT COALESCE(max(id), 0) FROM {stage}), (SELECT COALESCE(max(id), 0) FROM {target}))::bigint"
    ))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error("inspect", table, e))?;
    for (i, old) in collisions.iter().enumerate() {
        let new = top + 1 + i as i64;
        renumbered.insert(*old, new);
        sqlx::query(&format!(
            "UPDATE {stage} SET id = $1::int WHERE id = $2::int"
        ))
        .bind(new)
        .bind(*old)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("renumber", table, e))?;
    }
    info!(
        table,
        renumbered = collisions.len(),
        "restored ids moved past the kept rows"
    );
    Ok(())
}

/// The id map of `table` (as `map_ids` leaves for tables restored by key) from its
/// `renumbered` ids, for the references of later tables to follow; none when nothing moved.
async fn map_renumbered(
    conn: &mut PgConnection,
    table: &str,
    renumbered: &BTreeMap<i64, i64>,
) -> Result<()> {
    if renumbered.is_empty() {
        return Ok(());
    }
    let (old, new): (Vec<i64>, Vec<i64>) = renumbered.iter().map(|(o, n)| (*o, *n)).unzip();
    sqlx::query(&format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT old_id, new_id FROM unnest($1::bigint[], $2::bigint[]) AS m(old_id, new_id)",
        id_map(table)
    ))
    .bind(&old)
    .bind(&new)
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("map ids", table, e))?;
    Ok(())
}

/// Whether the restored ids of the copied table `table` moved (`renumber_colliding`).
fn renumbered(report: &RestoreReport, table: &str) -> bool {
    match table {
        "dag_run" => !report.renumbered_dag_runs.is_empty(),
        _ => false,
    }
}

/// The statements that write the staged rows of `load` into its table, by its mode.
fn mode_statements(load: &TableLoad<'_>) -> Vec<String> {
    let spec = load.spec;
    let table = quote_ident(&spec.name);
    let stage = load.stage();
    let written = load.written();
    // Columns whose values the target owns (ids not kept outside Copy mode).
    let without_id: Vec<String> = written
        .iter()
        .filter(|c| *c != "id" || spec.key.iter().any(|k| k == "id"))
        .cloned()
        .collect();
    let by_key = |strategy| {
        strategy_statements(
            &StrategyLoad {
                table: &spec.name,
                stage: &stage,
                key: load.key(),
                columns: &without_id,
                tail: "",
            },
            strategy,
        )
    };
    match (spec.restore, load.strategy) {
        (RestoreMode::Copy, _) => {
            let cols = column_list(&written);
            vec![format!(
                "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}"
            )]
        }
        (RestoreMode::MissingRows, _) => by_key(RestoreStrategy::Append),
        (RestoreMode::Strategy, strategy) => by_key(strategy.unwrap_or(RestoreStrategy::Replace)),
        (RestoreMode::Merge, _) => {
            let select: Vec<String> = without_id
                .iter()
                .map(|c| format!("s.{}", quote_ident(c)))
                .collect();
            let updated: Vec<String> = without_id
                .iter()
                .filter(|c| !spec.key.contains(c))
                .cloned()
                .collect();
            vec![merge_statement(&MergeLoad {
                table: &spec.name,
                stage: &stage,
                key: &spec.key,
                columns: &without_id,
                select: &select,
                updated: &updated,
                order: "",
            })]
        }
    }
}

/// Later tables refer to these rows by id: map the backup's ids to the target's (a row the
/// target already had by key keeps the target's id; an added one got a new id).
async fn map_ids(
    conn: &mut PgConnection,
    load: &TableLoad<'_>,
    report: &mut RestoreReport,
) -> Result<()> {
    let name = &load.spec.name;
    sqlx::query(&format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT s.id AS old_id, d.id AS new_id FROM {} s JOIN {} d ON {}",
        id_map(name),
        load.stage(),
        quote_ident(name),
        key_match(load.key())
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("map ids", name, e))?;
    let moved: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {} WHERE old_id IS DISTINCT FROM new_id",
        id_map(name)
    ))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error("map ids", name, e))?;
    if moved > 0 {
        report
            .remapped_ids
            .insert(name.clone(), u64::try_from(moved).unwrap_or(0));
    }
    Ok(())
}

/// Rewrites `column` of the staging table `stage` (quoted) from the backup's ids of
/// `referenced` to the ids those rows have in the target (the map its restore left).
async fn remap_staged(
    conn: &mut PgConnection,
    stage: &str,
    table: &str,
    column: &str,
    referenced: &str,
    backup_columns: &[String],
) -> Result<()> {
    if !backup_columns.iter().any(|c| c == column) {
        return Ok(());
    }
    let mapped: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("pg_temp.{}", id_map(referenced)))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("inspect", table, e))?;
    if !mapped {
        // The referenced table was not restored: its ids in the target are what they are.
        return Ok(());
    }
    let column = quote_ident(column);
    let updated = sqlx::query(&format!(
        "UPDATE {stage} s SET {column} = m.new_id FROM {} m WHERE s.{column} = m.old_id AND m.old_id IS DISTINCT FROM m.new_id",
        id_map(referenced)
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("map ids", table, e))?
    .rows_affected();
    info!(column = %column, referenced, updated, "references follow the target's ids");
    Ok(())
}

/// Re-encrypts `column` in the staging table `stage` (quoted, aliased `s` in `written`) from
/// the source key to the target key, in the rows `written` selects that hold ciphertext.
/// A value the source keys cannot decrypt fails the restore, naming its row.
#[instrument(skip_all, fields(table = column.table, column = column.column))]
async fn rekey_staged(
    conn: &mut PgConnection,
    stage: &str,
    written: &str,
    column: &EncryptedColumn,
    backup_columns: &[String],
    rekey: &Rekey,
) -> Result<u64> {
    let has = |name: &str| backup_columns.iter().any(|c| c == name);
    if !has(column.column) || !has(column.key) || column.flag.is_some_and(|f| !has(f)) {
        return Ok(0);
    }
    let value = quote_ident(column.column);
    let key = quote_ident(column.key);
    if column.json_is_plain {
        // Before Airflow 2.9 trigger.kwargs is json and never encrypted.
        let kind: Option<String> = sqlx::query_scalar(
            "SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped",
        )
        .bind(stage)
        .bind(column.column)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_error("inspect", column.table, e))?;
        if kind.as_deref() != Some("text") {
            return Ok(0);
        }
    }
    let flag = column
        .flag
        .map(|f| format!(" AND s.{} IS TRUE", quote_ident(f)))
        .unwrap_or_default();
    let rows: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT s.{key}::text, s.{value}::text FROM {stage} s WHERE ({written}) AND s.{value} IS NOT NULL AND s.{value}::text <> ''{flag}"
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("read secrets", column.table, e))?;
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for (row, ciphertext) in rows {
        if column.json_is_plain && ciphertext.starts_with('{') {
            continue;
        }
        let reencrypted = rekey.reencrypt(&ciphertext).map_err(|e| {
            Error::failed(
                "re-encrypt",
                format!("{} {}={row}", column.table, column.key),
                format!(
                    "{} cannot be decrypted with the source Fernet keys (PRIMARY_FERNET_KEY, else AIRFLOW__CORE__FERNET_KEY): {e}; nothing was restored (add the key it was encrypted with to the source's key list)",
                    column.column
                ),
            )
        })?;
        keys.push(row);
        values.push(reencrypted);
    }
    if !keys.is_empty() {
        sqlx::query(&format!(
            "UPDATE {stage} s SET {value} = u.v FROM unnest($1::text[], $2::text[]) AS u(k, v) WHERE s.{key}::text = u.k"
        ))
        .bind(&keys)
        .bind(&values)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("re-encrypt", column.table, e))?;
    }
    info!(values = keys.len(), "re-encrypted");
    Ok(keys.len() as u64)
}

/// The default expression of `column` of `table`, if it has one.
async fn column_default(
    conn: &mut PgConnection,
    table: &str,
    column: &str,
) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
    )
    .bind(quote_ident(table))
    .bind(column)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| db_error("inspect defaults", table, e))
    .map(Option::flatten)
}

/// The statements that make each (column, migration value) of `added` the default of
/// `dest` (quoted) for the load, and those that put back the `previous` defaults (by
/// position; a missing or `None` one is dropped).
fn load_defaults(
    dest: &str,
    added: &[(&str, &str)],
    previous: &[Option<String>],
) -> (Vec<String>, Vec<String>) {
    let mut set = Vec::new();
    let mut reset = Vec::new();
    for (i, (column, value)) in added.iter().enumerate() {
        let alter = format!("ALTER TABLE {dest} ALTER COLUMN {}", quote_ident(column));
        // A quoted literal takes the column's type, so the catalog holds values, never SQL.
        set.push(format!("{alter} SET DEFAULT {}", quote_literal(value)));
        reset.push(match previous.get(i).cloned().flatten() {
            Some(expression) => format!("{alter} SET DEFAULT {expression}"),
            None => format!("{alter} DROP DEFAULT"),
        });
    }
    (set, reset)
}

/// References to job ids without foreign keys, in the restored tables (`loaded`), follow
/// renumbered jobs. Only restored rows: the rows a restore keeps (the DR run's own task
/// instance, whose job is the target's) already point at the target's jobs, and Airflow is
/// updating them while the restore runs (rewriting them would repoint them at a restored job,
/// and wait on Airflow's row locks while Airflow waits on the restore's table locks).
async fn rewrite_job_references(
    conn: &mut PgConnection,
    catalog: &Catalog,
    renumbered: &BTreeMap<i64, i64>,
    loaded: &[&str],
) -> Result<()> {
    for (table, column) in job_references(conn, loaded).await? {
        let restored_only = match catalog.table(table) {
            Some(spec) => {
                let columns = table_columns(conn, table).await?.unwrap_or_default();
                catalog
                    .keep_condition(spec, &columns)
                    .map(|keep| format!(" AND ({keep}) IS NOT TRUE"))
                    .unwrap_or_default()
            }
            None => String::new(),
        };
        for (old, new) in renumbered {
            sqlx::query(&format!(
                "UPDATE {} SET {1} = $1::int WHERE {1} = $2::int{restored_only}",
                quote_ident(table),
                quote_ident(column)
            ))
            .bind(new)
            .bind(old)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("renumber job references", table, e))?;
        }
    }
    Ok(())
}

/// Drops the indexes of `table` that no constraint owns (primary keys, unique constraints and
/// what foreign keys rely on stay); returns (name, CREATE INDEX statement) to rebuild them.
async fn drop_secondary_indexes(
    conn: &mut PgConnection,
    table: &str,
) -> Result<Vec<(String, String)>> {
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         WHERE i.indrelid = to_regclass($1) \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
    )
    .bind(quote_ident(table))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("inspect indexes", table, e))?;
    for (name, _) in &indexes {
        sqlx::query(&format!("DROP INDEX {name}"))
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("drop index for the load", name, e))?;
    }
    Ok(indexes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_columns_default_to_the_migrations_value_for_the_load_only() {
        let (set, reset) = load_defaults(
            "\"slot_pool\"",
            &[("include_deferred", "false"), ("clear_number", "0")],
            &[None, Some("0".into())],
        );
        assert_eq!(
            set,
            vec![
                "ALTER TABLE \"slot_pool\" ALTER COLUMN \"include_deferred\" SET DEFAULT 'false'",
                "ALTER TABLE \"slot_pool\" ALTER COLUMN \"clear_number\" SET DEFAULT '0'",
            ]
        );
        assert_eq!(
            reset,
            vec![
                "ALTER TABLE \"slot_pool\" ALTER COLUMN \"include_deferred\" DROP DEFAULT",
                "ALTER TABLE \"slot_pool\" ALTER COLUMN \"clear_number\" SET DEFAULT 0",
            ]
        );
        // A value is a literal, whatever the catalog holds.
        let (set, _) = load_defaults("\"t\"", &[("c", "x'); DROP TABLE t; --")], &[]);
        assert_eq!(
            set,
            vec!["ALTER TABLE \"t\" ALTER COLUMN \"c\" SET DEFAULT 'x''); DROP TABLE t; --'"]
        );
    }
}
