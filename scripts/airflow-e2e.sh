#!/usr/bin/env bash
# End to end with real Apache Airflow: Airflow itself produces the metadata, mwaa-dr backs it
# up and restores it into a freshly migrated database of the same version, and the result is
# checked table by table, with Airflow's own CLI, and by running Airflow's scheduler on it.
#
# Usage: scripts/airflow-e2e.sh [--keep] VERSION        e.g. scripts/airflow-e2e.sh 2.10.3
#
#   --keep   keep the work directory (Airflow homes and logs, the backup store, the CLI
#            outputs) and the two databases; a failed run keeps the work directory anyway
#
# Steps:
#   1. Airflow VERSION in a cached venv (scripts/airflow-venv.sh), mwaa-dr built with cargo
#      (or MWAA_DR_BIN), a PostgreSQL server (the bench's, or a throwaway one started through
#      scripts/testbench.sh when MWAA_DR_TEST_PG_URL is unset).
#   2. Source database: `airflow db migrate` (`db init` before 2.7), the DAGs of
#      tests/airflow/dags (XCom push/pull, a retry after a failure, dynamic task mapping, a
#      dataset-triggered DAG, a reschedule-mode sensor, a DAG scheduled every minute),
#      `variables set`, `connections add` with a password, `pools set`, `dags test` of every
#      DAG, a two-day backfill (`dags backfill` on 2.x, `backfill create` on 3.x), manual
#      triggers, then `airflow scheduler` with the LocalExecutor (on 3.x with the API server
#      and the DAG processor) until no run is queued or running; one DAG is paused at the end.
#   3. Target database: migrated by the same Airflow, DAGs parsed (all paused, as a standby).
#   4. mwaa-dr --store DIR backup --db SOURCE, then
#      mwaa-dr --store DIR --yes restore --clean --db TARGET
#      (--clean because the target's own `airflow dags reserialize` wrote a `log` row).
#   5. Before any Airflow command touches the target: every table of the manifest equals the
#      source under the manifest's columns and filters (tables that mwaa-dr restores by key
#      into the target's own rows are compared by that key, Fernet secrets decrypted), and the
#      DAGs active in the source are unpaused in the target, the paused one is not.
#   6. Airflow's CLI on both databases, outputs compared: dags list-runs of every DAG, tasks
#      states-for-dag-run of every run, variables get, connections get -o json (the password
#      decrypted), pools list; db check-migrations, variables set, connections add and pools
#      set on the target. The read-only commands go through Airflow's own CLI entry point in
#      one interpreter per database (a separate `airflow` process costs 2-4 s of start-up).
#   7. airflow scheduler on the restored database for 40 s or more: no Traceback, duplicate
#      key or other integrity error in its logs, every restored run and successful task
#      instance unchanged (state, try_number, end_date), and the next run of the every-minute
#      DAG created and successful.
#
# About two minutes per version on 2 cores with a warm venv; one run at a time per machine.
# Exits 0 when every check passes; otherwise prints what differs and exits 1.
#
# Environment:
#   MWAA_DR_BIN            the mwaa-dr binary to test (default: cargo build, debug)
#   MWAA_DR_TEST_PG_URL    PostgreSQL superuser URL (postgres://user:pw@host:port/db); unset:
#   MWAA_DR_TEST_PG_BIN    the script runs itself under `scripts/testbench.sh run pg`
#   MWAA_DR_AIRFLOW_PYTHON, XDG_CACHE_HOME    see scripts/airflow-venv.sh
#   MWAA_DR_BENCH_DIR      see scripts/testbench.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo
readonly self=$repo/scripts/airflow-e2e.sh
readonly dags_folder=$repo/tests/airflow/dags
readonly dags=(e2e_xcom e2e_retry e2e_mapped e2e_sensor e2e_dataset_consumer e2e_ticker)
readonly ticker=e2e_ticker    # scheduled every minute: its next run is due on the target
readonly paused_dag=e2e_retry # paused in the source before the backup: stays paused
readonly backfill_dag=e2e_xcom # not e2e_mapped: Airflow 2 backfills deadlock on mapped tasks
readonly test_date=2024-02-01
readonly source_settle_timeout=240
readonly target_min_seconds=40
readonly target_timeout=150
readonly stop_timeout=45

e2e_name=airflow-e2e
# shellcheck source=scripts/lib/e2e.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/e2e.sh"
usage() {
    sed -n '6,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

keep=0
version=
while (($# > 0)); do
    case $1 in
    --keep)
        keep=1
        shift
        ;;
    -h | --help) usage ;;
    -*)
        log "unknown option: $1"
        usage
        ;;
    *)
        [[ -z $version ]] || usage
        version=$1
        shift
        ;;
    esac
done
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || usage
readonly version keep
major=${version%%.*}
minor=${version#*.}
minor=${minor%%.*}
readonly major minor

# ---------------------------------------------------------------------------------------
# Outer part: the binary, the venv, a PostgreSQL server; then the inner part runs.

if [[ -z ${MWAA_DR_E2E_INNER:-} ]]; then
    if [[ -n ${MWAA_DR_BIN:-} ]]; then
        [[ -x $MWAA_DR_BIN ]] || die "MWAA_DR_BIN=$MWAA_DR_BIN is not an executable file"
        bin=$MWAA_DR_BIN
    else
        command -v cargo >/dev/null 2>&1 ||
            die "cargo not found (install the Rust toolchain with rustup, or set MWAA_DR_BIN)"
        log "building mwaa-dr (debug)"
        cargo build --bin mwaa-dr --manifest-path "$repo/Cargo.toml" >&2
        target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
        [[ -n $target_dir ]] || die "cargo metadata did not tell the target directory"
        bin=$target_dir/debug/mwaa-dr
        [[ -x $bin ]] || die "built, but $bin is missing"
    fi
    venv=$("$repo/scripts/airflow-venv.sh" "$version") || die "could not install Airflow $version"
    args=("$version")
    ((keep)) && args=(--keep "$version")
    export MWAA_DR_E2E_INNER=1 MWAA_DR_BIN=$bin MWAA_DR_E2E_VENV=$venv
    if [[ -n ${MWAA_DR_TEST_PG_URL:-} ]]; then
        exec "$self" "${args[@]}"
    fi
    log "MWAA_DR_TEST_PG_URL is unset: starting a throwaway PostgreSQL (scripts/testbench.sh)"
    exec "$repo/scripts/testbench.sh" run pg -- "$self" "${args[@]}"
fi

# ---------------------------------------------------------------------------------------
# Inner part.

bin=${MWAA_DR_BIN:?not set: run scripts/airflow-e2e.sh, not this part on its own}
venv=${MWAA_DR_E2E_VENV:?not set}
admin_url=${MWAA_DR_TEST_PG_URL:?not set}
pg_bin=${MWAA_DR_TEST_PG_BIN:-}
if [[ -z $pg_bin ]]; then
    if command -v psql >/dev/null 2>&1; then
        pg_bin=$(dirname "$(command -v psql)")
    else
        pg_bin=/usr/lib/postgresql/15/bin
    fi
fi
readonly bin venv admin_url pg_bin
# Airflow gets only the settings below: none of the caller's AIRFLOW_HOME or AIRFLOW__*.
while IFS= read -r name; do
    unset "$name"
done < <(compgen -e | grep -E '^AIRFLOW(_HOME$|__)' || true)
[[ -x $venv/bin/airflow ]] || die "no Airflow in $venv"
[[ -x $pg_bin/psql ]] || die "no psql in $pg_bin (set MWAA_DR_TEST_PG_BIN)"
python=$venv/bin/python
readonly python

take_airflow_lock
SECONDS=0 # the times reported leave the wait out


tag=${version//./}_$$
readonly src_db=af_e2e_src_$tag dst_db=af_e2e_dst_$tag
src_url=$(url_with_db "$admin_url" "$src_db" postgresql)
dst_url=$(url_with_db "$admin_url" "$dst_db" postgresql)
readonly src_url dst_url

work=$(mktemp -d "${TMPDIR:-/tmp}/mwaa-dr-airflow-e2e.XXXXXX")
readonly work store=$work/store
mkdir -p "$work/state" "$work/cli" "$store"

status=1


finish() {
    trap - EXIT INT TERM
    stop_background
    if ((keep)); then
        log "kept: work directory $work, databases $src_db and $dst_db"
        return
    fi
    psql_admin -c "DROP DATABASE IF EXISTS $src_db WITH (FORCE)" \
        -c "DROP DATABASE IF EXISTS $dst_db WITH (FORCE)" >/dev/null 2>&1 || true
    if ((status == 0)); then
        rm -rf "$work"
    else
        log "logs and outputs kept in $work"
    fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


fernet_key=$("$python" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
readonly fernet_key
# The same secret for every process of one side: Airflow 3's API server signs task tokens.
jwt_secret=$("$python" -c 'import secrets; print(secrets.token_hex(32))')
readonly jwt_secret

# Airflow 3 task runners report to the API server started next to the scheduler.
api_port=$("$python" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
readonly api_port

# The environment of Airflow for one side (src or dst), into the array side_vars.
side_env() {
    local side=$1 db
    if [[ $side == src ]]; then db=$src_db; else db=$dst_db; fi
    side_vars=(
        "AIRFLOW_HOME=$work/home-$side"
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$(url_with_db "$admin_url" "$db" postgresql+psycopg2)"
        AIRFLOW__CORE__LOAD_EXAMPLES=False
        "AIRFLOW__CORE__FERNET_KEY=$fernet_key"
        "AIRFLOW__CORE__DAGS_FOLDER=$dags_folder"
        AIRFLOW__CORE__EXECUTOR=LocalExecutor
        AIRFLOW__CORE__PARALLELISM=4
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=2
        AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC=1
        AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL=10
        AIRFLOW__SCHEDULER__PARSING_PROCESSES=1
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=10
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$api_port/execution/"
        "AIRFLOW__API_AUTH__JWT_SECRET=$jwt_secret"
        "MWAA_DR_E2E_STATE_DIR=$work/state"
        # The DAGs import tests/airflow/dags/e2e_common.py; Airflow 3 does not put the dags
        # folder on sys.path as Airflow 2 does.
        "PYTHONPATH=$dags_folder"
        PYTHONWARNINGS=ignore
    )
    # The source's DAGs are active from the start; a standby's are paused until a restore.
    if [[ $side == src ]]; then
        side_vars+=(AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False)
    else
        side_vars+=(AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True)
    fi
}


# Scheduler (and on Airflow 3 the API server for the task runners and the DAG processor) on
# one side; the pids go to bg_pids.
start_scheduler() {
    local side=$1 pid
    if ((major >= 3)); then
        # One worker: uvicorn's supervisor kills workers that miss its 5 s health check,
        # which a loaded machine makes them do while they import Airflow.
        af_start "$side" api-server api-server --host 127.0.0.1 --port "$api_port" --workers 1
        pid=$started_pid
        # Task runners that find no API server fail at once: wait until it answers.
        "$python" - "http://127.0.0.1:$api_port/api/v2/monitor/health" "$pid" <<'PY' ||
import os
import sys
import time
import urllib.error
import urllib.request

url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 120
while time.time() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2):
            sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)  # it answers
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the API server exited")
    time.sleep(0.5)
sys.exit("the API server did not answer within 120 s")
PY
            {
                tail -n 30 "$work/api-server-$side.log" | cut -c1-300 >&2
                fail "airflow api-server did not start on the $side database (log: $work/api-server-$side.log)"
            }
        af_start "$side" dag-processor dag-processor
    fi
    af_start "$side" scheduler scheduler --skip-serve-logs
}

stop_scheduler() {
    stop_background
}


scheduler_alive() {
    local pid
    for pid in ${bg_pids[@]+"${bg_pids[@]}"}; do
        kill -0 "$pid" 2>/dev/null || return 1
    done
}

if ((major >= 3)); then
    readonly date_col=logical_date
else
    readonly date_col=execution_date
fi
readonly unfinished="'queued', 'running', 'scheduled', 'up_for_retry', 'up_for_reschedule', 'deferred', 'restarting'"

# A run list of one side's database, for the messages.
show_runs() {
    "$pg_bin/psql" -X -q -P pager=off -d "$1" -c "SELECT dag_id, run_id, run_type, state FROM dag_run ORDER BY dag_id, $date_col" \
        -c "SELECT dag_id, task_id, run_id, map_index, state, try_number FROM task_instance WHERE state IS NULL OR state IN ($unfinished) ORDER BY 1, 2, 3, 4" >&2 || true
}

# ---------------------------------------------------------------------------------------
log "Airflow $version ($venv), mwaa-dr $bin"
log "databases $src_db and $dst_db on ${admin_url#*@}, work directory $work"

step "Source database: Airflow $version schema"
psql_admin -c "DROP DATABASE IF EXISTS $src_db" -c "CREATE DATABASE $src_db" \
    -c "DROP DATABASE IF EXISTS $dst_db" -c "CREATE DATABASE $dst_db"
if ((major == 2 && minor < 7)); then
    schema_cmd=(db init)
else
    schema_cmd=(db migrate)
fi
af src "${schema_cmd[@]}"
af src dags reserialize
[[ $(psql_v "$src_url" "SELECT count(*) FROM dag WHERE dag_id LIKE 'e2e\_%'") == "${#dags[@]}" ]] ||
    fail "Airflow did not load the ${#dags[@]} DAGs of $dags_folder (see airflow dags list-import-errors)"
echo "${#dags[@]} DAGs parsed, active"

step "Source: variables, a connection with a password, a pool"
# shellcheck disable=SC2016 # a literal dollar sign
readonly conn_password='pw-$ecret/42'
af src variables set e2e_greeting "hello from the primary"
af src variables set e2e_settings '{"batch_size": 500, "region": "eu-west-1"}'
af src connections add e2e_warehouse --conn-type postgres --conn-host warehouse.example.com \
    --conn-login etl --conn-password "$conn_password" --conn-port 5432 --conn-schema orders \
    --conn-extra '{"sslmode": "require"}'
af src pools set e2e_pool 3 "pool of the e2e DAGs"
echo "2 variables, 1 connection, 1 pool"

step "Source: airflow dags test of every DAG ($test_date)"
for d in "${dags[@]}"; do
    af src dags test "$d" "$test_date"
    state=$(psql_v "$src_url" "SELECT state FROM dag_run WHERE dag_id = '$d' AND $date_col = '$test_date'")
    expected=success
    # Before 2.5 `dags test` runs a backfill with the DebugExecutor, which does not retry.
    if [[ $d == e2e_retry ]] && ((major == 2 && minor < 5)); then expected=failed; fi
    [[ $state == "$expected" ]] || fail "dags test $d: the run is '$state', not $expected"
    echo "$d: $state"
done

step "Source: a two-day backfill of $backfill_dag"
if ((major >= 3)); then
    # Airflow 3 backfills are run by the scheduler: created here, executed below.
    af src backfill create --dag-id "$backfill_dag" --from-date 2024-01-02 --to-date 2024-01-03
    echo "backfill created (the scheduler runs it)"
else
    af src dags backfill "$backfill_dag" -s 2024-01-02 -e 2024-01-03
    echo "2 backfill runs: $(psql_v "$src_url" "SELECT string_agg(state, ', ') FROM dag_run WHERE dag_id = '$backfill_dag' AND run_type = 'backfill'")"
fi

step "Source: manual triggers, then airflow scheduler (LocalExecutor) until nothing is left"
successes() {
    psql_v "$src_url" "SELECT count(*) FROM dag_run WHERE dag_id = '$1' AND state = 'success'"
}
sensor_runs=$(($(successes e2e_sensor) + 1))
retry_runs=$(($(successes e2e_retry) + 1))
af src dags trigger e2e_sensor
af src dags trigger e2e_retry
start_scheduler src
started=$SECONDS
settled=0
while ((SECONDS - started < source_settle_timeout)); do
    sleep 3
    scheduler_alive || {
        tail -n 40 "$work/scheduler-src.log" | cut -c1-300 >&2
        fail "the source's Airflow scheduler exited (log: $work/scheduler-src.log)"
    }
    # Settled: no unfinished run or task instance; a scheduled run of the ticker, a
    # dataset-triggered run of the consumer, the backfill and the triggered runs done.
    settled=$(psql_v "$src_url" "SELECT
        NOT EXISTS (SELECT 1 FROM dag_run WHERE state IN ('queued', 'running'))
        AND NOT EXISTS (SELECT 1 FROM task_instance WHERE state IN ($unfinished))
        AND EXISTS (SELECT 1 FROM dag_run WHERE dag_id = '$ticker' AND run_type = 'scheduled' AND state = 'success')
        AND EXISTS (SELECT 1 FROM dag_run WHERE dag_id = 'e2e_dataset_consumer' AND run_type LIKE '%triggered' AND state = 'success')
        AND (SELECT count(*) FROM dag_run WHERE dag_id = '$backfill_dag' AND $date_col::date IN ('2024-01-02', '2024-01-03') AND state = 'success') = 2
        AND (SELECT count(*) FROM dag_run WHERE dag_id = 'e2e_sensor' AND state = 'success') >= $sensor_runs
        AND (SELECT count(*) FROM dag_run WHERE dag_id = 'e2e_retry' AND state = 'success') >= $retry_runs")
    [[ $settled == t ]] && break
done
if [[ $settled != t ]]; then
    show_runs "$src_url"
    tail -n 40 "$work/scheduler-src.log" | cut -c1-300 >&2
    fail "the source did not settle within ${source_settle_timeout}s (runs above; log: $work/scheduler-src.log)"
fi
echo "settled after $((SECONDS - started)) s; stopping the scheduler"
stop_scheduler
check_logs src || fail "Airflow logged errors on the source before any backup (above)"
af src dags pause "$paused_dag"
"$pg_bin/psql" -X -q -P pager=off -d "$src_url" -c "SELECT dag_id, run_type, state, count(*) AS runs FROM dag_run GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"

step "Target database: Airflow $version schema, the same DAGs parsed (paused, as a standby)"
af dst "${schema_cmd[@]}"
af dst dags reserialize
[[ $(psql_v "$dst_url" "SELECT count(*) FROM dag WHERE dag_id LIKE 'e2e\_%' AND is_paused") == "${#dags[@]}" ]] ||
    fail "the target's Airflow did not parse the ${#dags[@]} DAGs, all paused"
echo "${#dags[@]} DAGs parsed, all paused"

# ---------------------------------------------------------------------------------------
step "mwaa-dr backup of the source, restore into the target"
run_mwaa_dr() {
    local rc=0
    printf '$ mwaa-dr %s\n' "$*" | sed -E 's#(postgres(ql)?://[^:/@]+:)[^@]*@#\1***@#g'
    # A clean environment: none of the caller's PRIMARY_*, DR_*, AIRFLOW__* settings.
    env -i PATH="$PATH" HOME="$HOME" TMPDIR="${TMPDIR:-/tmp}" \
        "$bin" --no-dotenv "$@" >"$work/mwaa-dr.out" 2>"$work/mwaa-dr.err" 8>&- || rc=$?
    sed 's/^/  /' "$work/mwaa-dr.out"
    if ((rc != 0)); then
        sed 's/^/  /' "$work/mwaa-dr.err" >&2
        fail "mwaa-dr $(printf '%s ' "$@" | sed -E 's#(postgres(ql)?://[^:/@]+:)[^@]*@#\1***@#g')exited with $rc"
    fi
}
run_mwaa_dr --store "$store" backup --db "$src_url"
manifest=$(find "$store/backups" -mindepth 2 -maxdepth 2 -name manifest.json -print -quit)
[[ -n $manifest ]] || fail "no manifest.json in $store/backups"
run_mwaa_dr --store "$store" --yes restore --clean --db "$dst_url"

# ---------------------------------------------------------------------------------------
step "Table by table: the target equals the source (manifest columns and filters)"
# The table catalog built into mwaa-dr says how each table is restored: plainly (rows equal,
# ids kept), or by key into the target's own rows (merge, strategy, missing_rows), and which
# columns hold ids of a table restored by key (compared through that table's key).
catalog=$repo/config/tables.json
if ((major >= 3)) && [[ -f $repo/config/tables-$major.json ]]; then
    catalog=$repo/config/tables-$major.json
fi
cat >"$work/compare-tables.py" <<'PY'
"""Compares every table of a backup's manifest between the source and the restored target;
records the target's restored runs and successful task instances for the scheduler check.
argv: manifest catalog src_url dst_url fernet_key snapshot_out"""
import json
import sys

import psycopg2
from cryptography.fernet import Fernet, InvalidToken

manifest_path, catalog_path, src_url, dst_url, key, snapshot_path = sys.argv[1:7]
manifest = json.load(open(manifest_path))
catalog = {t["name"]: t for t in json.load(open(catalog_path))["tables"]}
fernet = Fernet(key.encode())
src = psycopg2.connect(src_url)
dst = psycopg2.connect(dst_url)
for conn in (src, dst):
    conn.set_session(readonly=True)
failures = []
# Encrypted columns and their flags: compared decrypted (the ciphertext of one value differs
# per encryption, and a target keeps its own rows under some strategies).
SECRETS = {
    "variable": {"val": "is_encrypted"},
    "connection": {"password": "is_encrypted", "extra": "is_extra_encrypted"},
}


def q(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def rows(conn, table, cols, where):
    """The rows as dicts of text values (NULL is None), every column cast by the server."""
    collist = ", ".join(f't."{c}"::text' for c in cols)
    where = f" WHERE {where}" if where else ""
    return [dict(zip(cols, r)) for r in q(conn, f'SELECT {collist} FROM "{table}" AS t{where}')]


def key_of(table):
    return catalog.get(table, {}).get("key") or ["id"]


def id_to_key(conn, table):
    k = key_of(table)
    return {r["id"]: tuple(r[c] for c in k) for r in rows(conn, table, ["id", *k], None)}


def decrypt(table, rec):
    for col, flag in SECRETS.get(table, {}).items():
        if rec.get(col) is not None and rec.get(flag) == "true":
            try:
                rec[col] = "decrypted:" + fernet.decrypt(rec[col].encode()).decode()
            except InvalidToken:
                rec[col] = "UNDECRYPTABLE:" + rec[col]
    return rec


print(f"{'table':<31} {'source':>7} {'target':>7}  result")
for t in manifest["tables"]:
    name, cols, flt, count = t["name"], t["columns"], t.get("filter"), t["rows"]
    entry = catalog.get(name, {})
    mode = entry.get("restore", "copy")
    refs = entry.get("references", {})
    s_rows, d_rows = rows(src, name, cols, flt), rows(dst, name, cols, None)
    if len(s_rows) != count:
        failures.append(f"{name}: the manifest says {count} rows, the source has {len(s_rows)} under the filter")
    # Ids of tables restored by key are the target's own: compare through the key.
    for col, parent in refs.items():
        s_map, d_map = id_to_key(src, parent), id_to_key(dst, parent)
        for r in s_rows:
            r[col] = s_map.get(r[col], r[col])
        for r in d_rows:
            r[col] = d_map.get(r[col], r[col])
    if mode == "copy":
        s_set = sorted(json.dumps(r, sort_keys=True, default=str) for r in s_rows)
        d_set = sorted(json.dumps(r, sort_keys=True, default=str) for r in d_rows)
        if s_set == d_set:
            result = "equal"
            if flt and "NOT IN" in flt:
                left_out = q(src, f'SELECT count(*) FROM "{name}"')[0][0] - len(s_rows)
                result += f" ({left_out} in flight left out)" if left_out else ""
        else:
            only_s = sorted(set(s_set) - set(d_set))
            only_d = sorted(set(d_set) - set(s_set))
            detail = [f"  only in source: {r[:400]}" for r in only_s[:5]]
            detail += [f"  only in target: {r[:400]}" for r in only_d[:5]]
            failures.append(f"{name}: {len(s_rows)} source rows vs {len(d_rows)} target rows; contents differ\n" + "\n".join(detail))
            result = "DIFFERENT"
    else:
        k = entry.get("key") or ["id"]
        ignore = set() if k == ["id"] else {"id"}
        if mode == "missing_rows":
            # Rows the target lacked are added; the ones it has stay as they are.
            ignore |= {"created_at", "updated_at"}
        s_by = {tuple(r[c] for c in k): decrypt(name, r) for r in s_rows}
        d_by = {tuple(r[c] for c in k): decrypt(name, r) for r in d_rows}
        bad = []
        for kv, sr in s_by.items():
            dr = d_by.get(kv)
            if dr is None:
                bad.append(f"{kv}: missing in the target")
                continue
            diff = [c for c in sr if c not in ignore and sr[c] != dr[c]]
            if diff:
                bad.append(f"{kv}: {', '.join(diff)} differ: " + ", ".join(f"{c}={sr[c]!r} vs {dr[c]!r}" for c in diff))
        own = len(set(d_by) - set(s_by))
        result = f"equal by {'+'.join(k)} ({mode})" + (f", +{own} of the target's own" if own else "")
        if bad:
            result = "DIFFERENT"
            failures.append(f"{name} ({mode} by {'+'.join(k)}): " + "; ".join(bad[:10]))
    print(f"{name:<31} {len(s_rows):>7} {len(d_rows):>7}  {result}")

# DAGs active in the source are unpaused in the target; the paused ones stay paused.
sp = dict(q(src, "SELECT dag_id, is_paused FROM dag WHERE dag_id LIKE 'e2e%'"))
dp = dict(q(dst, "SELECT dag_id, is_paused FROM dag WHERE dag_id LIKE 'e2e%'"))
if sp != dp:
    failures.append(f"dag.is_paused: source {sorted(sp.items())} vs target {sorted(dp.items())}")
    print(f"{'dag.is_paused':<31} {'':>7} {'':>7}  DIFFERENT")
else:
    print(f"{'dag.is_paused':<31} {len(sp):>7} {len(dp):>7}  equal ({sum(not p for p in dp.values())} active, {sum(dp.values())} paused)")

# Tables with rows in the source that the backup does not hold (informational).
names = {t["name"] for t in manifest["tables"]}
uncovered = []
for (table,) in q(src, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"):
    if table in names or table == "alembic_version" or table.startswith("ab_"):
        continue
    n = q(src, f'SELECT count(*) FROM "{table}"')[0][0]
    if n:
        uncovered.append(f"{table} {n}/{q(dst, f'SELECT count(*) FROM {chr(34)}{table}{chr(34)}')[0][0]}")
print("not in the backup (rows in source/target): " + (", ".join(uncovered) or "none"))

snapshot = {
    "task_instances": [
        list(map(str, r))
        for r in q(dst, "SELECT dag_id, task_id, run_id, map_index, state, try_number, end_date FROM task_instance WHERE state = 'success' ORDER BY 1, 2, 3, 4")
    ],
    "dag_runs": [
        list(map(str, r)) for r in q(dst, "SELECT dag_id, run_id, state, end_date FROM dag_run ORDER BY 1, 2")
    ],
}
json.dump(snapshot, open(snapshot_path, "w"))
if failures:
    print("\n".join(["", "DIFFERENCES:"] + failures), file=sys.stderr)
    sys.exit(1)
PY
"$python" "$work/compare-tables.py" "$manifest" "$catalog" "$src_url" "$dst_url" "$fernet_key" \
    "$work/restored.json" ||
    fail "the restored database differs from the source (differences above)"
pass "every backed-up table equals the source (manifest columns and filters, catalog keys)"
pass "DAGs active in the source unpaused in the target, $paused_dag still paused"

# ---------------------------------------------------------------------------------------
step "Airflow's CLI on both databases"
# Each batch runs on both databases at once (two cores) and the outputs are compared. The
# commands go through Airflow's own entry point, one interpreter per database and batch:
# a separate `airflow` process costs 2-4 s of start-up per command.
cli_batch() {
    local batch=$1 rc_src=0 rc_dst=0 pid
    af_cli src "$batch" &
    pid=$!
    af_cli dst "$batch" || rc_dst=$?
    wait "$pid" || rc_src=$?
    ((rc_src == 0 && rc_dst == 0)) || fail "the CLI batch $batch did not run (exit $rc_src on the source, $rc_dst on the target; see $work/cli)"
    "$python" "$work/cli-compare.py" "$work/cli/$batch.json" "$work/cli/src" "$work/cli/dst" ||
        fail "Airflow's CLI shows the restored database differently from the source (< source, > target)"
}
af_cli() {
    local side=$1 batch=$2
    mkdir -p "$work/cli/$side"
    side_env "$side"
    env "${side_vars[@]}" AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING \
        "$python" "$work/cli-driver.py" "$work/cli/$batch.json" "$work/cli/$side" \
        >"$work/cli/$side/$batch.log" 2>&1 8>&-
}
cat >"$work/cli-driver.py" <<'PY'
"""Runs Airflow CLI commands through airflow.__main__.main, as the `airflow` script does, in
one interpreter: argv[1] is a JSON list of [label, [args...]]; each command's stdout, stderr
and exit code go to LABEL.out, LABEL.err and LABEL.rc in argv[2]."""
import contextlib
import json
import os
import sys
import traceback

from airflow.__main__ import main

commands = json.load(open(sys.argv[1]))
out_dir = sys.argv[2]
for label, argv in commands:
    base = os.path.join(out_dir, label)
    code = 0
    with open(base + ".out", "w") as out, open(base + ".err", "w") as err:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            sys.argv = ["airflow", *argv]
            try:
                main()
            except SystemExit as e:
                if isinstance(e.code, int):
                    code = e.code
                elif e.code is not None:
                    print(e.code, file=err)
                    code = 1
            except Exception:
                traceback.print_exc(file=err)
                code = 1
    with open(base + ".rc", "w") as f:
        f.write(f"{code}\n")
PY
cat >"$work/cli-compare.py" <<'PY'
"""Compares the outputs of one CLI batch on the source and on the target. JSON outputs are
compared as data, rows sorted; `id` (each database's own connection ids) is left out."""
import difflib
import json
import os
import sys

batch, src_dir, dst_dir = sys.argv[1:4]


def read(d, label):
    base = os.path.join(d, label)
    rc = int(open(base + ".rc").read())
    return rc, open(base + ".out").read(), open(base + ".err").read()


def normal(text):
    try:
        doc = json.loads(text)
    except ValueError:
        return text.rstrip("\n").splitlines()
    if isinstance(doc, list):
        for row in doc:
            if isinstance(row, dict):
                row.pop("id", None)
        doc = sorted(doc, key=lambda r: json.dumps(r, sort_keys=True))
    return json.dumps(doc, sort_keys=True, indent=1).splitlines()


bad = 0
for label, argv in json.load(open(batch)):
    (src_rc, src_out, src_err), (dst_rc, dst_out, dst_err) = read(src_dir, label), read(dst_dir, label)
    cmd = "airflow " + " ".join(argv)
    if src_rc or dst_rc:
        bad += 1
        print(f"{cmd}: exit {src_rc} on the source, {dst_rc} on the target", file=sys.stderr)
        for side, err in (("source", src_err), ("target", dst_err)):
            if err.strip():
                print(f"  {side} stderr:\n    " + "\n    ".join(err.strip().splitlines()[-15:]), file=sys.stderr)
        continue
    if not src_out.strip():
        bad += 1
        print(f"{cmd}: no output on the source", file=sys.stderr)
        continue
    a, b = normal(src_out), normal(dst_out)
    if a != b:
        bad += 1
        print(f"{cmd}: outputs differ", file=sys.stderr)
        for line in list(difflib.unified_diff(a, b, "source", "target", lineterm="", n=1))[:40]:
            print("    " + line, file=sys.stderr)
sys.exit(1 if bad else 0)
PY

{
    echo '['
    for d in "${dags[@]}"; do
        if ((major >= 3)); then
            printf '["list-runs-%s", ["dags", "list-runs", "%s", "-o", "json"]],\n' "$d" "$d"
        else
            printf '["list-runs-%s", ["dags", "list-runs", "-d", "%s", "-o", "json"]],\n' "$d" "$d"
        fi
    done
    echo '["var-greeting", ["variables", "get", "e2e_greeting"]],'
    echo '["var-settings", ["variables", "get", "e2e_settings"]],'
    echo '["conn", ["connections", "get", "e2e_warehouse", "-o", "json"]],'
    echo '["pools", ["pools", "list", "-o", "json"]]'
    echo ']'
} >"$work/cli/basics.json"
cli_batch basics
runs_listed=$("$python" - "$work/cli" "${dags[@]}" <<'PY'
import json
import sys

out, dags = sys.argv[1], sys.argv[2:]
batch = []
for d in dags:
    runs = json.load(open(f"{out}/src/list-runs-{d}.out"))
    if not runs:
        sys.exit(f"dags list-runs {d} shows no run on the source")
    for i, r in enumerate(runs):
        batch.append([f"states-{d}-{i}", ["tasks", "states-for-dag-run", d, r["run_id"], "-o", "json"]])
json.dump(batch, open(f"{out}/states.json", "w"))
print(len(batch))
PY
) || fail "could not read the runs that dags list-runs shows"
echo "dags list-runs of ${#dags[@]} DAGs: same runs ($runs_listed) on both"
cli_batch states
pass "dags list-runs of ${#dags[@]} DAGs and tasks states-for-dag-run of all $runs_listed runs: same output on both"

[[ $(cat "$work/cli/dst/var-greeting.out") == "hello from the primary" ]] ||
    fail "variables get e2e_greeting on the target: '$(cat "$work/cli/dst/var-greeting.out")'"
pass "variables get: same values, decrypted with the Fernet key"

"$python" -c 'import json, sys
c = json.load(open(sys.argv[1]))[0]
assert c["password"] == sys.argv[2], c["password"]
assert c["host"] == "warehouse.example.com" and c["login"] == "etl", c' "$work/cli/dst/conn.out" "$conn_password" ||
    fail "connections get e2e_warehouse on the target does not show the password"
pass "connections get -o json: same connection, the password decrypted on the target"

grep -q '"e2e_pool"' "$work/cli/dst/pools.out" || fail "pools list on the target lacks e2e_pool"
pass "pools list: same pools"

af dst db check-migrations -t 10
pass "db check-migrations on the target"

# New rows in the restored key tables: their id sequences were moved past the restored ids.
cat >"$work/cli/writes.json" <<'JSON'
[["set-variable", ["variables", "set", "e2e_after_restore", "written on the target"]],
 ["add-connection", ["connections", "add", "e2e_after_restore", "--conn-type", "http", "--conn-host", "after.example.com"]],
 ["set-pool", ["pools", "set", "e2e_after_restore", "2", "added on the target"]]]
JSON
af_cli dst writes || fail "the CLI batch writes did not run (see $work/cli/dst/writes.log)"
for w in set-variable add-connection set-pool; do
    [[ $(cat "$work/cli/dst/$w.rc") == 0 ]] || {
        tail -n 15 "$work/cli/dst/$w.err" >&2
        fail "airflow $w on the restored database failed (a sequence behind the restored ids?)"
    }
done
pass "variables set, connections add, pools set on the target: new ids do not collide"

# ---------------------------------------------------------------------------------------
step "airflow scheduler on the restored database"
restored_ticker=$(psql_v "$dst_url" "SELECT count(*) FROM dag_run WHERE dag_id = '$ticker'")
restored_latest=$(psql_v "$dst_url" "SELECT coalesce(max($date_col), '-infinity') FROM dag_run WHERE dag_id = '$ticker'")
start_scheduler dst
started=$SECONDS
next_run=
while ((SECONDS - started < target_timeout)); do
    sleep 3
    scheduler_alive || {
        tail -n 40 "$work/scheduler-dst.log" | cut -c1-300 >&2
        fail "the target's Airflow scheduler exited (log: $work/scheduler-dst.log)"
    }
    if ((SECONDS - started >= target_min_seconds)); then
        next_run=$(psql_v "$dst_url" "SELECT run_id FROM dag_run
            WHERE dag_id = '$ticker' AND run_type = 'scheduled' AND state = 'success'
            AND $date_col > '$restored_latest' ORDER BY $date_col DESC LIMIT 1")
        unfinished_runs=$(psql_v "$dst_url" "SELECT count(*) FROM dag_run WHERE state IN ('queued', 'running')")
        [[ -n $next_run && $unfinished_runs == 0 ]] && break
    fi
done
ran=$((SECONDS - started))
stop_scheduler
echo "scheduler ran ${ran} s"

check_logs dst || fail "Airflow logged errors on the restored database (above)"
import_errors=$(psql_v "$dst_url" "SELECT count(*) FROM import_error")
[[ $import_errors == 0 ]] || fail "the restored database has $import_errors DAG import errors"
pass "scheduler on the restored database: no Traceback, duplicate key or integrity error in its logs, no import error"

"$python" - "$dst_url" "$work/restored.json" <<'PY' || fail "restored runs or task instances changed under the scheduler"
import json
import sys

import psycopg2

dst_url, snapshot_path = sys.argv[1:3]
snap = json.load(open(snapshot_path))
conn = psycopg2.connect(dst_url)
with conn.cursor() as cur:
    cur.execute("SELECT dag_id, task_id, run_id, map_index, state, try_number, end_date FROM task_instance")
    tis = {tuple(map(str, r[:4])): list(map(str, r)) for r in cur.fetchall()}
    cur.execute("SELECT dag_id, run_id, state, end_date FROM dag_run")
    runs = {tuple(map(str, r[:2])): list(map(str, r)) for r in cur.fetchall()}
bad = []
for ti in snap["task_instances"]:
    now = tis.get(tuple(ti[:4]))
    if now != ti:
        bad.append(f"task instance {ti[:4]}: {ti[4:]} -> {now[4:] if now else 'gone'}")
for run in snap["dag_runs"]:
    now = runs.get(tuple(run[:2]))
    if now != run:
        bad.append(f"dag run {run[:2]}: {run[2:]} -> {now[2:] if now else 'gone'}")
if bad:
    print("\n".join(bad[:20]), file=sys.stderr)
    sys.exit(1)
print(f"{len(snap['task_instances'])} successful task instances and {len(snap['dag_runs'])} runs restored: unchanged (state, try_number, end_date)")
PY
pass "no completed run executed again: restored runs and successful task instances unchanged"

if [[ -z $next_run ]]; then
    show_runs "$dst_url"
    tail -n 30 "$work/scheduler-dst.log" | cut -c1-300 >&2
    fail "no new scheduled run of $ticker succeeded on the restored database within ${target_timeout}s"
fi
after_ticker=$(psql_v "$dst_url" "SELECT count(*) FROM dag_run WHERE dag_id = '$ticker'")
echo "$ticker: $restored_ticker runs restored, $after_ticker now; newest: $next_run"
pass "the scheduler continued: next run of $ticker created and succeeded ($next_run)"

# ---------------------------------------------------------------------------------------
timings+=("$(printf '%4d s  %s' $((SECONDS - phase_start)) "$phase_name")")
printf '\n==> Summary: Airflow %s, %s\n' "$version" "$("$bin" --version 2>/dev/null || echo "$bin")"
echo "Time per step ($SECONDS s in all):"
printf '  %s\n' "${timings[@]}"
echo "Checks passed:"
printf '  ok  %s\n' "${checks[@]}"
status=0
