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

use sqlx::PgConnection;

use super::db_error;
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

/// The statements that give the loaded shadow of `table` the live table's primary key,
/// unique, exclusion and check constraints (foreign keys come at the switch) and its other
/// indexes, under their names.
pub async fn build_statements(conn: &mut PgConnection, table: &str) -> Result<Vec<String>> {
    let constraints: Vec<(String, String)> = sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
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
    let shadow = shadow_of(table);
    let mut statements: Vec<String> = constraints
        .iter()
        .map(|(name, definition)| {
            format!(
                "ALTER TABLE {shadow} ADD CONSTRAINT {} {definition}",
                quote_ident(name)
            )
        })
        .collect();
    for (live, definition) in &indexes {
        statements.push(index_on(definition, live, &shadow).ok_or_else(|| {
            Error::failed(
                "build shadow table",
                table,
                format!("cannot read the index definition {definition:?}"),
            )
        })?);
    }
    Ok(statements)
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

/// In the restore's transaction: makes the shadow of `table` the live table. Returns the rows
/// the live table still held (the rows a restore keeps), now in the new one.
pub async fn switch(conn: &mut PgConnection, table: &str) -> Result<u64> {
    let live = quote_ident(table);
    let shadow = shadow_of(table);
    exec(
        conn,
        &format!("LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE"),
        "lock",
        table,
    )
    .await?;
    let carried = keep_rows(conn, table, &live, &shadow).await?;
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
/// between its commit and this step). Returns those that fail, with the reason.
pub async fn validate_foreign_keys(
    conn: &mut PgConnection,
    tables: &[String],
) -> Result<Vec<String>> {
    let quoted: Vec<String> = tables.iter().map(|t| quote_ident(t)).collect();
    let pending: Vec<(String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, conname::text FROM pg_constraint \
         WHERE contype = 'f' AND NOT convalidated \
         AND (conrelid = ANY(SELECT to_regclass(t) FROM unnest($1::text[]) t) \
           OR confrelid = ANY(SELECT to_regclass(t) FROM unnest($1::text[]) t)) ORDER BY 1, 2",
    )
    .bind(&quoted)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("inspect foreign keys", "restore", e))?;
    let mut failed = Vec::new();
    for (owner, name) in pending {
        if let Err(e) = sqlx::query(&format!(
            "ALTER TABLE {owner} VALIDATE CONSTRAINT {}",
            quote_ident(&name)
        ))
        .execute(&mut *conn)
        .await
        {
            failed.push(format!(
                "{owner}.{name}: {}",
                db_error("validate", &name, e)
            ));
        }
    }
    Ok(failed)
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
