#!/usr/bin/env bash
# End-to-end demo on one machine, no AWS needed: back up a filled Airflow 2.10.3 metadata
# database and restore it into a second, empty one.
#
# Usage: scripts/demo.sh [--scale S] [--store DIR] [--release]
#
#   --scale S     volume of the generated metadata (default 0.01: 200 DAG runs, 10,000 task
#                 instances, ~10,000 XComs, 10,000 log rows; 1 = 100 times that)
#   --store DIR   keep the backups in DIR (default: a temporary directory, removed at exit)
#   --release     build mwaa-dr in release mode (default: debug, quicker to build)
#
# Steps: builds mwaa-dr with cargo (CARGO_TARGET_DIR is respected), installs the PostgreSQL
# server with apt-get when it is missing and this runs as root, starts a throwaway
# PostgreSQL server through scripts/testbench.sh, creates airflow_primary and
# airflow_standby from tests/fixtures/airflow/schema-2.10.3.sql, fills the primary with
# scripts/sql/fill-metadata.sql, then runs
#
#   mwaa-dr --store STORE backup --db PRIMARY_URL
#   mwaa-dr --store STORE --yes restore --db STANDBY_URL
#   mwaa-dr --store STORE list
#
# and compares the row counts of the restorable tables. The server is stopped at the end
# (a server left running by `scripts/testbench.sh start` is reused instead, and the two
# databases are then left in it for inspection).
#
# Environment:
#   MWAA_DR_BIN    use this mwaa-dr binary instead of building one
#   MWAA_DR_BENCH_DIR, MWAA_DR_TEST_PG_BIN   see scripts/testbench.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo
readonly fixture=$repo/tests/fixtures/airflow/schema-2.10.3.sql
readonly fill_sql=$repo/scripts/sql/fill-metadata.sql
readonly tables=(variable connection slot_pool log job dag_run trigger task_instance task_fail
    xcom task_reschedule rendered_task_instance_fields dag_run_note task_instance_note
    task_instance_history)
readonly in_flight_states="'running', 'restarting', 'queued', 'scheduled', 'up_for_retry', 'up_for_reschedule', 'deferred'"

log() { echo "demo: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    sed -n '5,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

scale=0.01
store=
profile=debug
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
    --store)
        (($# >= 2)) || usage
        store=$2
        shift 2
        ;;
    --store=*)
        store=${1#*=}
        shift
        ;;
    --release)
        profile=release
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

# ---------------------------------------------------------------------------------------
# Outer part: build, then run the inner part with a PostgreSQL server.

have_pg_server() {
    local d
    for d in "${MWAA_DR_TEST_PG_BIN:-}" /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
        [[ -n $d && -x $d/initdb && -x $d/pg_ctl && -x $d/postgres && -x $d/psql ]] && return 0
    done
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

if [[ -z ${MWAA_DR_DEMO_INNER:-} ]]; then
    if [[ -n ${MWAA_DR_BIN:-} ]]; then
        [[ -x $MWAA_DR_BIN ]] || die "MWAA_DR_BIN=$MWAA_DR_BIN is not an executable file"
        bin=$MWAA_DR_BIN
    else
        command -v cargo >/dev/null 2>&1 ||
            die "cargo not found (install the Rust toolchain with rustup, or set MWAA_DR_BIN)"
        cargo_flags=(--bin mwaa-dr --manifest-path "$repo/Cargo.toml")
        [[ $profile == release ]] && cargo_flags+=(--release)
        log "building mwaa-dr ($profile)"
        cargo build "${cargo_flags[@]}" >&2
        target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
        [[ -n $target_dir ]] || die "cargo metadata did not tell the target directory"
        bin=$target_dir/$profile/mwaa-dr
        [[ -x $bin ]] || die "built, but $bin is missing"
    fi
    if ! have_pg_server; then
        if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "installing the PostgreSQL server"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >&2
            pkg=postgresql
            if apt-cache show postgresql-15 >/dev/null 2>&1; then pkg=postgresql-15; fi
            apt-get install -y -qq --no-install-recommends "$pkg" >&2
            have_pg_server || die "the PostgreSQL server is still not found after installing it"
        else
            die "no PostgreSQL server found; install it (Debian/Ubuntu: sudo apt-get install postgresql-15) or set MWAA_DR_TEST_PG_BIN"
        fi
    fi
    args=(--scale "$scale")
    [[ -n $store ]] && args+=(--store "$store")
    MWAA_DR_DEMO_INNER=1 MWAA_DR_BIN=$bin exec "$repo/scripts/testbench.sh" run pg -- \
        "$repo/scripts/demo.sh" "${args[@]}"
fi

# ---------------------------------------------------------------------------------------
# Inner part: runs with MWAA_DR_TEST_PG_URL / MWAA_DR_TEST_PG_BIN of a running server.

: "${MWAA_DR_TEST_PG_URL:?not set: run scripts/demo.sh, not this part on its own}"
: "${MWAA_DR_TEST_PG_BIN:?not set}"
bin=${MWAA_DR_BIN:?not set}
readonly pg_bin=$MWAA_DR_TEST_PG_BIN
readonly admin_url=$MWAA_DR_TEST_PG_URL
readonly server_url=${admin_url%/*}
readonly primary_url=$server_url/airflow_primary
readonly standby_url=$server_url/airflow_standby

workdir=$(mktemp -d "${TMPDIR:-/tmp}/mwaa-dr-demo.XXXXXX")
cleanup() {
    rm -rf "$workdir"
}
trap cleanup EXIT
if [[ -z $store ]]; then
    store=$workdir/store
    keep_note="(temporary, removed at exit; --store DIR keeps it)"
else
    mkdir -p "$store"
    store=$(cd "$store" && pwd)
    keep_note="(kept)"
fi

step() { printf '\n==> %s\n' "$*"; }

psql_q() {
    local url=$1
    shift
    PGOPTIONS='-c client_min_messages=warning' "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -d "$url" "$@"
}
# One value from a query.
psql_v() {
    "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}

# Runs mwaa-dr, shows its output; stops the demo on a failure.
run_mwaa_dr() {
    local rc=0 out=$workdir/mwaa-dr.stderr
    printf '$ mwaa-dr %s\n' "$*" | sed -E 's#(postgres(ql)?://[^:/@]+:)[^@]*@#\1***@#g'
    "$bin" --no-dotenv "$@" 2>"$out" || rc=$?
    if ((rc != 0)); then
        cat "$out" >&2
        if ((rc == 2)) && grep -q 'not available' "$out"; then
            echo >&2
            log "this build of mwaa-dr does not implement '$(sub_command "$@")' yet (exit code 2)."
            log "the demo needs a version with backup, restore and list; nothing else went wrong."
        else
            log "mwaa-dr $(sub_command "$@") failed with exit code $rc"
        fi
        exit "$rc"
    fi
    if [[ -s $out ]]; then sed 's/^/  /' "$out" >&2; fi
}
sub_command() {
    local a
    for a in "$@"; do
        case $a in
        backup | restore | list | verify | cleanup) echo "$a" && return ;;
        esac
    done
    echo "$1"
}

step "Creating airflow_primary and airflow_standby from the Airflow 2.10.3 schema"
for db in airflow_primary airflow_standby; do
    psql_q "$admin_url" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
done
psql_q "$primary_url" -f "$fixture" >/dev/null
psql_q "$standby_url" -f "$fixture" >/dev/null
echo "PostgreSQL $(psql_v "$admin_url" 'SHOW server_version') on ${server_url#*@}"

step "Filling airflow_primary with Airflow metadata (scale $scale)"
start=$SECONDS
psql_q "$primary_url" -v scale="$scale" -f "$fill_sql"
echo "filled in $((SECONDS - start)) s"

step "The standby's scheduler has parsed the same DAG files: its dag rows exist, all paused"
"$pg_bin/pg_dump" --data-only --table=dag -d "$primary_url" | psql_q "$standby_url" >/dev/null
psql_q "$standby_url" -c "UPDATE dag SET is_paused = true" >/dev/null
echo "$(psql_v "$standby_url" 'SELECT count(*) FROM dag') DAGs, all paused; $(psql_v "$primary_url" 'SELECT count(*) FROM dag WHERE NOT is_paused') are active in the primary"

# The in-flight rows of the primary, which a backup leaves out.
declare -A in_flight=()
in_flight[task_instance]=$(psql_v "$primary_url" \
    "SELECT count(*) FROM task_instance WHERE state IN ($in_flight_states)")
in_flight[trigger]=$(psql_v "$primary_url" \
    "SELECT count(DISTINCT trigger_id) FROM task_instance WHERE state IN ($in_flight_states)")
for t in xcom task_fail task_reschedule rendered_task_instance_fields task_instance_note \
    task_instance_history; do
    [[ $(psql_v "$primary_url" "SELECT to_regclass('$t') IS NOT NULL") == t ]] || continue
    in_flight[$t]=$(psql_v "$primary_url" "SELECT count(*) FROM $t x
        JOIN task_instance ti USING (dag_id, task_id, run_id, map_index)
        WHERE ti.state IN ($in_flight_states)")
done

step "Backup of airflow_primary into $store $keep_note"
start=$SECONDS
run_mwaa_dr --store "$store" backup --db "$primary_url"
echo "backup took $((SECONDS - start)) s"

step "Restore of the latest backup into airflow_standby"
start=$SECONDS
run_mwaa_dr --store "$store" --yes restore --db "$standby_url"
echo "restore took $((SECONDS - start)) s"

echo "active DAGs in the standby after the restore: $(psql_v "$standby_url" 'SELECT count(*) FROM dag WHERE NOT is_paused')"

step "Backups in the store"
run_mwaa_dr --store "$store" list

step "Row counts, primary vs standby"
printf '%-31s %12s %12s  %s\n' table primary standby 'standby - primary'
for t in "${tables[@]}"; do
    [[ $(psql_v "$primary_url" "SELECT to_regclass('$t') IS NOT NULL") == t ]] || continue
    p=$(psql_v "$primary_url" "SELECT count(*) FROM $t")
    s=$(psql_v "$standby_url" "SELECT count(*) FROM $t")
    if [[ $p == "$s" ]]; then
        note="="
    else
        note=$(printf '%+d' $((s - p)))
    fi
    if [[ -n ${in_flight[$t]:-} && ${in_flight[$t]} != 0 ]]; then
        note+="  (${in_flight[$t]} in flight in the primary)"
    fi
    printf '%-31s %12s %12s  %s\n' "$t" "$p" "$s" "$note"
done
cat <<'EOF'

Task instances that are in flight in the primary (running, restarting, queued, scheduled,
up_for_retry, up_for_reschedule, deferred) and the rows that refer to them are intentionally
not restored: their workers are gone with the primary environment. slot_pool holds Airflow's
own default_pool in both databases.
EOF
