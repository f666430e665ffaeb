#!/usr/bin/env bash
# Benchmark of mwaa-dr backup and restore against the plain PostgreSQL tools doing the same
# work (not a test: it prints numbers and whether they meet the targets).
#
# Usage: scripts/bench.sh [--scale S] [--jobs N] [--keep] [--no-rest]
#
#   --scale S   volume of the source database (default 1: 20,000 DAG runs, 1,000,000 task
#               instances, ~1,000,000 XComs, 1,000,000 log rows, 50,000 jobs)
#   --jobs N    parallel connections of `mwaa-dr backup`, `mwaa-dr restore` and
#               `pg_restore -j` (default 2)
#   --keep      keep the work directory (CSV files, backup store, logs) instead of removing it
#   --no-rest   skip (g), the failover into a real Airflow standby (minutes; serialized)
#
# On a throwaway PostgreSQL server (scripts/testbench.sh; durability is off there), it makes a
# source database from tests/fixtures/airflow/schema-2.10.3.sql filled by
# scripts/sql/fill-metadata.sql, then measures with /usr/bin/time -v (wall time, peak RSS of
# the client process) and /proc/stat (the CPU time the whole machine, server included, was
# busy during each step):
#
#   (a) floor    psql: \copy (SELECT <columns> FROM <table>) TO '/dev/null' (CSV) for every
#                table a backup holds, one after the other
#   (a2) floor N the same \copy commands over N psql processes at once (N = --jobs), the
#                tables split among them biggest first (each to the least loaded process);
#                wall time of the whole: the floor of a backup over N connections
#   (b) pg_dump  pg_dump --data-only -t <table>... > /dev/null
#   (c) backup   mwaa-dr --store DIR backup --db SRC --jobs N
#   (a1) / (c1)  one core: (a) and `mwaa-dr backup --jobs 1`, each under `taskset -c 0` (the
#                client pinned to one CPU, as on a 1-vCPU worker; the server is not pinned)
#   (d) load     psql, one transaction: \copy <table> (<columns>) FROM '<table>.csv' of the same
#                tables (exported once beforehand) into an empty schema, in foreign-key order
#   (e) restore  mwaa-dr --store DIR --yes restore --db TARGET --clean --jobs N into an empty
#                schema; meanwhile a second session reads every restored table every 100 ms
#                (one psql per probe, lock_timeout 100 ms): the longest span in which a probe
#                found a table locked is the restore's lock window measured from outside,
#                printed next to the one the restore reports (its transaction's duration)
#   (h) anchor   pg_restore -j N of a custom-format pg_dump (schema and data; not measured) of
#                the same tables and the tables they refer to, into an empty database: what
#                PostgreSQL's own tools take to load and index the same rows
#   (f) failover mwaa-dr failover, Warm-Standby, on the emulators (moto, the MWAA stand-in):
#                primary UNAVAILABLE, standby AVAILABLE with its DAGs parsed and paused and its
#                scheduler job running; one health look (HEALTH_CHECK_MAX_RETRY=0), schedule
#                disabled, clean + restore of the backup of (c), DAGs unpaused, SNS published.
#                Reports the failover's own recovery time (start to DAGs unpaused).
#   (g) REST     the same Warm-Standby failover through MWAA InvokeRestApi with no database
#                URL: scripts/mwaa-e2e.sh --bench-source backs up the source database into
#                S3 on moto, starts a real Airflow 2.10.3 standby (scheduler, webserver, the
#                rendered DR DAGs) behind the MWAA stand-in, and the restore DAG's task
#                restores it there. Reports that failover's recovery time, the restore DAG's
#                task start included, next to (f)'s.
#   (s) / (t)    (c) and (e) through S3 on moto (`--store s3://BUCKET/dr`): the store MWAA
#                uses, with its multipart upload buffers; for their peak RSS
#
# Targets: c/a <= 1.3, c/a2 <= 1.1, c1/a1 <= 1.3, e/d <= 1.5, e/h <= 1.2, lock window <= 2 s,
# peak RSS of mwaa-dr (c, c1, e, s, t) <= 50 MB, Warm-Standby recovery <= 30 s, through the
# REST path <= 90 s (reported, not enforced).
# When mwaa-dr cannot be built or a step of it fails, (a), (b) and (d) are still measured,
# (c) / (e) are marked failed and the exit code is 1.
#
# Environment:
#   MWAA_DR_BIN    the mwaa-dr binary to measure (default: `cargo build --release`, which
#                  respects CARGO_TARGET_DIR)
#   MWAA_DR_BENCH_DIR, MWAA_DR_TEST_PG_BIN   see scripts/testbench.sh
#   TMPDIR         where the work directory goes (it needs about 1 GB at scale 1)
#
# Installs the Debian package `time` when /usr/bin/time is missing and this runs as root
# with apt-get; without it, wall times are measured by the shell and peak RSS is not.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo
readonly fixture=$repo/tests/fixtures/airflow/schema-2.10.3.sql
readonly fill_sql=$repo/scripts/sql/fill-metadata.sql
# The tables of a backup, in foreign-key order (parents first).
readonly backup_tables=(log_template slot_pool variable connection job trigger dag_run
    dag_run_note task_instance task_instance_note task_instance_history task_fail
    task_reschedule rendered_task_instance_fields xcom log)
readonly target_ca2=1.1 target_c1a1=1.3
readonly target_ca=1.3 target_ed=1.5 target_eh=1.2 target_lock_s=2 target_rss_mb=50 target_recovery_s=30 target_rest_recovery_s=90

log() { echo "bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    sed -n '5,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

scale=1
jobs=2
keep=0
rest=1
while (($# > 0)); do
    case $1 in
    --scale)
        (($# >= 2)) || usage
        scale=$2
        shift 2
        ;;
    --scale=*)
        scale=${1#*=}
        shift
        ;;
    --jobs)
        (($# >= 2)) || usage
        jobs=$2
        shift 2
        ;;
    --jobs=*)
        jobs=${1#*=}
        shift
        ;;
    --keep)
        keep=1
        shift
        ;;
    --no-rest)
        rest=0
        shift
        ;;
    -h | --help) usage ;;
    *)
        log "unknown argument: $1"
        usage
        ;;
    esac
done
if [[ ! $scale =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ || $scale =~ ^[0.]+$ ]]; then
    die "--scale wants a positive number, not '$scale'"
fi
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs wants a positive integer, not '$jobs'"

# ---------------------------------------------------------------------------------------
# Outer part: tools and the release build, then the inner part with a PostgreSQL server.

if [[ -z ${MWAA_DR_BENCH_INNER:-} ]]; then
    if [[ ! -x /usr/bin/time ]]; then
        if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "installing the Debian package time (for /usr/bin/time)"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >&2 ||
                { apt-get update -qq >&2 &&
                    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >&2; } ||
                log "could not install time; peak RSS will not be measured"
        else
            log "/usr/bin/time not found (Debian/Ubuntu: apt-get install time); peak RSS will not be measured"
        fi
    fi
    bin=
    bin_error=
    if [[ -n ${MWAA_DR_BIN:-} ]]; then
        if [[ -x $MWAA_DR_BIN ]]; then
            bin=$MWAA_DR_BIN
        else
            bin_error="MWAA_DR_BIN=$MWAA_DR_BIN is not executable"
        fi
    elif ! command -v cargo >/dev/null 2>&1; then
        bin_error="cargo not found"
    else
        log "building mwaa-dr (release)"
        if cargo build --release --bin mwaa-dr --manifest-path "$repo/Cargo.toml" >&2; then
            target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
                sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
            if [[ -n $target_dir && -x $target_dir/release/mwaa-dr ]]; then
                bin=$target_dir/release/mwaa-dr
            else
                bin_error="release binary not found under '${target_dir:-?}'"
            fi
        else
            bin_error="cargo build --release failed"
        fi
    fi
    [[ -n $bin_error ]] && log "mwaa-dr steps will be marked failed: $bin_error"
    args=(--scale "$scale" --jobs "$jobs")
    ((keep)) && args+=(--keep)
    ((rest)) || args+=(--no-rest)
    MWAA_DR_BENCH_INNER=1 MWAA_DR_BIN=$bin MWAA_DR_BENCH_BIN_ERROR=$bin_error \
        exec "$repo/scripts/testbench.sh" run pg moto mwaa -- "$repo/scripts/bench.sh" "${args[@]}"
fi

# ---------------------------------------------------------------------------------------
# Inner part: runs with MWAA_DR_TEST_PG_URL / MWAA_DR_TEST_PG_BIN of a running server.

: "${MWAA_DR_TEST_PG_URL:?not set: run scripts/bench.sh, not this part on its own}"
: "${MWAA_DR_TEST_PG_BIN:?not set}"
bin=${MWAA_DR_BIN:-}
bin_error=${MWAA_DR_BENCH_BIN_ERROR:-}
readonly pg_bin=$MWAA_DR_TEST_PG_BIN
readonly admin_url=$MWAA_DR_TEST_PG_URL
readonly server_url=${admin_url%/*}
readonly src_url=$server_url/mwaa_dr_bench_src
readonly copy_url=$server_url/mwaa_dr_bench_copy
readonly restore_url=$server_url/mwaa_dr_bench_restore
readonly anchor_url=$server_url/mwaa_dr_bench_anchor

work=$(mktemp -d "${TMPDIR:-/tmp}/mwaa-dr-bench-work.XXXXXX")
finish() {
    if ((keep)); then
        log "work directory kept: $work"
    else
        rm -rf "$work"
    fi
}
trap finish EXIT
mkdir -p "$work/csv" "$work/store" "$work/logs"

psql_q() {
    local url=$1
    shift
    PGOPTIONS='-c client_min_messages=warning' "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -d "$url" "$@"
}
psql_v() {
    "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}
new_db() {
    psql_q "$admin_url" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
    psql_q "$server_url/$1" -f "$fixture" >/dev/null
}
# Sum of the row counts of the backup tables in a database.
count_rows() {
    local url=$1 sql="SELECT 0" t
    for t in "${tables[@]}"; do
        sql+=" + (SELECT count(*) FROM \"$t\")"
    done
    psql_v "$url" "$sql"
}

# CPU time the whole machine has spent busy so far (every CPU, in clock ticks; the server,
# the client and anything else), from /proc/stat.
busy_ticks() {
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat 2>/dev/null || echo 0
}
readonly clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)

# measure ID COMMAND...: runs COMMAND, records wall[ID], rss[ID] (MB), cpu[ID] (seconds the
# machine's CPUs were busy meanwhile), rc[ID]; its output goes to $work/logs/ID.log.
declare -A wall=() rss=() rc=() rows=() cpu=()
measure() {
    local id=$1 tf=$work/logs/$1.time status=0 start end busy_start
    shift
    busy_start=$(busy_ticks)
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -v -o "$tf" "$@" >"$work/logs/$id.log" 2>&1 || status=$?
        wall[$id]=$(awk -F': ' '/Elapsed \(wall clock\)/ {
            n = split($2, p, ":"); s = 0
            for (i = 1; i <= n; i++) s = s * 60 + p[i]
            printf "%.2f", s }' "$tf")
        rss[$id]=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$tf")
    else
        start=$(date +%s.%N)
        "$@" >"$work/logs/$id.log" 2>&1 || status=$?
        end=$(date +%s.%N)
        wall[$id]=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
        rss[$id]=
    fi
    rc[$id]=$status
    cpu[$id]=$(awk -v a="$busy_start" -v b="$(busy_ticks)" -v t="$clk_tck" 'BEGIN { printf "%.2f", (b - a) / t }')
    return 0
}

echo "mwaa-dr benchmark: scale $scale, --jobs $jobs, $(nproc) CPUs," \
    "PostgreSQL $(psql_v "$admin_url" 'SHOW server_version' | cut -d' ' -f1)" \
    "(fsync off) on ${server_url#*@}"

# ---------------------------------------------------------------------------------------
# Source database

log "creating the source database (Airflow 2.10.3 schema) and filling it at scale $scale"
new_db mwaa_dr_bench_src
start=$SECONDS
psql_q "$src_url" -v scale="$scale" -f "$fill_sql" >"$work/logs/fill.log"
fill_seconds=$((SECONDS - start))
# Let autovacuum's work after the load not disturb the measurements.
psql_q "$src_url" -c "VACUUM (ANALYZE)"

tables=()
for t in "${backup_tables[@]}"; do
    [[ $(psql_v "$src_url" "SELECT to_regclass('public.$t') IS NOT NULL") == t ]] && tables+=("$t")
done
declare -A cols=()
for t in "${tables[@]}"; do
    cols[$t]=$(psql_v "$src_url" "SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
        FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '$t'")
done
src_rows=$(count_rows "$src_url")
echo "source: ${#tables[@]} tables, $src_rows rows, $(psql_v "$src_url" \
    "SELECT pg_size_pretty(sum(pg_total_relation_size(quote_ident(t)))) FROM unnest(string_to_array('${tables[*]}', ' ')) t")" \
    "with indexes; filled in ${fill_seconds} s"

# ---------------------------------------------------------------------------------------
# (a) the floor, (b) pg_dump

for t in "${tables[@]}"; do
    echo "\\copy (SELECT ${cols[$t]} FROM \"$t\") TO '/dev/null' WITH (FORMAT csv, HEADER true)"
done >"$work/floor.sql"
log "(a) psql \\copy TO /dev/null"
measure a "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -d "$src_url" -f "$work/floor.sql"
rows[a]=$src_rows

dump_args=()
for t in "${tables[@]}"; do dump_args+=(--table="public.\"$t\""); done
log "(b) pg_dump --data-only"
measure b "$pg_bin/pg_dump" --data-only --no-owner --no-privileges -f /dev/null -d "$src_url" \
    "${dump_args[@]}"
rows[b]=$src_rows

# (a2) the parallel floor: the same \copy commands over $jobs psql processes, the tables
# split biggest first, each to the process with the fewest bytes so far.
declare -a share=()
for ((i = 0; i < jobs; i++)); do share[i]=0; : >"$work/floor-$i.sql"; done
while read -r size t; do
    least=0
    for ((i = 1; i < jobs; i++)); do
        if ((share[i] < share[least])); then least=$i; fi
    done
    share[least]=$((share[least] + size))
    echo "\\copy (SELECT ${cols[$t]} FROM \"$t\") TO '/dev/null' WITH (FORMAT csv, HEADER true)" >>"$work/floor-$least.sql"
done < <(for t in "${tables[@]}"; do
    echo "$(psql_v "$src_url" "SELECT pg_relation_size(to_regclass(quote_ident('$t')))") $t"
done | sort -rn)
{
    echo 'pids=()'
    for ((i = 0; i < jobs; i++)); do
        printf '"%s" -X -q -v ON_ERROR_STOP=1 -d "%s" -f "%s" & pids+=($!)\n' \
            "$pg_bin/psql" "$src_url" "$work/floor-$i.sql"
    done
    echo 'status=0; for p in "${pids[@]}"; do wait "$p" || status=$?; done; exit $status'
} >"$work/floor-parallel.sh"
log "(a2) psql \\copy TO /dev/null over $jobs processes"
measure a2 bash "$work/floor-parallel.sh"
rows[a2]=$src_rows

# ---------------------------------------------------------------------------------------
# (c) mwaa-dr backup

if [[ -n $bin ]]; then
    log "(c) mwaa-dr backup"
    measure c "$bin" --no-dotenv --store "$work/store" backup --db "$src_url" --jobs "$jobs"
else
    rc[c]=-1
fi
rows[c]=$src_rows

# (a1), (c1): one core, the client pinned to CPU 0.
if command -v taskset >/dev/null 2>&1; then
    log "(a1) psql \\copy TO /dev/null under taskset -c 0"
    measure a1 taskset -c 0 "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -d "$src_url" -f "$work/floor.sql"
    if [[ -n $bin ]]; then
        log "(c1) mwaa-dr backup --jobs 1 under taskset -c 0"
        measure c1 taskset -c 0 "$bin" --no-dotenv --store "$work/store-one-core" backup \
            --db "$src_url" --jobs 1
    else
        rc[c1]=-1
    fi
else
    log "taskset not found (util-linux): the one-core run is skipped"
    rc[a1]=-3 rc[c1]=-3
fi
rows[a1]=$src_rows rows[c1]=$src_rows

# ---------------------------------------------------------------------------------------
# (d) psql \copy FROM the CSV files, one transaction

log "exporting the tables to CSV files (not measured)"
for t in "${tables[@]}"; do
    echo "\\copy (SELECT ${cols[$t]} FROM \"$t\") TO '$work/csv/$t.csv' WITH (FORMAT csv, HEADER true)"
done >"$work/export.sql"
psql_q "$src_url" -f "$work/export.sql"
csv_size=$(du -sh "$work/csv" | cut -f1)

{
    # The empty schema already holds Airflow's own rows: the log_template row(s) the DAG runs
    # refer to (kept, not loaded), and default_pool (replaced by the source's pools).
    echo "DELETE FROM slot_pool;"
    for t in "${tables[@]}"; do
        [[ $t == log_template ]] && continue
        echo "\\copy \"$t\" (${cols[$t]}) FROM '$work/csv/$t.csv' WITH (FORMAT csv, HEADER true)"
    done
    for t in "${tables[@]}"; do
        [[ $(psql_v "$src_url" "SELECT pg_get_serial_sequence('public.\"$t\"', 'id') IS NOT NULL
            FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '$t'
            AND column_name = 'id'") == t ]] || continue
        echo "SELECT setval(pg_get_serial_sequence('\"$t\"', 'id'), max(id)) FROM \"$t\" HAVING max(id) IS NOT NULL;"
    done
} >"$work/load.sql"
new_db mwaa_dr_bench_copy
log "(d) psql \\copy FROM CSV, one transaction"
measure d "$pg_bin/psql" -X -q -1 -v ON_ERROR_STOP=1 -d "$copy_url" -f "$work/load.sql"
rows[d]=$(count_rows "$copy_url")

# ---------------------------------------------------------------------------------------
# (e) mwaa-dr restore

# probe URL STOPFILE: until STOPFILE exists, every 100 ms one session reads a row of every
# backup table with a 100 ms lock timeout; prints "<start epoch> ok|blocked" per probe.
probe() {
    local url=$1 stop=$2 sql="SELECT 1" t start
    for t in "${tables[@]}"; do
        sql+=", (SELECT count(*) FROM (SELECT 1 FROM \"$t\" LIMIT 1) x)"
    done
    while [[ ! -e $stop ]]; do
        start=$(date +%s.%N)
        if PGOPTIONS='-c lock_timeout=100' "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$url" \
            -c "$sql" >/dev/null 2>>"$work/logs/probe.err"; then
            echo "$start ok"
        else
            echo "$start blocked"
        fi
        sleep 0.1
    done
}
# The longest run of blocked probes, from the first blocked probe's start to the next
# readable probe's start (an upper bound, to the probe's period); and the probe count.
longest_blocked() {
    awk '$2 == "blocked" && from == "" { from = $1 }
        $2 == "ok" && from != "" { if ($1 - from > max) max = $1 - from; from = "" }
        { last = $1; n++ }
        END { if (from != "" && last - from > max) max = last - from
              printf "%.2f %d\n", max, n }' "$1"
}

store_size=
lock_outside=
lock_reported=
if [[ -n $bin && ${rc[c]} == 0 ]]; then
    store_size=$(du -sh "$work/store" | cut -f1)
    new_db mwaa_dr_bench_restore
    log "(e) mwaa-dr restore --clean --jobs $jobs, probed every 100 ms by a reader"
    rm -f "$work/probe.stop"
    probe "$restore_url" "$work/probe.stop" >"$work/logs/probe.log" &
    probe_pid=$!
    sleep 1
    measure e "$bin" --no-dotenv --store "$work/store" --yes restore --db "$restore_url" --clean \
        --jobs "$jobs"
    sleep 1
    touch "$work/probe.stop"
    wait "$probe_pid" || true
    read -r lock_outside probes < <(longest_blocked "$work/logs/probe.log")
    lock_reported=$(sed -n "s/.*tables were locked for \([0-9.]*\) s.*/\1/p" "$work/logs/e.log" | head -n 1)
    # Where the rest of the restore went, as it reports it.
    shadow_load=$(sed -n "s/.*into shadow tables over [0-9]* connections in \([0-9.]*\) s.*/\1/p" "$work/logs/e.log" | head -n 1)
    fk_validation=$(sed -n "s/.*foreign keys were validated after the commit in \([0-9.]*\) s.*/\1/p" "$work/logs/e.log" | head -n 1)
    rows[e]=$(count_rows "$restore_url")
    log "lock window: ${lock_outside} s seen by $probes probes, ${lock_reported:-?} s reported"
else
    rc[e]=-1
fi

# ---------------------------------------------------------------------------------------
# (h) the anchor: pg_restore -j N of a custom-format dump into an empty database

# The backup tables and, transitively, the tables their foreign keys refer to (so that the
# dump restores without errors into an empty database).
dump_tables=$(psql_v "$src_url" "WITH RECURSIVE t(oid) AS (
        SELECT to_regclass(quote_ident(n)) FROM unnest(string_to_array('${tables[*]}', ' ')) n
        UNION SELECT c.confrelid FROM pg_constraint c JOIN t ON c.conrelid = t.oid WHERE c.contype = 'f')
    SELECT string_agg(quote_ident(relname), ' ') FROM pg_class WHERE oid IN (SELECT oid FROM t)")
anchor_args=()
for t in $dump_tables; do anchor_args+=(--table="public.$t"); done
log "dumping ${#anchor_args[@]} tables in pg_dump's custom format (not measured)"
"$pg_bin/pg_dump" -Fc --no-owner --no-privileges -f "$work/anchor.dump" -d "$src_url" "${anchor_args[@]}"
psql_q "$admin_url" -c "DROP DATABASE IF EXISTS mwaa_dr_bench_anchor" -c "CREATE DATABASE mwaa_dr_bench_anchor"
log "(h) pg_restore -j $jobs into an empty database"
measure h "$pg_bin/pg_restore" -j "$jobs" --no-owner --no-privileges --exit-on-error -d "$anchor_url" \
    "$work/anchor.dump"
rows[h]=$(count_rows "$anchor_url")

# ---------------------------------------------------------------------------------------
# (f) mwaa-dr failover, Warm-Standby, on the emulators

readonly standby_url=$server_url/mwaa_dr_bench_standby
recovery=
if [[ -n $bin && ${rc[c]} == 0 && -n ${MWAA_DR_TEST_MOTO_URL:-} && -n ${MWAA_DR_TEST_MWAA_URL:-} ]]; then
    new_db mwaa_dr_bench_standby
    # The standby's scheduler has parsed the DAG files (paused) and runs its own job.
    "$pg_bin/pg_dump" --data-only --table=dag -d "$src_url" | "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -d "$standby_url" >/dev/null
    "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -d "$standby_url" \
        -c "UPDATE dag SET is_paused = true" \
        -c "INSERT INTO job (state, job_type, hostname, latest_heartbeat) VALUES ('running', 'SchedulerJob', 'standby', now())" >/dev/null
    suffix=$$-$RANDOM
    primary_env=bench-primary-$suffix
    standby_env=bench-standby-$suffix
    schedule=bench-health-$suffix
    sig() { echo "AWS4-HMAC-SHA256 Credential=testing/20260101/$1/$2/aws4_request, SignedHeaders=host, Signature=0"; }
    curl -fsS -X POST "$MWAA_DR_TEST_MWAA_URL/_standin/environments?region=us-east-1" \
        -H 'content-type: application/json' -d "{\"Name\": \"$primary_env\", \"Status\": \"UNAVAILABLE\"}" >/dev/null
    curl -fsS -X POST "$MWAA_DR_TEST_MWAA_URL/_standin/environments?region=us-east-2" \
        -H 'content-type: application/json' -d "{\"Name\": \"$standby_env\", \"Status\": \"AVAILABLE\"}" >/dev/null
    curl -fsS -X POST "$MWAA_DR_TEST_MOTO_URL/schedules/$schedule" -H "Authorization: $(sig us-east-2 scheduler)" \
        -H 'content-type: application/json' \
        -d '{"ScheduleExpression": "rate(5 minutes)", "FlexibleTimeWindow": {"Mode": "OFF"}, "State": "ENABLED", "Target": {"Arn": "arn:aws:states:us-east-2:123456789012:stateMachine:health", "RoleArn": "arn:aws:iam::123456789012:role/scheduler"}}' >/dev/null
    topic=$(curl -fsS -X POST "$MWAA_DR_TEST_MOTO_URL/" -H "Authorization: $(sig us-east-2 sns)" \
        -d "Action=CreateTopic&Name=bench-$suffix" | sed -n 's:.*<TopicArn>\(.*\)</TopicArn>.*:\1:p')
    log "(f) mwaa-dr failover (Warm-Standby, on the emulators)"
    measure f env AWS_ENDPOINT_URL="$MWAA_DR_TEST_MOTO_URL" AWS_ENDPOINT_URL_MWAA="$MWAA_DR_TEST_MWAA_URL" \
        AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
        DR_TYPE=WARM_STANDBY PRIMARY_REGION=us-east-1 SECONDARY_REGION=us-east-2 \
        PRIMARY_MWAA_ENVIRONMENT_NAME="$primary_env" SECONDARY_MWAA_ENVIRONMENT_NAME="$standby_env" \
        SECONDARY_DB_URL="$standby_url" HEALTH_CHECK_MAX_RETRY=0 HEALTH_CHECK_SCHEDULE_NAME="$schedule" \
        DR_SNS_TOPIC_ARN="$topic" \
        "$bin" --no-dotenv --store "$work/store" --yes --output json failover
    if [[ ${rc[f]} == 0 ]]; then
        rows[f]=$(count_rows "$standby_url")
        recovery=$(grep -o '"recovery_seconds": *[0-9.]*' "$work/logs/f.log" | grep -o '[0-9.]*$' |
            awk '{ printf "%.1f", $1 }' || true)
    fi
else
    rc[f]=-1
fi

# (s) / (t) the same backup and restore through S3 on moto: the store MWAA uses, with its
# multipart upload buffers (peak RSS)

readonly s3_restore_url=$server_url/mwaa_dr_bench_s3_restore
if [[ -n $bin && -n ${MWAA_DR_TEST_MOTO_URL:-} ]]; then
    s3_bucket=bench-$$-$RANDOM
    curl -fsS -X PUT "$MWAA_DR_TEST_MOTO_URL/$s3_bucket" \
        -H "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0" >/dev/null
    s3_env=(env AWS_ENDPOINT_URL="$MWAA_DR_TEST_MOTO_URL" AWS_ACCESS_KEY_ID=testing
        AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true)
    log "(s) mwaa-dr backup --jobs $jobs to S3 (moto)"
    measure s "${s3_env[@]}" "$bin" --no-dotenv --store "s3://$s3_bucket/dr" backup --db "$src_url" --jobs "$jobs"
    rows[s]=$src_rows
    if [[ ${rc[s]} == 0 ]]; then
        new_db mwaa_dr_bench_s3_restore
        log "(t) mwaa-dr restore --clean --jobs $jobs from S3 (moto)"
        measure t "${s3_env[@]}" "$bin" --no-dotenv --store "s3://$s3_bucket/dr" --yes restore \
            --db "$s3_restore_url" --clean --jobs "$jobs"
        [[ ${rc[t]} == 0 ]] && rows[t]=$(count_rows "$s3_restore_url")
    else
        rc[t]=-1
    fi
else
    rc[s]=-1 rc[t]=-1
fi

# (g) the Warm-Standby failover through the REST API into a real Airflow standby
rest_recovery=
if ((!rest)); then
    rc[g]=-2
elif [[ -n $bin && ${rc[c]} == 0 && -n ${MWAA_DR_TEST_MOTO_URL:-} ]]; then
    log "(g) mwaa-dr failover through the REST API (real Airflow 2.10.3 standby)"
    measure g env MWAA_DR_BIN="$bin" "$repo/scripts/mwaa-e2e.sh" --bench-source "$src_url" 2.10.3
    if [[ ${rc[g]} == 0 ]]; then
        rest_recovery=$(sed -n 's/^bench: recovery_seconds=\([0-9.]*\).*/\1/p' "$work/logs/g.log" |
            awk '{ printf "%.1f", $1 }')
        rows[g]=$(sed -n 's/^bench: .*restored_rows=\([0-9]*\).*/\1/p' "$work/logs/g.log")
    fi
else
    rc[g]=-1
fi

# ---------------------------------------------------------------------------------------
# Report

first_error() {
    local f=$work/logs/$1.log
    if [[ -s $f ]]; then
        grep -m1 -iE 'error|not available|fail' "$f" || head -n 1 "$f"
    fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
meets() { awk -v v="$1" -v t="$2" 'BEGIN { exit !(v != "n/a" && v + 0 <= t + 0) }'; }

echo
printf '%-44s %8s %10s %10s %12s %8s\n' step "wall s" rows "rows/s" "peak RSS MB" "CPU s"
row() {
    local id=$1 label=$2 why
    if [[ ${rc[$id]:-} == 0 ]]; then
        printf '%-44s %8s %10s %10s %12s %8s\n' "$label" "${wall[$id]}" "${rows[$id]:-}" \
            "$(awk -v r="${rows[$id]:-0}" -v w="${wall[$id]}" 'BEGIN { if (w > 0) printf "%d", r / w; else print "-" }')" \
            "${rss[$id]:-n/a}" "${cpu[$id]:-}"
    else
        if [[ ${rc[$id]:-} == -2 ]]; then
            printf '%-44s %8s  skipped (--no-rest)\n' "$label" -
            return
        elif [[ ${rc[$id]:-} == -3 ]]; then
            printf '%-44s %8s  skipped (no taskset)\n' "$label" -
            return
        elif [[ ${rc[$id]:-} == -1 ]]; then
            why=${bin_error:-"not run: the backup failed"}
        else
            why="exit ${rc[$id]}: $(first_error "$id")"
        fi
        printf '%-44s %8s  FAILED (%s)\n' "$label" "${wall[$id]:--}" "${why:0:90}"
    fi
}
row a "(a) psql \\copy TO /dev/null (floor)"
row a2 "(a2) the same over $jobs psql processes"
row b "(b) pg_dump --data-only"
row c "(c) mwaa-dr backup --jobs $jobs"
row a1 "(a1) (a) under taskset -c 0"
row c1 "(c1) mwaa-dr backup --jobs 1, taskset -c 0"
row d "(d) psql \\copy FROM csv (1 transaction)"
row e "(e) mwaa-dr restore --clean --jobs $jobs"
row h "(h) pg_restore -j $jobs (anchor)"
row s "(s) (c) to S3 (moto)"
row t "(t) (e) from S3 (moto)"
row f "(f) mwaa-dr failover (Warm-Standby)"
row g "(g) failover through the REST API"
echo
echo "CSV export: $csv_size${store_size:+; backup store: $store_size}"

verdict=0
if [[ ${rc[c]} == 0 ]]; then
    r=$(ratio "${wall[c]}" "${wall[a]}")
    if meets "$r" "$target_ca"; then s=ok; else s=MISSED verdict=1; fi
    echo "c/a = $r (target <= $target_ca): $s"
else
    echo "c/a = n/a (backup failed)"
    verdict=1
fi
if [[ ${rc[c]} == 0 && ${rc[a2]} == 0 ]]; then
    r=$(ratio "${wall[c]}" "${wall[a2]}")
    if meets "$r" "$target_ca2"; then s=ok; else s=MISSED verdict=1; fi
    echo "c/a2 = $r (backup / parallel floor, $jobs connections; target <= $target_ca2): $s"
    # When the server and the client share the cores, the backup cannot end before the CPU
    # it needs (server and client together) has run on them.
    echo "  machine CPU busy: (a2) ${cpu[a2]} s in ${wall[a2]} s, (c) ${cpu[c]} s in ${wall[c]} s on $(nproc) CPUs;" \
        "c's CPU-bound floor here = $(awk -v c="${cpu[c]}" -v n="$(nproc)" 'BEGIN { printf "%.2f", c / n }') s"
else
    echo "c/a2 = n/a (backup or parallel floor failed)"
    verdict=1
fi
if [[ ${rc[c1]} == 0 && ${rc[a1]} == 0 ]]; then
    r=$(ratio "${wall[c1]}" "${wall[a1]}")
    if meets "$r" "$target_c1a1"; then s=ok; else s=MISSED verdict=1; fi
    echo "c1/a1 = $r (one core: backup --jobs 1 / floor; target <= $target_c1a1): $s"
elif [[ ${rc[c1]} == -3 ]]; then
    echo "c1/a1 = n/a (no taskset)"
else
    echo "c1/a1 = n/a (one-core backup or floor failed)"
    verdict=1
fi
if [[ ${rc[e]} == 0 ]]; then
    r=$(ratio "${wall[e]}" "${wall[d]}")
    if meets "$r" "$target_ed"; then s=ok; else s=MISSED verdict=1; fi
    echo "e/d = $r (target <= $target_ed): $s"
else
    echo "e/d = n/a (restore failed or not run)"
    verdict=1
fi
if [[ ${rc[e]} == 0 && ${rc[h]} == 0 ]]; then
    r=$(ratio "${wall[e]}" "${wall[h]}")
    if meets "$r" "$target_eh"; then s=ok; else s=MISSED verdict=1; fi
    echo "e/h = $r (restore / pg_restore -j $jobs; target <= $target_eh): $s"
else
    echo "e/h = n/a (restore or pg_restore failed)"
    verdict=1
fi
if [[ -n $lock_outside ]]; then
    if meets "$lock_outside" "$target_lock_s"; then s=ok; else s=MISSED verdict=1; fi
    echo "restore lock window = $lock_outside s seen by a reader probing every 100 ms ($probes probes;" \
        "the restore reports ${lock_reported:-n/a} s; target <= $target_lock_s s): $s"
else
    echo "restore lock window = n/a"
fi
if [[ -n ${shadow_load:-} ]]; then
    echo "restore: shadow tables loaded and indexed in $shadow_load s, transaction ${lock_reported:-n/a} s," \
        "foreign keys validated after the commit in ${fk_validation:-n/a} s (of ${wall[e]} s)"
fi
peak=
for id in c c1 e s t; do
    [[ ${rc[$id]} == 0 && -n ${rss[$id]:-} ]] || continue
    if [[ -z $peak ]] || awk -v a="${rss[$id]}" -v b="$peak" 'BEGIN { exit !(a > b) }'; then
        peak=${rss[$id]}
    fi
done
if [[ -n $peak ]]; then
    if meets "$peak" "$target_rss_mb"; then s=ok; else s=MISSED verdict=1; fi
    echo "mwaa-dr peak RSS = $peak MB (target <= $target_rss_mb MB): $s"
else
    echo "mwaa-dr peak RSS = n/a"
fi
if [[ -n $recovery ]]; then
    if meets "$recovery" "$target_recovery_s"; then s=ok; else s=MISSED verdict=1; fi
    echo "Warm-Standby recovery time (failover start to DAGs unpaused) = $recovery s (target <= $target_recovery_s s): $s"
else
    echo "Warm-Standby recovery time = n/a (failover failed or not run)"
    verdict=1
fi
if [[ -n $rest_recovery ]]; then
    if meets "$rest_recovery" "$target_rest_recovery_s"; then s=ok; else s=MISSED verdict=1; fi
    echo "Warm-Standby recovery time through the REST API (restore DAG's task start included) = $rest_recovery s (target <= $target_rest_recovery_s s; direct path: ${recovery:-n/a} s): $s"
else
    echo "Warm-Standby recovery time through the REST API = n/a (failed or not run)"
    verdict=1
fi
failed=()
for id in a a2 b c a1 c1 d e f g h; do
    [[ ${rc[$id]} == 0 || ${rc[$id]} == -2 || ${rc[$id]} == -3 ]] || failed+=("($id)")
done
if ((${#failed[@]} > 0)); then
    echo "result: failed steps: ${failed[*]}"
    ((keep)) || echo "(--keep keeps the logs of every step)"
    exit 1
fi
if ((verdict)); then
    echo "result: every step ran; a target is missed"
else
    echo "result: every step ran; every target is met"
fi
