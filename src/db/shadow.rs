//! Shadow tables: a restore loads its copied tables over several connections into tables of
//! a schema of its own (same columns and defaults; primary keys, unique and check
//! constraints and indexes built after the load, as `pg_restore` does), then makes each one
//! the live table in its short transaction: the live table's remaining rows (those a restore
//! keeps) move over, the foreign keys that point at it or leave from it are made again
//! (`NOT VALID` there, validated after the commit, which blocks no reader or writer), its
//! sequences follow, and the shadow takes its place, owner and grants.
//!
//! The schema is invisible to Airflow (it is not on its search path and holds nothing of
//! its schema). A run killed before its transaction committed leaves shadow tables there and
//! nothing else: the next restore removes them before it loads.

use std::collections::VecDeque;

use sqlx::PgConnection;

use super::{PgConnector, db_error};
use crate::airflow::catalog::quote_ident;
use crate::error::{Error, Result};

/// The schema that holds a restore's shadow tables between the load and the switch.
pub const SHADOW_SCHEMA: &str = "mwaa_dr_shadow";

/// The advisory lock a restore holds on its session while it uses the shadow schema: two
/// restores into one database would remove each other's shadow tables.
pub const RESTORE_LOCK_KEY: i64 = 0x6d77_6161_6472_7273;

/// The shadow of `table`, quoted and qualified.
pub fn shadow_of(table: &str) -> String {
    format!("{}.{}", quote_ident(SHADOW_SCHEMA), quote_ident(table))
}

/// Whether this session may replace `tables`: it may create a schema in the database and
/// owns each table (or is a member of its owner's role). Without that, a restore loads in
/// its transaction as it always did.
pub async fn can_replace(conn: &mut PgConnection, tables: &[String]) -> Result<bool> {
    let quoted: Vec<String> = tables.iter().map(|t| quote_ident(t)).collect();
    sqlx::query_scalar(
        "SELECT has_database_privilege(current_database(), 'CREATE') \
         AND coalesce(bool_and(pg_has_role(c.relowner, 'MEMBER')), true) \
         FROM unnest($1::text[]) AS t(name) JOIN pg_class c ON c.oid = to_regclass(t.name)",
    )
    .bind(&quoted)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error("inspect privileges", "restore", e))
}

/// Takes the session's restore lock, or says which session holds it.
pub async fn lock_restores(conn: &mut PgConnection, db: &str) -> Result<()> {
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(RESTORE_LOCK_KEY)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("lock", db, e))?;
    if taken {
        return Ok(());
    }
    let holder: Option<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND ((classid::bigint << 32) | objid::bigint) = $1 LIMIT 1",
    )
    .bind(RESTORE_LOCK_KEY)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| db_error("lock", db, e))?;
    Err(Error::transient(
        "restore",
        db,
        format!(
            "another restore into this database is running (server pid {}); it may pass: retry when it has ended",
            holder.map_or("unknown".to_string(), |p| p.to_string())
        ),
    ))
}

/// Removes what an earlier run left in the shadow schema and makes it again, empty.
pub async fn reset(conn: &mut PgConnection) -> Result<()> {
    drop_all(conn).await?;
    sqlx::query(&format!("CREATE SCHEMA {}", quote_ident(SHADOW_SCHEMA)))
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("create schema", SHADOW_SCHEMA, e))?;
    Ok(())
}

/// Drops the shadow schema and every table left in it.
pub async fn drop_all(conn: &mut PgConnection) -> Result<()> {
    sqlx::query(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quote_ident(SHADOW_SCHEMA)
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("drop schema", SHADOW_SCHEMA, e))?;
    Ok(())
}

/// Creates the shadow of `table`: its columns, defaults, NOT NULL, storage and comments; no
/// index or constraint yet.
pub async fn create(conn: &mut PgConnection, table: &str) -> Result<()> {
    sqlx::query(&format!(
        "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMMENTS)",
        shadow_of(table),
        quote_ident(table)
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("create shadow table", table, e))?;
    Ok(())
}

/// What makes a loaded shadow table the live table's equal, as `pg_restore` builds it:
/// every index first (those of primary keys and unique constraints too), each on its own
/// so that several connections build them at once, then the constraints over them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShadowBuild {
    /// `CREATE [UNIQUE] INDEX` statements, independent of each other.
    pub indexes: Vec<String>,
    /// Once the indexes exist: primary keys and unique constraints made over their indexes,
    /// exclusion and check constraints (foreign keys come at the switch).
    pub constraints: Vec<String>,
}

/// The indexes and constraints of the live `table`, for its loaded shadow, under their names.
pub async fn build_statements(conn: &mut PgConnection, table: &str) -> Result<ShadowBuild> {
    // (name, type, definition, its index's definition, deferrable, initially deferred)
    type Constraint = (String, String, String, Option<String>, bool, bool);
    let constraints: Vec<Constraint> = sqlx::query_as(
        "SELECT conname::text, contype::text, pg_get_constraintdef(oid), \
         CASE WHEN contype IN ('p', 'u') AND conindid <> 0 THEN pg_get_indexdef(conindid) END, \
         condeferrable, condeferred FROM pg_constraint \
         WHERE conrelid = to_regclass($1) AND contype IN ('p', 'u', 'x', 'c') \
         ORDER BY contype = 'c', contype <> 'p', conname",
    )
    .bind(quote_ident(table))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("inspect constraints", table, e))?;
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_indexdef(i.indexrelid) \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE i.indrelid = to_regclass($1) \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
         ORDER BY i.indexrelid",
    )
    .bind(quote_ident(table))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("inspect indexes", table, e))?;
    let live: String = sqlx::query_scalar(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
    )
    .bind(quote_ident(table))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error("inspect", table, e))?;
    let shadow = shadow_of(table);
    let unreadable = |definition: &str| {
        Error::failed(
            "build shadow table",
            table,
            format!("cannot read the index definition {definition:?}"),
        )
    };
    let mut build = ShadowBuild::default();
    for (name, kind, definition, index, deferrable, deferred) in &constraints {
        let name = quote_ident(name);
        match (kind.as_str(), index) {
            ("p" | "u", Some(index)) => {
                let (create, index_name) = index_on(index, &live, &shadow)
                    .zip(index_name(index))
                    .ok_or_else(|| unreadable(index))?;
                build.indexes.push(create);
                build.constraints.push(format!(
                    "ALTER TABLE {shadow} ADD CONSTRAINT {name} {} USING INDEX {index_name}{}{}",
                    if kind == "p" { "PRIMARY KEY" } else { "UNIQUE" },
                    if *deferrable { " DEFERRABLE" } else { "" },
                    if *deferred { " INITIALLY DEFERRED" } else { "" },
                ));
            }
            _ => build.constraints.push(format!(
                "ALTER TABLE {shadow} ADD CONSTRAINT {name} {definition}"
            )),
        }
    }
    for (_, definition) in &indexes {
        build
            .indexes
            .push(index_on(definition, &live, &shadow).ok_or_else(|| unreadable(definition))?);
    }
    Ok(build)
}

/// The (quoted, unqualified) name of the index `CREATE [UNIQUE] INDEX <name> ON ...` makes.
fn index_name(definition: &str) -> Option<&str> {
    let rest = definition
        .strip_prefix("CREATE UNIQUE INDEX ")
        .or_else(|| definition.strip_prefix("CREATE INDEX "))?;
    let at = rest.find(" ON ")?;
    Some(&rest[..at])
}

/// `CREATE INDEX ... ON <live> USING ...` (as `pg_get_indexdef` gives it, the table
/// qualified) rewritten to build the same index on `shadow`.
pub fn index_on(definition: &str, live: &str, shadow: &str) -> Option<String> {
    let needle = format!(" ON {live} USING ");
    let at = definition.find(&needle)?;
    Some(format!(
        "{} ON {shadow} USING {}",
        &definition[..at],
        &definition[at + needle.len()..]
    ))
}

/// A foreign key to make again after a switch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ForeignKey {
    /// The table that holds it, as `regclass` names it.
    owner: String,
    name: String,
    definition: String,
    /// On the replaced table itself (it goes with it).
    own: bool,
}

/// `ALTER TABLE owner ADD CONSTRAINT name <definition> NOT VALID`: enforced for every new row
/// at once, checked against the existing ones later by `VALIDATE CONSTRAINT`.
fn add_not_valid(owner: &str, name: &str, definition: &str) -> String {
    let definition = definition.strip_suffix(" NOT VALID").unwrap_or(definition);
    format!(
        "ALTER TABLE {owner} ADD CONSTRAINT {} {definition} NOT VALID",
        quote_ident(name)
    )
}

/// In a clean restore's transaction, in place of cleanup's DELETE: locks the live `table`
/// (with `columns`) and copies the rows cleanup keeps (`keep`; none without) into its
/// shadow, which replaces it whole at the switch. Returns the rows left behind (cleaned).
pub async fn carry_kept(
    conn: &mut PgConnection,
    table: &str,
    columns: &[String],
    keep: Option<&str>,
) -> Result<u64> {
    let live = quote_ident(table);
    exec(
        conn,
        &format!("LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE"),
        "lock",
        table,
    )
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {live}"))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("count", table, e))?;
    let kept = match keep {
        Some(keep) => {
            let list = super::column_list(columns);
            sqlx::query(&format!(
                "INSERT INTO {} ({list}) SELECT {list} FROM {live} WHERE ({keep}) IS TRUE",
                shadow_of(table)
            ))
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("keep rows", table, e))?
            .rows_affected()
        }
        None => 0,
    };
    Ok(u64::try_from(total).unwrap_or(0).saturating_sub(kept))
}

/// In the restore's transaction: makes the shadow of `table` the live table. With
/// `carry_live`, the rows the live table still holds (the rows a restore keeps) move into
/// the new one first, and their count is returned; without, [`carry_kept`] moved them.
pub async fn switch(conn: &mut PgConnection, table: &str, carry_live: bool) -> Result<u64> {
    let live = quote_ident(table);
    let shadow = shadow_of(table);
    exec(
        conn,
        &format!("LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE"),
        "lock",
        table,
    )
    .await?;
    let carried = if carry_live {
        keep_rows(conn, table, &live, &shadow).await?
    } else {
        0
    };
    let held = LiveTable::inspect(conn, table, &live).await?;
    release(conn, table, &held).await?;
    // RESTRICT: anything else that depends on the table (a view) fails the restore whole.
    exec(conn, &format!("DROP TABLE {live}"), "replace table", table).await?;
    exec(
        conn,
        &format!("ALTER TABLE {shadow} SET SCHEMA {}", held.schema),
        "replace table",
        table,
    )
    .await?;
    let replaced = format!("{}.{live}", held.schema);
    take_over(conn, table, &held, &replaced).await?;
    Ok(carried)
}

/// Moves the rows the live table still holds (those a restore keeps) into its shadow;
/// returns how many.
async fn keep_rows(conn: &mut PgConnection, table: &str, live: &str, shadow: &str) -> Result<u64> {
    let columns = super::table_columns(conn, table)
        .await?
        .ok_or_else(|| Error::failed("switch", table, "the table is gone"))?;
    let list = super::column_list(&columns);
    Ok(sqlx::query(&format!(
        "INSERT INTO {shadow} ({list}) SELECT {list} FROM {live}"
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("keep rows", table, e))?
    .rows_affected())
}

/// What of the live table its replacement takes over: its schema, owner and grants, the
/// foreign keys on it and pointing at it, and the sequences its columns own.
struct LiveTable {
    /// Quoted.
    schema: String,
    /// Quoted.
    owner: String,
    /// `GRANT` statements, one a grant.
    grants: Vec<String>,
    keys: Vec<ForeignKey>,
    /// The sequence (as `regclass` names it) and the quoted column that owns it.
    sequences: Vec<(String, String)>,
}

impl LiveTable {
    /// Reads what the replacement of the live table `live` (quoted) takes over.
    async fn inspect(conn: &mut PgConnection, table: &str, live: &str) -> Result<LiveTable> {
        let (schema, owner): (String, String) = sqlx::query_as(
            "SELECT quote_ident(n.nspname), quote_ident(pg_get_userbyid(c.relowner)) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
        )
        .bind(live)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error("inspect", table, e))?;
        let grants: Vec<String> = sqlx::query_scalar(
            "SELECT format('GRANT %s ON %s TO %s%s', a.privilege_type, $1::text, \
             CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
             CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
             FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = to_regclass($1) AND a.grantee <> c.relowner",
        )
        .bind(live)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_error("inspect grants", table, e))?;
        let keys = foreign_keys(conn, table, live).await?;
        let sequences: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.objid::regclass::text, quote_ident(a.attname) FROM pg_depend d \
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
             AND d.refobjid = to_regclass($1) AND d.deptype = 'a'",
        )
        .bind(live)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_error("inspect sequences", table, e))?;
        Ok(LiveTable {
            schema,
            owner,
            grants,
            keys,
            sequences,
        })
    }
}

/// The foreign keys on the live table `live` (quoted) and those pointing at it.
async fn foreign_keys(conn: &mut PgConnection, table: &str, live: &str) -> Result<Vec<ForeignKey>> {
    let keys: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid), conrelid = to_regclass($1) \
         FROM pg_constraint WHERE contype = 'f' AND (conrelid = to_regclass($1) OR confrelid = to_regclass($1)) \
         ORDER BY 1, 2",
    )
    .bind(live)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("inspect foreign keys", table, e))?;
    Ok(keys
        .into_iter()
        .map(|(owner, name, definition, own)| ForeignKey {
            owner,
            name,
            definition,
            own,
        })
        .collect())
}

/// Lets the live table go: drops the foreign keys of other tables that point at it and
/// frees its sequences, which would otherwise go with it.
async fn release(conn: &mut PgConnection, table: &str, held: &LiveTable) -> Result<()> {
    for key in held.keys.iter().filter(|k| !k.own) {
        exec(
            conn,
            &format!(
                "ALTER TABLE {} DROP CONSTRAINT {}",
                key.owner,
                quote_ident(&key.name)
            ),
            "drop foreign key",
            table,
        )
        .await?;
    }
    for (sequence, _) in &held.sequences {
        exec(
            conn,
            &format!("ALTER SEQUENCE {sequence} OWNED BY NONE"),
            "release sequence",
            table,
        )
        .await?;
    }
    Ok(())
}

/// Gives the `replaced` table (qualified, quoted) what the live table had: its owner, grants
/// and sequences, and every foreign key again, `NOT VALID`.
async fn take_over(
    conn: &mut PgConnection,
    table: &str,
    held: &LiveTable,
    replaced: &str,
) -> Result<()> {
    exec(
        conn,
        &format!("ALTER TABLE {replaced} OWNER TO {}", held.owner),
        "set owner",
        table,
    )
    .await?;
    for grant in &held.grants {
        exec(conn, grant, "grant", table).await?;
    }
    for (sequence, column) in &held.sequences {
        exec(
            conn,
            &format!("ALTER SEQUENCE {sequence} OWNED BY {replaced}.{column}"),
            "own sequence",
            table,
        )
        .await?;
    }
    for key in &held.keys {
        let owner = if key.own { replaced } else { &key.owner };
        exec(
            conn,
            &add_not_valid(owner, &key.name, &key.definition),
            "add foreign key",
            table,
        )
        .await?;
    }
    Ok(())
}

async fn exec(conn: &mut PgConnection, sql: &str, what: &str, table: &str) -> Result<()> {
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error(what, table, e))?;
    Ok(())
}

/// Validates the foreign keys of `tables` left `NOT VALID` (by a switch, or by a run killed
/// between its commit and this step), over up to `jobs` connections of `connector` (`conn`
/// when one): the keys of one table on one connection, since two validations of a table
/// wait for each other. Returns those that fail, with the reason.
pub async fn validate_foreign_keys(
    conn: &mut PgConnection,
    connector: &PgConnector,
    tables: &[String],
    jobs: usize,
) -> Result<Vec<String>> {
    let quoted: Vec<String> = tables.iter().map(|t| quote_ident(t)).collect();
    // Largest tables first, so that the longest validations start at once.
    let pending: Vec<(String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, conname::text FROM pg_constraint \
         WHERE contype = 'f' AND NOT convalidated \
         AND (conrelid = ANY(SELECT to_regclass(t) FROM unnest($1::text[]) t) \
           OR confrelid = ANY(SELECT to_regclass(t) FROM unnest($1::text[]) t)) \
         ORDER BY pg_relation_size(conrelid) DESC, 1, 2",
    )
    .bind(&quoted)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("inspect foreign keys", "restore", e))?;
    let mut owners: Vec<(String, Vec<String>)> = Vec::new();
    for (owner, name) in pending {
        match owners.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, names)) => names.push(name),
            None => owners.push((owner, vec![name])),
        }
    }
    let workers = jobs.clamp(1, owners.len().max(1));
    let queue = std::sync::Mutex::new(owners.into_iter().collect::<VecDeque<_>>());
    let failed = std::sync::Mutex::new(Vec::new());
    let mut extra = Vec::new();
    for _ in 1..workers {
        // A connection that cannot be had leaves its share to the others.
        if let Ok(conn) = connector.connect().await {
            extra.push(conn);
        }
    }
    let mut running = vec![validate_queue(conn, &queue, &failed)];
    for other in extra.iter_mut() {
        running.push(validate_queue(other, &queue, &failed));
    }
    futures::future::try_join_all(running).await?;
    let mut failed = failed.into_inner().unwrap_or_default();
    failed.sort();
    Ok(failed)
}

/// Validates the keys of the next table of `queue` until none is left, into `failed`.
async fn validate_queue(
    conn: &mut PgConnection,
    queue: &std::sync::Mutex<VecDeque<(String, Vec<String>)>>,
    failed: &std::sync::Mutex<Vec<String>>,
) -> Result<()> {
    // The check of a key is a join of two tables, which PostgreSQL runs with
    // maintenance_work_mem: in memory when it can.
    sqlx::query("SET maintenance_work_mem = '256MB'")
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("configure", "restore", e))?;
    loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some((owner, names)) = next else {
            break;
        };
        for name in names {
            if let Err(e) = sqlx::query(&format!(
                "ALTER TABLE {owner} VALIDATE CONSTRAINT {}",
                quote_ident(&name)
            ))
            .execute(&mut *conn)
            .await
                && let Ok(mut failed) = failed.lock()
            {
                failed.push(format!(
                    "{owner}.{name}: {}",
                    db_error("validate", &name, e)
                ));
            }
        }
    }
    sqlx::query("RESET maintenance_work_mem")
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error("configure", "restore", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_built_on_the_shadow_under_their_names() {
        assert_eq!(
            index_on(
                "CREATE INDEX ti_state ON public.task_instance USING btree (state)",
                "public.task_instance",
                "mwaa_dr_shadow.task_instance"
            )
            .as_deref(),
            Some("CREATE INDEX ti_state ON mwaa_dr_shadow.task_instance USING btree (state)")
        );
        assert_eq!(
            index_on(
                "CREATE UNIQUE INDEX \"x y\" ON public.\"Odd\" USING btree (a) WHERE (b IS NULL)",
                "public.\"Odd\"",
                "s.t"
            )
            .as_deref(),
            Some("CREATE UNIQUE INDEX \"x y\" ON s.t USING btree (a) WHERE (b IS NULL)")
        );
        assert_eq!(
            index_on(
                "CREATE INDEX i ON other.t USING btree (a)",
                "public.t",
                "s.t"
            ),
            None
        );
    }

    #[test]
    fn a_key_is_built_as_its_index_then_made_over_it() {
        assert_eq!(
            index_name("CREATE UNIQUE INDEX dag_run_pkey ON public.dag_run USING btree (id)"),
            Some("dag_run_pkey")
        );
        assert_eq!(
            index_name("CREATE INDEX \"odd name\" ON public.t USING btree (a)"),
            Some("\"odd name\"")
        );
        assert_eq!(index_name("ALTER TABLE t ADD PRIMARY KEY (a)"), None);
    }

    #[test]
    fn foreign_keys_come_back_not_valid_once() {
        assert_eq!(
            add_not_valid(
                "xcom",
                "xcom_task_instance_fkey",
                "FOREIGN KEY (dag_id) REFERENCES task_instance(dag_id) ON DELETE CASCADE"
            ),
            "ALTER TABLE xcom ADD CONSTRAINT \"xcom_task_instance_fkey\" FOREIGN KEY (dag_id) REFERENCES task_instance(dag_id) ON DELETE CASCADE NOT VALID"
        );
        assert!(
            add_not_valid("t", "k", "FOREIGN KEY (a) REFERENCES p(a) NOT VALID")
                .ends_with("REFERENCES p(a) NOT VALID")
        );
        assert!(
            !add_not_valid("t", "k", "FOREIGN KEY (a) REFERENCES p(a) NOT VALID")
                .contains("NOT VALID NOT VALID")
        );
    }
}
