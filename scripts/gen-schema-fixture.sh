#!/usr/bin/env bash
# Produce a schema fixture from real Apache Airflow: a plain-SQL dump of the metadata
# database exactly as `airflow db init` (2.4-2.6) or `airflow db migrate` (2.7+) leaves it,
# schema and the rows Airflow inserts (alembic_version, default_pool, log_template, and on
# 2.4-2.6 the default connections).
#
# Usage: scripts/gen-schema-fixture.sh VERSION [OUT]
#   OUT defaults to tests/fixtures/airflow/schema-VERSION.sql
#
# Needs a PostgreSQL server:
#   MWAA_DR_TEST_PG_URL  superuser URL, e.g. postgres://mwaa_dr:pw@127.0.0.1:5432/postgres
#   MWAA_DR_TEST_PG_BIN  directory holding psql and pg_dump (default: from PATH)
# When MWAA_DR_TEST_PG_URL is unset, the script runs itself again under
# `scripts/testbench.sh run pg`, which starts a throwaway server and sets both.
#
# The fixture loads into any empty database as a superuser that does not own anything:
#   psql -v ON_ERROR_STOP=1 -d NEWDB -f OUT
# Before writing OUT, the script proves that: it loads the dump into a second database,
# checks that a re-dump is identical, and runs `airflow db check-migrations` and
# `airflow db check` of that version against it. Both databases are dropped at the end.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)

die() {
    echo "gen-schema-fixture: $*" >&2
    exit 1
}
log() { echo "gen-schema-fixture: $*" >&2; }

usage() {
    echo "usage: $0 VERSION [OUT]   (e.g. $0 2.10.3)" >&2
    exit 2
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
version=$1
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || usage
out=${2:-$repo_root/tests/fixtures/airflow/schema-$version.sql}
case $out in /*) ;; *) out=$PWD/$out ;; esac

if [ -z "${MWAA_DR_TEST_PG_URL:-}" ]; then
    [ -z "${MWAA_DR_GEN_FIXTURE_REEXEC:-}" ] ||
        die "scripts/testbench.sh did not provide MWAA_DR_TEST_PG_URL"
    [ -f "$script_dir/testbench.sh" ] ||
        die "set MWAA_DR_TEST_PG_URL (and MWAA_DR_TEST_PG_BIN) to a PostgreSQL superuser URL"
    export MWAA_DR_GEN_FIXTURE_REEXEC=1
    exec bash "$script_dir/testbench.sh" run pg -- "$script_dir/gen-schema-fixture.sh" "$version" "$out"
fi

pg_url=$MWAA_DR_TEST_PG_URL
pg_bin=${MWAA_DR_TEST_PG_BIN:+$MWAA_DR_TEST_PG_BIN/}
psql_bin=${pg_bin}psql
pg_dump_bin=${pg_bin}pg_dump
command -v "$psql_bin" >/dev/null || die "psql not found (set MWAA_DR_TEST_PG_BIN)"
command -v "$pg_dump_bin" >/dev/null || die "pg_dump not found (set MWAA_DR_TEST_PG_BIN)"

major=${version%%.*}
minor=${version#*.}
minor=${minor%%.*}
if [ "$major" -eq 2 ] && [ "$minor" -lt 7 ]; then
    schema_cmd=(db init)
else
    schema_cmd=(db migrate)
fi
# A fixed key, so that the encrypted values in the fixture (the default connections'
# extra on 2.4-2.6) can be decrypted by tests. It protects nothing.
fernet_key=bXdhYS1kciBzY2hlbWEgZml4dHVyZSBmZXJuZXQgMDE=

# URL of another database on the same server: replace the path, keep the query string.
url_with_db() {
    local url=$1 db=$2 scheme=$3
    local base=${url%%\?*}
    local query=${url#"$base"}
    local rest=${base#*://}
    local authority=${rest%%/*}
    echo "$scheme://$authority/$db$query"
}
pg_scheme=${pg_url%%://*}

suffix=${version//./_}_$$
source_db=mwaa_dr_fixture_${suffix}
check_db=mwaa_dr_fixture_check_${suffix}
work=$(mktemp -d)

admin() { "$psql_bin" -X -q -At -v ON_ERROR_STOP=1 -d "$pg_url" "$@"; }
drop_db() {
    admin -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" 2>/dev/null ||
        admin -c "DROP DATABASE IF EXISTS \"$1\"" || true
}
cleanup() {
    drop_db "$source_db"
    drop_db "$check_db"
    rm -rf "$work"
    rm -f "$out.tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

admin -c 'select 1' >/dev/null || die "cannot connect to MWAA_DR_TEST_PG_URL"

venv=$("$script_dir/airflow-venv.sh" "$version" | tail -n 1)
[ -x "$venv/bin/airflow" ] || die "no airflow in $venv"

# Run the Airflow CLI of $version against database $1, with nothing from the caller's
# Airflow configuration.
airflow_on() {
    local db=$1
    shift
    local sa_url
    sa_url=$(url_with_db "$pg_url" "$db" postgresql+psycopg2)
    (
        while read -r name; do unset "$name"; done < <(compgen -e | grep '^AIRFLOW' || true)
        export AIRFLOW_HOME=$work/airflow-home
        export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$sa_url
        if [ "$major" -eq 2 ] && [ "$minor" -le 4 ]; then
            export AIRFLOW__CORE__SQL_ALCHEMY_CONN=$sa_url
        fi
        export AIRFLOW__CORE__LOAD_EXAMPLES=False
        export AIRFLOW__CORE__FERNET_KEY=$fernet_key
        "$venv/bin/airflow" "$@"
    )
}

run_logged() {
    local name=$1
    shift
    if ! "$@" >"$work/$name.log" 2>&1; then
        tail -n 40 "$work/$name.log" >&2
        die "failed: $*"
    fi
}

dump() {
    "$pg_dump_bin" --format=plain --no-owner --no-privileges --no-comments --no-tablespaces \
        -d "$(url_with_db "$pg_url" "$1" "$pg_scheme")"
}

# pg_dump 15.14+ brackets the script with \restrict / \unrestrict and a random key, which
# older psql rejects and which would change the file on every run; pg_dump 17+ sets
# transaction_timeout, which servers before 17 reject. Neither is needed to load a schema.
portable() {
    sed -e '/^\\restrict /d' -e '/^\\unrestrict /d' -e '/^SET transaction_timeout = /d'
}

# The first lines of every stored fixture: a comment, so they load like the rest.
header() {
    cat <<EOF
-- Airflow $version metadata database, fresh from \`airflow ${schema_cmd[*]}\` on PostgreSQL:
-- the whole schema and the rows Airflow itself inserts.
-- Generated by scripts/gen-schema-fixture.sh $version on $(date -u +%Y-%m-%d).
-- Alembic revision: $revision
-- Tables: $tables
-- Fernet key of the encrypted values: $fernet_key
-- Load into an empty database: psql -v ON_ERROR_STOP=1 -d NEWDB -f $(basename "$out")

EOF
}

log "Airflow $version: airflow ${schema_cmd[*]} into database $source_db"
admin -c "CREATE DATABASE \"$source_db\""
start=$(date +%s)
run_logged schema airflow_on "$source_db" "${schema_cmd[@]}"
log "schema created in $(($(date +%s) - start)) s"

in_db() { "$psql_bin" -X -q -At -v ON_ERROR_STOP=1 -d "$(url_with_db "$pg_url" "$1" "$pg_scheme")" -c "$2"; }
revision=$(in_db "$source_db" 'select version_num from alembic_version')
tables=$(in_db "$source_db" "select count(*) from pg_tables where schemaname = 'public'")
[ -n "$revision" ] || die "alembic_version is empty after airflow ${schema_cmd[*]}"

dump "$source_db" | portable >"$work/dump.sql"
mkdir -p "$(dirname "$out")"
{
    header
    cat "$work/dump.sql"
} >"$out.tmp"

log "checking that the fixture loads and that Airflow $version accepts it"
admin -c "CREATE DATABASE \"$check_db\""
run_logged load "$psql_bin" -X -q -v ON_ERROR_STOP=1 \
    -d "$(url_with_db "$pg_url" "$check_db" "$pg_scheme")" -f "$out.tmp"
dump "$check_db" | portable >"$work/redump.sql"
cmp -s "$work/dump.sql" "$work/redump.sql" || {
    diff "$work/dump.sql" "$work/redump.sql" | head -n 40 >&2
    die "the fixture does not round-trip: a dump of the loaded copy differs"
}
[ "$(in_db "$check_db" 'select version_num from alembic_version')" = "$revision" ] ||
    die "the loaded copy has another alembic revision"
run_logged check-migrations airflow_on "$check_db" db check-migrations -t 10
run_logged check airflow_on "$check_db" db check

mv "$out.tmp" "$out"
log "wrote $out (revision $revision, $tables tables, $(wc -c <"$out") bytes)"
