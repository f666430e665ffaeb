# shellcheck shell=bash
# Helpers shared by the real-Airflow end-to-end scripts (scripts/airflow-e2e.sh,
# scripts/mwaa-e2e.sh): logging and phases, the machine-wide lock, PostgreSQL, starting and
# stopping Airflow processes, and checking their logs.
#
# Sourced, not run. The caller sets e2e_name (the log prefix) before sourcing, and before
# calling the functions that use them: work (the work directory), admin_url and pg_bin (the
# bench PostgreSQL), venv (Airflow's virtualenv), stop_timeout (seconds a process gets to stop)
# and a function side_env SIDE that fills the array side_vars with the environment of one
# side's Airflow.

log() { echo "${e2e_name:?}: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# One real-Airflow run at a time on a machine: two would compete for the cores and for the
# bounded waits. Holds the lock on file descriptor 8 until the script exits (the processes
# it starts get 8>&-, so a leftover one never holds it).
take_airflow_lock() {
    local lock_dir=${XDG_CACHE_HOME:-$HOME/.cache}/mwaa-dr
    mkdir -p "$lock_dir"
    command -v flock >/dev/null 2>&1 || return 0
    exec 8>"$lock_dir/airflow-e2e.lock"
    if ! flock -n 8; then
        log "waiting for another real-Airflow run on this machine"
        flock -w 1800 8 || die "another real-Airflow run holds $lock_dir/airflow-e2e.lock"
    fi
}

# URL of another database on the same server: replace the path, keep the query string.
url_with_db() {
    local url=$1 db=$2 scheme=$3 base query rest
    base=${url%%\?*}
    query=${url#"$base"}
    rest=${base#*://}
    echo "$scheme://${rest%%/*}/$db$query"
}

psql_admin() {
    PGOPTIONS='-c client_min_messages=warning' "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 \
        -d "$admin_url" "$@"
}

# One value (or rows, |-separated) from database URL $1.
psql_v() {
    "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}

# Phases with their times, and the checks that passed, for the summary.
timings=()
phase_start=$SECONDS
phase_name=
step() {
    if [[ -n $phase_name ]]; then timings+=("$(printf '%4d s  %s' $((SECONDS - phase_start)) "$phase_name")"); fi
    phase_name=$1
    phase_start=$SECONDS
    printf '\n==> %s\n' "$*"
}
checks=()
pass() {
    checks+=("$*")
    echo "  ok: $*"
}
fail() {
    log "FAILED: $*"
    exit 1
}

# Runs the Airflow CLI on one side with warnings-level logging (a clean stdout); on a failure
# shows its output and stops.
af() {
    local side=$1 rc=0 out=$work/cli/last-$1.log
    shift
    side_env "$side"
    env "${side_vars[@]}" AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING "$venv/bin/airflow" "$@" \
        >"$out" 2>&1 8>&- || rc=$?
    if ((rc != 0)); then
        tail -n 40 "$out" | sed 's/^/    /' >&2
        fail "airflow $* ($side) exited with $rc"
    fi
}

# Background Airflow processes, oldest first; each leads its own process group.
bg_pids=()
started_pid=
# Starts a long-running Airflow command NAME on one side in its own process group, logging to
# $work/NAME-SIDE.log; its pid goes to bg_pids and started_pid.
af_start() {
    local side=$1 name=$2 pidfile=$work/$2-$1.pid i
    shift 2
    rm -f "$pidfile"
    side_env "$side"
    # shellcheck disable=SC2016 # expanded by the inner shell
    env "${side_vars[@]}" setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' af-launch \
        "$pidfile" "$venv/bin/airflow" "$@" </dev/null >"$work/$name-$side.log" 2>&1 8>&- &
    for ((i = 0; i < 50; i++)); do
        [[ -s $pidfile ]] && break
        sleep 0.1
    done
    [[ -s $pidfile ]] || fail "airflow $name did not start ($side)"
    started_pid=$(cat "$pidfile")
    bg_pids+=("$started_pid")
}

# Stops a background process: SIGTERM to it, then SIGKILL to its process group after
# stop_timeout seconds, and to whatever it forked and left behind.
stop_process() {
    local pid=$1 name=${2:-process} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < ${stop_timeout:?} * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) did not stop after ${stop_timeout}s; killing its process group"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Stops the background Airflow processes newest first: the scheduler before the API server it
# sends task runs to (stopped the other way round, a task it starts meanwhile cannot reach the
# API server and logs an error). Notes how long each log was when the stop began.
declare -A log_bytes_before_stop=()
stop_background() {
    local i f
    for f in "$work"/*.log; do
        [[ -f $f ]] && log_bytes_before_stop[$f]=$(stat -c %s "$f")
    done
    for ((i = ${#bg_pids[@]} - 1; i >= 0; i--)); do
        stop_process "${bg_pids[i]}" "airflow process"
    done
    bg_pids=()
}

# Errors in the logs of one side's Airflow processes: a Traceback, a duplicate key or another
# integrity error. A Traceback counts up to the moment the process was told to stop: what
# Python prints while it exits on SIGTERM (or is killed after the stop timeout on a busy
# machine) is not about the database. Integrity errors count in the whole log.
readonly error_pattern='Traceback|IntegrityError|UniqueViolation|duplicate key|ForeignKeyViolation|NotNullViolation'
readonly integrity_pattern='IntegrityError|UniqueViolation|duplicate key|ForeignKeyViolation|NotNullViolation'
check_logs() {
    local side=$1 f bad=0 limit
    for f in "$work"/*-"$side".log; do
        [[ -f $f ]] || continue
        limit=${log_bytes_before_stop[$f]:-$(stat -c %s "$f")}
        if grep -qE "$error_pattern" <(head -c "$limit" "$f") || grep -qE "$integrity_pattern" "$f"; then
            log "errors in $f (the first $limit bytes were written before the stop signal):"
            grep -nE -B2 -A12 "$error_pattern" "$f" | cut -c1-300 | head -n 80 >&2
            bad=1
        fi
    done
    return "$bad"
}
