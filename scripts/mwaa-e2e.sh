#!/usr/bin/env bash
# End to end of the MWAA path with real Airflow behind the MWAA stand-in: no database URL is
# ever given to mwaa-dr from outside; the DR DAGs rendered by `mwaa-dr dags render` run in real
# Airflow schedulers, reached through InvokeRestApi (the stand-in forwards it to the Airflow
# REST API: /api/v1 on 2.x, /api/v2 on 3.x).
#
# Usage: scripts/mwaa-e2e.sh [--keep] [--bench-source URL] VERSION   e.g. scripts/mwaa-e2e.sh 2.10.3
#
#   --keep   keep the work directory and the databases (a failed run keeps the directory)
#   --bench-source URL   benchmark instead (scripts/bench.sh runs it): back up the database URL
#            (filled by the bench, same server) directly, then run only the Warm-Standby
#            failover through the REST API into a real standby Airflow, and print
#            `bench: recovery_seconds=S restored_rows=N`
#
# Steps (one Airflow runs at a time):
#   1. Primary Airflow (own database, Fernet key A, LocalExecutor, scheduler and REST API on
#      loopback; on 3.x also the DAG processor) with the DAGs of tests/airflow/dags and the DR
#      DAGs rendered with the store s3://BUCKET/mwaa-dr on moto. History: two variables, a
#      connection with a password, a pool, triggered runs settled by the scheduler, e2e_retry
#      paused. DR_BACKUP_FERNET_KEY is given to every Airflow, so secrets travel.
#   2. The stand-in knows the primary (AirflowApi -> its REST API). `mwaa-dr backup` with
#      PRIMARY_MWAA_ENVIRONMENT_NAME and no database URL: the backup DAG runs in the primary's
#      scheduler; `mwaa-dr verify` accepts the backup.
#   3. The primary stops (its scheduler heartbeat never reached CloudWatch: the real health
#      check finds it unhealthy). A standby Airflow (own database, key B, DAGs paused, in the
#      secondary Region). The drill of the unattended recovery: the workflow
#      `mwaa-dr deploy --print-definition` generates, on moto's Step Functions
#      (scripts/lib/sfn-drill.py says which states are swapped and how), fired by its
#      health-check schedule with `simulate_dr`, and followed by `mwaa-dr failover
#      --via-step-functions --execution ARN`; the restore DAG runs in the standby and
#      answers the task token; the follower's timeline shows every step ok, the schedule is
#      disabled, the topic receives the outcome, the standby's CLI shows the primary's
#      history (the checks below).
#      The standby's DAGs are paused again, as after a drill on a standby.
#      Warm-Standby: `mwaa-dr failover --yes` with no SECONDARY_DB_URL: the restore DAG runs there.
#      Airflow's CLI on the standby shows the primary's finished runs and their task states,
#      the variables, the connection (password decrypted under key B), the pool, the active
#      DAGs unpaused and e2e_retry paused; no Traceback or integrity error in its logs.
#   4. Backup-Restore: the secondary does not exist; the failover creates it at the stand-in,
#      which maps the new environment to a third Airflow (key C); the same checks.
#   The summary prints each failover's measured recovery time.
#
# Environment:
#   MWAA_DR_BIN            the binary (default: cargo build, debug)
#   MWAA_DR_TEST_PG_URL, MWAA_DR_TEST_PG_BIN, MWAA_DR_TEST_MOTO_URL   the bench's servers;
#                          unset: the script runs itself under `scripts/testbench.sh run pg moto`
#   MWAA_DR_AIRFLOW_PYTHON, XDG_CACHE_HOME    see scripts/airflow-venv.sh
#   MWAA_DR_E2E_BOTO_PYTHON  a python with boto3 for the drill (default: the test bench's
#                          moto venv, `scripts/testbench.sh moto-python`)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo self=$repo/scripts/mwaa-e2e.sh
readonly e2e_dags=$repo/tests/airflow/dags
readonly paused_dag=e2e_retry
readonly triggered=(e2e_xcom e2e_retry e2e_mapped)
readonly settle_timeout=240 stop_timeout=30

e2e_name=mwaa-e2e
# shellcheck source=scripts/lib/e2e.sh
. "$repo/scripts/lib/e2e.sh"
usage() {
    sed -n '7,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

keep=0
version=
bench_source=
while (($# > 0)); do
    case $1 in
    --keep) keep=1 ;;
    --bench-source)
        (($# > 1)) || usage
        bench_source=$2
        shift
        ;;
    -h | --help) usage ;;
    -*) usage ;;
    *)
        [[ -z $version ]] || usage
        version=$1
        ;;
    esac
    shift
done
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || usage
readonly version keep bench_source
major=${version%%.*}
readonly major

# ---------------------------------------------------------------------------------------
# Outer part: the binary, the venv, PostgreSQL and moto; then the inner part.
if [[ -z ${MWAA_DR_MWAA_E2E_INNER:-} ]]; then
    if [[ -n ${MWAA_DR_BIN:-} ]]; then
        [[ -x $MWAA_DR_BIN ]] || die "MWAA_DR_BIN=$MWAA_DR_BIN is not an executable file"
        bin=$MWAA_DR_BIN
    else
        command -v cargo >/dev/null 2>&1 || die "cargo not found (or set MWAA_DR_BIN)"
        cargo build --bin mwaa-dr --manifest-path "$repo/Cargo.toml" >&2
        target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
        bin=$target_dir/debug/mwaa-dr
        [[ -x $bin ]] || die "built, but $bin is missing"
    fi
    venv=$("$repo/scripts/airflow-venv.sh" "$version") || die "could not install Airflow $version"
    if [[ -z ${MWAA_DR_E2E_BOTO_PYTHON:-} ]]; then
        MWAA_DR_E2E_BOTO_PYTHON=$("$repo/scripts/testbench.sh" moto-python) ||
            die "no python with boto3 for the drill (scripts/testbench.sh moto-python)"
    fi
    export MWAA_DR_E2E_BOTO_PYTHON
    args=("$version")
    ((keep)) && args=(--keep "$version")
    [[ -n $bench_source ]] && args=(--bench-source "$bench_source" "${args[@]}")
    export MWAA_DR_MWAA_E2E_INNER=1 MWAA_DR_BIN=$bin MWAA_DR_E2E_VENV=$venv
    if [[ -n ${MWAA_DR_TEST_PG_URL:-} && -n ${MWAA_DR_TEST_MOTO_URL:-} ]]; then
        exec "$self" "${args[@]}"
    fi
    log "no bench servers: starting PostgreSQL and moto (scripts/testbench.sh)"
    exec "$repo/scripts/testbench.sh" run pg moto -- "$self" "${args[@]}"
fi

# ---------------------------------------------------------------------------------------
# Inner part.
bin=${MWAA_DR_BIN:?}
venv=${MWAA_DR_E2E_VENV:?}
admin_url=${MWAA_DR_TEST_PG_URL:?}
moto=${MWAA_DR_TEST_MOTO_URL:?}
pg_bin=${MWAA_DR_TEST_PG_BIN:-$(dirname "$(command -v psql || echo /usr/lib/postgresql/15/bin/psql)")}
boto_python=${MWAA_DR_E2E_BOTO_PYTHON:?}
readonly bin venv admin_url moto pg_bin python=$venv/bin/python boto_python
while IFS= read -r name; do
    unset "$name"
done < <(compgen -e | grep -E '^AIRFLOW(_HOME$|__)' || true)
[[ -x $venv/bin/airflow ]] || die "no Airflow in $venv"
"$boto_python" -c 'import boto3' 2>/dev/null || die "no boto3 in $boto_python (MWAA_DR_E2E_BOTO_PYTHON)"
[[ -x $pg_bin/psql ]] || die "no psql in $pg_bin (set MWAA_DR_TEST_PG_BIN)"
command -v curl >/dev/null 2>&1 || die "curl not found"

# The machine-wide lock of the real-Airflow runs (scripts/airflow-e2e.sh takes it too).
take_airflow_lock
SECONDS=0


tag=${version//./}-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/mwaa-dr-mwaa-e2e.XXXXXX")
readonly tag work
readonly bucket=mwaa-dr-e2e-$tag store_url=s3://mwaa-dr-e2e-$tag/mwaa-dr
readonly primary_env=primary-$tag standby_env=standby-$tag created_env=created-$tag
mkdir -p "$work/dags" "$work/cli" "$work/state"
declare -A db_of=([p]=mwaa_e2e_p_${tag//-/_} [s]=mwaa_e2e_s_${tag//-/_} [b]=mwaa_e2e_b_${tag//-/_})
declare -A key_of port_of
for side in p s b; do
    key_of[$side]=$("$python" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
    port_of[$side]=$("$python" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
done
travel_key=$("$python" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
jwt_secret=$("$python" -c 'import secrets; print(secrets.token_hex(32))')
readonly travel_key jwt_secret

status=1
standin_pid=
db_url() { url_with_db "$admin_url" "${db_of[$1]}" postgresql; }

finish() {
    trap - EXIT INT TERM
    stop_background
    [[ -n $standin_pid ]] && stop_process "$standin_pid" "the MWAA stand-in"
    if ((keep)); then
        log "kept: $work, databases ${db_of[*]}"
        return
    fi
    for side in p s b; do
        psql_admin -c "DROP DATABASE IF EXISTS ${db_of[$side]} WITH (FORCE)" >/dev/null 2>&1 || true
    done
    if ((status == 0)); then rm -rf "$work"; else log "logs and outputs kept in $work"; fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# The AWS side every process sees: moto for everything, the stand-in for MWAA.
aws_vars() {
    aws=(
        "AWS_ENDPOINT_URL=$moto" "AWS_ENDPOINT_URL_MWAA=$standin"
        AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
        PRIMARY_REGION=us-east-1 SECONDARY_REGION=us-east-2
    )
}

# MWAA's own database variables for database $1, as MWAA's images set them in every
# container (they build Airflow's URL from them). Airflow 3 replaces its URL in a task's
# process with airflow-db-not-allowed:///, but leaves these: they are the binary's route.
mwaa_db_vars() {
    local base rest userinfo hostport
    base=${admin_url%%\?*}
    rest=${base#*://}
    userinfo=${rest%%@*}
    hostport=${rest#*@}
    hostport=${hostport%%/*}
    mwaa_db=(
        "MWAA__DB__POSTGRES_HOST=${hostport%%:*}"
        "MWAA__DB__POSTGRES_PORT=${hostport##*:}"
        "MWAA__DB__POSTGRES_DB=$1"
        MWAA__DB__POSTGRES_SSLMODE=disable
        "MWAA__DB__CREDENTIALS={\"username\": \"${userinfo%%:*}\", \"password\": \"${userinfo#*:}\"}"
    )
}

# The environment of one side's Airflow (p primary, s standby, b created by Backup-Restore),
# into side_vars: what an MWAA worker has (the database URL, MWAA's own database variables and
# the Fernet key of its own environment), plus the binary and the key that lets secrets travel.
side_env() {
    local side=$1
    aws_vars
    mwaa_db_vars "${db_of[$side]}"
    side_vars=(
        "AIRFLOW_HOME=$work/home-$side"
        "${mwaa_db[@]}"
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$(url_with_db "$admin_url" "${db_of[$side]}" postgresql+psycopg2)"
        "AIRFLOW__CORE__FERNET_KEY=${key_of[$side]}"
        AIRFLOW__CORE__LOAD_EXAMPLES=False
        "AIRFLOW__CORE__DAGS_FOLDER=$work/dags"
        AIRFLOW__CORE__EXECUTOR=LocalExecutor
        AIRFLOW__CORE__PARALLELISM=4
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=2
        AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC=1
        AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL=10
        AIRFLOW__SCHEDULER__PARSING_PROCESSES=1
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=10
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:${port_of[$side]}/execution/"
        "AIRFLOW__API_AUTH__JWT_SECRET=$jwt_secret"
        AIRFLOW__API_AUTH__JWT_ISSUER=mwaa-dr-e2e
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
        AIRFLOW__API__AUTH_BACKENDS=airflow.api.auth.backend.basic_auth
        AIRFLOW__WEBSERVER__WORKERS=1
        "MWAA_DR_BIN=$bin"
        "DR_BACKUP_FERNET_KEY=$travel_key"
        "MWAA_DR_E2E_STATE_DIR=$work/state"
        "PYTHONPATH=$e2e_dags"
        PYTHONWARNINGS=ignore
        "${aws[@]}"
    )
    if [[ $side == p ]]; then
        side_vars+=(AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False)
    else
        # A secondary's workers run in the secondary Region: the restore's task answers the
        # workflow's task token there.
        side_vars+=(AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True AWS_REGION=us-east-2)
    fi
}


# Waits until URL answers anything over HTTP.
wait_http() {
    local url=$1 what=$2 i code
    for ((i = 0; i < 360; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
        [[ $code != 000 && -n $code ]] && return 0
        sleep 0.5
    done
    fail "$what did not answer at $url within 180 s"
}

# A side's Airflow: database, DAGs parsed, REST API, scheduler (and DAG processor on 3.x).
# Sets api_url to the REST API base the stand-in forwards to (user:password in it).
start_side() {
    local side=$1 port=${port_of[$1]} password
    psql_admin -c "DROP DATABASE IF EXISTS ${db_of[$side]}" -c "CREATE DATABASE ${db_of[$side]}"
    af "$side" db migrate
    af "$side" dags reserialize
    if ((major >= 3)); then
        af_start "$side" api-server api-server --host 127.0.0.1 --port "$port" --workers 1
        wait_http "http://127.0.0.1:$port/api/v2/version" "the api-server ($side)"
        af_start "$side" dag-processor dag-processor
        password=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' \
            "$work/home-$side/simple_auth_manager_passwords.json.generated") ||
            fail "no password of admin in $work/home-$side"
        api_url=http://admin:$password@127.0.0.1:$port/api/v2
    else
        af "$side" users create --username admin --password admin --role Admin \
            --email admin@example.com --firstname a --lastname b
        af_start "$side" webserver webserver --hostname 127.0.0.1 --port "$port" --workers 1
        wait_http "http://127.0.0.1:$port/api/v1/version" "the webserver ($side)"
        api_url=http://admin:admin@127.0.0.1:$port/api/v1
    fi
    af_start "$side" scheduler scheduler --skip-serve-logs
}


standin_call() {
    local method=$1 path=$2 body=${3:-}
    curl -fsS -X "$method" -H 'content-type: application/json' ${body:+--data-binary "$body"} \
        "$standin/_standin/$path" >/dev/null || fail "stand-in $method $path"
}

# mwaa-dr as a user outside MWAA runs it: AWS credentials and the settings below, no database
# URL, no Fernet key.
# The binary with the e2e's environment and extra_env, as the array mwaa_dr.
mwaa_dr_command() {
    aws_vars
    mwaa_dr=(env -i PATH="$PATH" HOME="$HOME" TMPDIR="${TMPDIR:-/tmp}" "${aws[@]}"
        "DR_BACKUP_STORE=$store_url" "PRIMARY_MWAA_ENVIRONMENT_NAME=$primary_env"
        "SECONDARY_MWAA_ENVIRONMENT_NAME=${secondary_env:-$standby_env}"
        HEALTH_CHECK_MAX_RETRY=0 STATE_MACHINE_TIMEOUT_MINS=10 SECONDARY_UNPAUSE_WAIT_SECS=120
        MWAA_CREATE_ENV_POLLING_INTERVAL_SECS=1 "${extra_env[@]}"
        "$bin" --no-dotenv)
}
run_mwaa_dr() {
    local out=$1 rc=0
    shift
    mwaa_dr_command
    printf '$ mwaa-dr %s\n' "$*"
    "${mwaa_dr[@]}" "$@" >"$work/$out.out" 2>"$work/$out.err" 8>&- || rc=$?
    if ((rc != 0)); then
        sed 's/^/  /' "$work/$out.out"
        tail -n 60 "$work/$out.err" | sed 's/^/  /' >&2
        fail "mwaa-dr $* exited with $rc"
    fi
}
extra_env=()

# Airflow's CLI in one interpreter per side (a separate `airflow` costs 2-4 s of start-up):
# the finished runs of every DAG of tests/airflow/dags, their task states, the variables, the
# connection, the pools and the paused flags, as one JSON document.
cat >"$work/cli-snapshot.py" <<'PY'
"""argv: major out.json. Runs Airflow's CLI in-process and records what it prints."""
import contextlib
import io
import json
import sys

from airflow.__main__ import main

major, out_path = int(sys.argv[1]), sys.argv[2]
DAGS = ["e2e_xcom", "e2e_retry", "e2e_mapped", "e2e_sensor", "e2e_dataset_consumer", "e2e_ticker"]


def cli(*argv):
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        sys.argv = ["airflow", *argv]
        try:
            main()
        except SystemExit as e:
            if e.code not in (None, 0):
                raise RuntimeError(f"airflow {' '.join(argv)}: exit {e.code}: {err.getvalue()}")
    return buf.getvalue()


snap = {"runs": {}, "states": {}}
for d in DAGS:
    args = ["dags", "list-runs", d] if major >= 3 else ["dags", "list-runs", "-d", d]
    runs = json.loads(cli(*args, "-o", "json") or "[]")
    snap["runs"][d] = {r["run_id"]: r["state"] for r in runs}
    for r in runs:
        if r["state"] in ("success", "failed"):
            states = json.loads(cli("tasks", "states-for-dag-run", d, r["run_id"], "-o", "json") or "[]")
            snap["states"][f"{d}/{r['run_id']}"] = sorted(
                (s["task_id"], str(s.get("map_index")), s["state"]) for s in states)
snap["variables"] = {k: cli("variables", "get", k).strip() for k in ("e2e_greeting", "e2e_settings")}
conn = json.loads(cli("connections", "get", "e2e_warehouse", "-o", "json"))
conn = conn[0] if isinstance(conn, list) else conn
conn.pop("id", None)
snap["connection"] = conn
snap["pools"] = sorted((p["pool"], str(p["slots"])) for p in json.loads(cli("pools", "list", "-o", "json")))
snap["paused"] = {d["dag_id"]: str(d["is_paused"]).lower() for d in json.loads(cli("dags", "list", "-o", "json"))}
json.dump(snap, open(out_path, "w"), indent=1, sort_keys=True)
PY
snapshot() {
    local side=$1 rc=0
    side_env "$side"
    env "${side_vars[@]}" AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING \
        "$python" "$work/cli-snapshot.py" "$major" "$work/cli/$side.json" \
        >"$work/cli/snapshot-$side.log" 2>&1 8>&- || rc=$?
    if ((rc != 0)); then
        tail -n 30 "$work/cli/snapshot-$side.log" >&2
        fail "Airflow's CLI could not read the $side database"
    fi
}

# What the standby's CLI must show: every finished run of the primary with its state and task
# states, the same variables, connection (password decrypted), pools; the DAGs active in the
# primary unpaused, the paused one paused.
cat >"$work/cli-compare.py" <<'PY'
import json
import sys

src, dst = (json.load(open(p)) for p in sys.argv[1:3])
paused_dag, password = sys.argv[3], sys.argv[4]
bad = []
finished = 0
for d, runs in src["runs"].items():
    for run_id, state in runs.items():
        if state not in ("success", "failed"):
            continue
        finished += 1
        got = dst["runs"].get(d, {}).get(run_id)
        if got != state:
            bad.append(f"dags list-runs {d}: {run_id} is {got}, {state} in the primary")
for key, states in src["states"].items():
    if dst["states"].get(key) != states:
        bad.append(f"tasks states-for-dag-run {key}: {dst['states'].get(key)} != {states}")
for what in ("variables", "connection"):
    if src[what] != dst[what]:
        bad.append(f"{what}: {dst[what]} != {src[what]}")
if dst["connection"].get("password") != password:
    bad.append(f"the connection's password is {dst['connection'].get('password')!r}")
if not set(map(tuple, src["pools"])) <= set(map(tuple, dst["pools"])):
    bad.append(f"pools: {dst['pools']} lacks some of {src['pools']}")
for d, flag in src["paused"].items():
    if d.startswith("e2e_") and dst["paused"].get(d) != flag:
        bad.append(f"dags list: {d} is_paused={dst['paused'].get(d)}, {flag} in the primary")
if src["paused"].get(paused_dag) != "true":
    bad.append(f"{paused_dag} was not paused in the primary")
if bad:
    sys.exit("\n".join(bad))
print(f"{finished} finished runs, {len(src['states'])} task-state lists, 2 variables, "
      f"1 connection, {len(src['pools'])} pools, {len(src['paused'])} paused flags")
PY

# ---------------------------------------------------------------------------------------
log "Airflow $version ($venv), mwaa-dr $bin, work directory $work"

step "MWAA stand-in, the store bucket on moto, the DR DAGs rendered"
setsid python3 "$repo/scripts/mwaa-standin.py" --port 0 --port-file "$work/standin.port" \
    --create-delay 1 --quiet </dev/null >"$work/standin.out" 2>"$work/standin.err" 8>&- &
standin_pid=$!
for ((i = 0; i < 100; i++)); do
    [[ -s $work/standin.port ]] && break
    sleep 0.1
done
[[ -s $work/standin.port ]] || fail "the stand-in did not start ($work/standin.err)"
standin=http://127.0.0.1:$(cat "$work/standin.port")
readonly standin
curl -fsS -X PUT -o /dev/null "$moto/$bucket" || fail "moto: could not create the bucket $bucket"
cp "$e2e_dags"/*.py "$work/dags/"
run_mwaa_dr render dags render --out "$work/render" --binary-uri "s3://$bucket/tools/mwaa-dr" \
    --binary-sha256 "$(printf '0%.0s' {1..64})"
cp "$work/render"/*.py "$work/dags/"
echo "stand-in $standin, store $store_url, DAGs: $(cd "$work/dags" && ls ./*_metadata.py | tr '\n' ' ')"

if [[ -n $bench_source ]]; then
    # Benchmark: the bench's database backed up directly, then the Warm-Standby failover
    # through the REST API; the figure is the failover's own recovery time.
    step "Bench: backup of the bench database, Warm-Standby failover through the REST API"
    standin_call POST "environments?region=us-east-1" \
        "{\"Name\": \"$primary_env\", \"AirflowVersion\": \"$version\", \"Status\": \"AVAILABLE\"}"
    run_mwaa_dr bench-backup --output json backup --db "$bench_source"
    start_side s
    standin_call POST "environments?region=us-east-2" \
        "{\"Name\": \"$standby_env\", \"AirflowVersion\": \"$version\", \"Status\": \"AVAILABLE\"}"
    standin_call POST "environments/$standby_env/airflow?region=us-east-2" "{\"AirflowApi\": \"$api_url\"}"
    # The bench's DAGs are not in the standby's DAG folder: no wait for them to be parsed.
    extra_env=(DR_TYPE=WARM_STANDBY SECONDARY_UNPAUSE_WAIT_SECS=0)
    run_mwaa_dr failover-s --output json --yes failover
    recovery_s=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["recovery_seconds"])' \
        "$work/failover-s.out") || fail "the failover printed no recovery time"
    restored=$(psql_v "$(db_url s)" "SELECT (SELECT count(*) FROM dag_run) + (SELECT count(*) FROM task_instance)")
    expected=$(psql_v "$bench_source" "SELECT (SELECT count(*) FROM dag_run) + (SELECT count(*) FROM task_instance)")
    # A backup leaves in-flight runs and task instances out, and the standby keeps the restore
    # DAG's own: the counts differ by those; the end to end proper compares run by run.
    ((restored > 0)) || fail "the standby has no restored run or task instance (the source has $expected)"
    stop_background
    check_logs s || fail "the standby's Airflow logged errors (above)"
    status=0
    echo "bench: recovery_seconds=$recovery_s restored_rows=$restored source_rows=$expected"
    exit 0
fi

step "Primary Airflow $version (key A): variables, a connection, a pool, runs"
start_side p
primary_api=$api_url
# shellcheck disable=SC2016 # a literal dollar sign
readonly conn_password='pw-$ecret/42'
af p variables set e2e_greeting "hello from the primary"
af p variables set e2e_settings '{"batch_size": 500, "region": "eu-west-1"}'
af p connections add e2e_warehouse --conn-type postgres --conn-host warehouse.example.com \
    --conn-login etl --conn-password "$conn_password" --conn-port 5432 --conn-schema orders
af p pools set e2e_pool 3 "pool of the e2e DAGs"
for d in "${triggered[@]}"; do af p dags trigger "$d"; done
p_url=$(db_url p)
started=$SECONDS
settled=f
while ((SECONDS - started < settle_timeout)); do
    sleep 3
    settled=$(psql_v "$p_url" "SELECT (SELECT count(DISTINCT dag_id) FROM dag_run WHERE run_type = 'manual'
        AND dag_id LIKE 'e2e\_%' AND state IN ('success', 'failed')) = ${#triggered[@]}
        AND NOT EXISTS (SELECT 1 FROM dag_run WHERE run_type = 'manual' AND state IN ('queued', 'running'))")
    [[ $settled == t ]] && break
done
if [[ $settled != t ]]; then
    psql_v "$p_url" "SELECT dag_id, run_id, state FROM dag_run ORDER BY 1, 2" >&2
    tail -n 30 "$work/scheduler-p.log" >&2
    fail "the triggered runs did not finish within ${settle_timeout}s"
fi
af p dags pause "$paused_dag"
psql_v "$p_url" "SELECT dag_id || ' ' || run_type || ' ' || state FROM dag_run ORDER BY 1"
snapshot p
pass "primary: $(psql_v "$p_url" "SELECT count(*) FROM dag_run") runs settled by its scheduler, $paused_dag paused"

step "mwaa-dr backup with no database URL: the backup DAG runs in the primary"
standin_call POST "environments?region=us-east-1" "$("$python" -c 'import json, sys
print(json.dumps({"Name": sys.argv[1], "AirflowVersion": sys.argv[2], "Status": "AVAILABLE",
    "ExecutionRoleArn": "arn:aws:iam::123456789012:role/primary-role",
    "SourceBucketArn": "arn:aws:s3:::primary-dags", "DagS3Path": "dags",
    "NetworkConfiguration": {"SubnetIds": ["subnet-p1", "subnet-p2"], "SecurityGroupIds": ["sg-p"]}}))' \
    "$primary_env" "$version")"
standin_call POST "environments/$primary_env/airflow?region=us-east-1" "{\"AirflowApi\": \"$primary_api\"}"
run_mwaa_dr backup --output json backup
backup_id=$("$python" -c 'import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["state"] == "success", doc
print(doc["report"]["backup_id"])' "$work/backup.out") || {
    cat "$work/backup.out" >&2
    fail "the backup DAG's run did not report a backup"
}
pass "mwaa-dr backup: the backup DAG ran in the primary's scheduler and reported backup $backup_id"
run_mwaa_dr verify --output json verify "$backup_id"
pass "mwaa-dr verify accepts backup $backup_id"
stop_background
check_logs p || fail "the primary's Airflow logged errors (above)"

# One failover into a side: its checks; prints the recovery time.
declare -A recovery=()
failover_checks() {
    local side=$1 kind=$2
    snapshot "$side"
    "$python" "$work/cli-compare.py" "$work/cli/p.json" "$work/cli/$side.json" "$paused_dag" \
        "$conn_password" >"$work/cli/compare-$side.out" 2>&1 || {
        cat "$work/cli/compare-$side.out" >&2
        fail "$kind: Airflow's CLI on the secondary differs from the primary"
    }
    pass "$kind: Airflow's CLI on the secondary shows $(cat "$work/cli/compare-$side.out"); password decrypted under the secondary's own key"
    grep -q "$backup_id" "$work/failover-$side.out" ||
        fail "$kind: the timeline does not name backup $backup_id"
    stop_background
    check_logs "$side" || fail "$kind: the secondary's Airflow logged errors (above)"
    pass "$kind: no Traceback or integrity error in the secondary's logs"
}

step "Standby Airflow (key B, DAGs paused) in the secondary Region"
start_side s
standin_call POST "environments?region=us-east-2" \
    "{\"Name\": \"$standby_env\", \"AirflowVersion\": \"$version\", \"Status\": \"AVAILABLE\"}"
standin_call POST "environments/$standby_env/airflow?region=us-east-2" "{\"AirflowApi\": \"$api_url\"}"
secondary_env=$standby_env

# The drill of the unattended recovery into the standby (scripts/lib/sfn-drill.py), then the
# standby back to standby.
drill() {
    step "Drill: the health-check schedule fires the workflow with simulate_dr on moto's Step Functions"
    local drill_topic_arn=arn:aws:sns:us-east-2:123456789012:drill-outcome-$tag
    local drill_schedule=drill-health-$tag drill_summary s_url started
    # The schedule-fired workflow of a deployment in one Region (across Regions an alarm's
    # rule starts it instead, which moto cannot fire): the drill's machine reads the primary
    # in its own Region.
    extra_env=(DR_TYPE=WARM_STANDBY STACK_NAME_PREFIX=drill-$tag AWS_ACCOUNT_ID=123456789012
        PRIMARY_REGION=us-east-2
        "HEALTH_CHECK_SCHEDULE_NAME=$drill_schedule" "DR_SNS_TOPIC_ARN=$drill_topic_arn")
    run_mwaa_dr definition deploy --print-definition
    mwaa_dr_command
    t0=$SECONDS
    # The drill follows the execution the schedule starts with `failover --via-step-functions
    # --execution ARN` on the state machine it creates, and checks its timeline.
    "$boto_python" "$repo/scripts/lib/sfn-drill.py" --moto "$moto" --standin "$standin" \
        --region us-east-2 --definition "$work/definition.out" --secondary "$standby_env" \
        --topic-arn "$drill_topic_arn" --schedule "$drill_schedule" --machine-name "drill-$tag" \
        --interval-mins 5 --timeout-secs 600 --paused-dag e2e_xcom \
        -- "${mwaa_dr[@]}" --output json failover --via-step-functions \
        >"$work/drill.out" 2>"$work/drill.err" 8>&- || {
        sed 's/^/  /' "$work/drill.err" >&2
        tail -n 40 "$work/scheduler-s.log" >&2
        fail "the drill on moto's Step Functions"
    }
    sed 's/^/  /' "$work/drill.err"
    drill_summary=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["summary"])' \
        "$work/drill.out") ||
        fail "the drill printed no summary"
    pass "drill in $((SECONDS - t0)) s: $drill_summary"
    snapshot s
    "$python" "$work/cli-compare.py" "$work/cli/p.json" "$work/cli/s.json" "$paused_dag" \
        "$conn_password" >"$work/cli/compare-drill.out" 2>&1 || {
        cat "$work/cli/compare-drill.out" >&2
        fail "drill: Airflow's CLI on the standby differs from the primary"
    }
    pass "drill: Airflow's CLI on the standby shows $(cat "$work/cli/compare-drill.out")"
    # Back to standby: the restore unpaused the primary's DAGs there. Paused again (in its
    # database: one statement instead of an Airflow CLI start per DAG), and the task instances the
    # scheduler had already queued left to finish, before the failover restores over them.
    s_url=$(db_url s)
    psql_v "$s_url" "UPDATE dag SET is_paused = true WHERE dag_id LIKE 'e2e\_%'" >/dev/null
    started=$SECONDS
    until [[ $(psql_v "$s_url" "SELECT count(*) FROM task_instance WHERE dag_id LIKE 'e2e\_%'
        AND state IN ('queued', 'running', 'restarting')") == 0 ]]; do
        ((SECONDS - started < settle_timeout)) || fail "the standby's e2e tasks still run after ${settle_timeout}s"
        sleep 2
    done
    pass "drill: the standby's DAGs paused again, no e2e task left running"
}
drill

step "Warm-Standby: mwaa-dr failover with no SECONDARY_DB_URL into the standby"
t0=$SECONDS
extra_env=(DR_TYPE=WARM_STANDBY)
run_mwaa_dr failover-s --output json --yes failover
recovery[WARM_STANDBY]=$((SECONDS - t0))
# head reads the file itself: a reader closing early would end the script with SIGPIPE.
head -c 4000 "$work/failover-s.out" | sed 's/^/  /'
pass "Warm-Standby failover through the REST API in ${recovery[WARM_STANDBY]} s"
failover_checks s Warm-Standby

step "Backup-Restore: the failover creates the secondary, mapped to a third Airflow (key C)"
start_side b
# The stand-in forwards the REST calls of environments it creates to this Airflow.
standin_call POST config "{\"AirflowApi\": \"$api_url\", \"AirflowVersion\": \"$version\"}"
t0=$SECONDS
secondary_env=$created_env
extra_env=(DR_TYPE=BACKUP_RESTORE SECONDARY_MWAA_ROLE_ARN=arn:aws:iam::123456789012:role/secondary-role
    SECONDARY_DAGS_BUCKET_NAME=secondary-dags 'SECONDARY_SUBNET_IDS=["subnet-s1", "subnet-s2"]'
    'SECONDARY_SECURITY_GROUP_IDS=["sg-s"]')
run_mwaa_dr failover-b --output json --yes failover
recovery[BACKUP_RESTORE]=$((SECONDS - t0))
curl -fsS "$standin/_standin/environments/$created_env?region=us-east-2" >/dev/null ||
    fail "Backup-Restore: the stand-in has no environment $created_env"
pass "Backup-Restore failover (CreateEnvironment, then the restore DAG) in ${recovery[BACKUP_RESTORE]} s"
failover_checks b Backup-Restore

step "done"
status=0
printf '\n==> Summary (Airflow %s, %d s in all)\n' "$version" "$SECONDS"
printf '  %s\n' "${timings[@]}"
printf '  checked: %s\n' "${checks[@]}"
printf '  recovery time: Warm-Standby %d s, Backup-Restore %d s (REST path, no database URL)\n' \
    "${recovery[WARM_STANDBY]}" "${recovery[BACKUP_RESTORE]}"
