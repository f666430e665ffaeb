#!/usr/bin/env bash
# Test bench: a throwaway PostgreSQL server, a moto server (AWS emulator) and the project's
# MWAA stand-in (scripts/mwaa-standin.py), all on loopback only, for the integration tests.
#
# Usage:
#   scripts/testbench.sh start [SERVICE...]        start (or reuse) the servers, print exports
#   scripts/testbench.sh env                       print the exports of the running servers
#   scripts/testbench.sh status                    show what runs
#   scripts/testbench.sh stop                      stop everything, remove the database files
#   scripts/testbench.sh run [SERVICE...] -- CMD   start, run CMD with the exports, stop
#   scripts/testbench.sh moto-python               the moto venv's python (it has boto3),
#                                                  installing the venv when missing
#
# SERVICE is pg, moto or mwaa; without one, all three are meant. Typical use:
#
#   eval "$(scripts/testbench.sh start)"
#   cargo nextest run
#   scripts/testbench.sh stop
#
# Exported variables (what the tests read):
#   MWAA_DR_TEST_PG_URL    postgres://mwaa_dr:PASSWORD@127.0.0.1:PORT/postgres
#                          (superuser mwaa_dr, scram-sha-256 password auth over TCP)
#   MWAA_DR_TEST_PG_BIN    the directory with that server's psql, pg_dump, pg_ctl...
#   MWAA_DR_TEST_MOTO_URL  http://127.0.0.1:PORT (moto with the Step Functions interpreter on)
#   MWAA_DR_TEST_MWAA_URL  http://127.0.0.1:PORT (the MWAA stand-in: the MWAA REST-JSON API,
#                          plus its control API under /_standin/; a reused server keeps its
#                          state, so tests reset it with POST /_standin/reset)
#
# stdout carries only the export lines (and the `status` report); logs go to stderr and to
# files in the bench directory. The exports are also written to $MWAA_DR_BENCH_DIR/env.
#
# `run` reuses servers that `start` left running; otherwise it starts its own in a private
# directory (so that two runs do not share or stop each other's servers), stops them when
# CMD ends or is interrupted, and exits with CMD's exit code.
#
# PostgreSQL: a fresh initdb in the bench directory, a free port, listen_addresses=127.0.0.1,
# durability off (a throwaway server). initdb refuses to run as root, so a root caller runs
# the server as the `postgres` OS user, or as a system user `mwaa-dr-bench` created on demand.
# moto: moto[server] in a cached venv under ${XDG_CACHE_HOME:-$HOME/.cache}/mwaa-dr/venvs.
# mwaa: scripts/mwaa-standin.py run by the system python3 (standard library only), with its
# default settings (CREATING -> AVAILABLE after 2 s; see the script's docstring).
#
# Environment:
#   MWAA_DR_BENCH_DIR      state, sockets and logs (default: ${TMPDIR:-/tmp}/mwaa-dr-bench-UID)
#   MWAA_DR_TEST_PG_BIN    PostgreSQL binaries to use (default: found; version 15 preferred)
#   XDG_CACHE_HOME         cache root for the moto venv (default: $HOME/.cache)
set -euo pipefail
umask 022

readonly MOTO_VERSION=5.2.5
readonly PG_ROLE=mwaa_dr
readonly PG_PASSWORD=bench-secret-pw
readonly PG_SYSTEM_USER=mwaa-dr-bench
readonly PG_PREFERRED_MAJOR=15
readonly START_TIMEOUT=60
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly MWAA_STANDIN=$script_dir/mwaa-standin.py

bench_root=${MWAA_DR_BENCH_DIR:-${TMPDIR:-/tmp}/mwaa-dr-bench-$UID}
bench_root=${bench_root%/}
[[ $bench_root == /* ]] || bench_root=$PWD/$bench_root

# The bench directory the service functions work on: $bench_root, or a private run directory.
bench=$bench_root

log() { echo "testbench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    cat >&2 <<EOF
usage: $0 start [pg] [moto] [mwaa]
       $0 run [pg] [moto] [mwaa] -- CMD [ARGS...]
       $0 env | status | stop | moto-python
EOF
    exit 2
}

# ---------------------------------------------------------------------------------------
# Small tools

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
        return
    fi
    local port tries
    for ((tries = 0; tries < 100; tries++)); do
        port=$((20000 + RANDOM % 40000))
        if ! (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "found no free TCP port on 127.0.0.1"
}

# A zombie (exited, not yet reaped by its parent) does not count as alive.
pid_alive() {
    local state
    [[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null || return 1
    [[ -r /proc/$1/stat ]] || return 0
    state=$(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null || true)
    [[ $state != Z ]]
}

# True when process $1 runs a command line that contains $2 (guards against a reused pid).
pid_runs() {
    pid_alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

show_log_tail() {
    if [[ -s $1 ]]; then
        log "last lines of $1:"
        tail -n 30 "$1" | sed 's/^/    /' >&2
    fi
}

write_atomic() {
    local dest=$1
    cat >"$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
}

# The exports of the running services, as one file and on stdout.
publish_env() {
    local f
    {
        for f in "$bench/pg.env" "$bench/moto.env" "$bench/mwaa.env"; do
            [[ -f $f ]] && cat "$f"
        done
        true
    } | write_atomic "$bench/env"
    if [[ -s $bench/env ]]; then
        cat "$bench/env"
    else
        rm -f "$bench/env"
    fi
}

ensure_bench_dir() {
    mkdir -p "$bench"
    chmod 755 "$bench"
}

# Serialises start and stop on one bench directory. Server processes must not inherit fd 9
# (they would hold the lock for their whole life): every launch below closes it.
lock_bench() {
    ensure_bench_dir
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>"$bench/.lock"
    if ! flock -n 9; then
        log "waiting for another testbench command on $bench"
        flock -w 300 9 || die "another testbench command holds $bench/.lock"
    fi
}

unlock_bench() {
    if { true >&9; } 2>/dev/null; then
        exec 9>&-
    fi
}

# ---------------------------------------------------------------------------------------
# PostgreSQL

pg_bin_ok() {
    local d=$1 tool
    [[ -n $d ]] || return 1
    for tool in initdb pg_ctl postgres pg_isready psql pg_dump; do
        [[ -x $d/$tool ]] || return 1
    done
}

# The directory with the PostgreSQL server binaries, PostgreSQL 15 preferred.
find_pg_bin() {
    local candidates=() d
    [[ -n ${MWAA_DR_TEST_PG_BIN:-} ]] && candidates+=("$MWAA_DR_TEST_PG_BIN")
    candidates+=("/usr/lib/postgresql/$PG_PREFERRED_MAJOR/bin")
    if command -v pg_config >/dev/null 2>&1; then
        candidates+=("$(pg_config --bindir 2>/dev/null || true)")
    fi
    while IFS= read -r d; do
        candidates+=("$d")
    done < <(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -rV)
    candidates+=(/usr/local/pgsql/bin)
    if command -v initdb >/dev/null 2>&1; then
        candidates+=("$(dirname "$(command -v initdb)")")
    fi
    for d in "${candidates[@]}"; do
        if pg_bin_ok "$d"; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

# The OS user that owns and runs the server: the caller, or for root an unprivileged one.
pg_os_user() {
    if [[ $EUID -ne 0 ]]; then
        id -un
    elif id -u postgres >/dev/null 2>&1; then
        echo postgres
    else
        if ! id -u "$PG_SYSTEM_USER" >/dev/null 2>&1; then
            log "creating system user $PG_SYSTEM_USER to run PostgreSQL (initdb refuses root)"
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin "$PG_SYSTEM_USER" >&2
        fi
        echo "$PG_SYSTEM_USER"
    fi
}

# Runs a command as the server's OS user, from / (root's working directory may be closed to it).
as_pg() {
    local user=$1
    shift
    if [[ $user == "$(id -un)" ]]; then
        (cd / && "$@")
    else
        command -v runuser >/dev/null 2>&1 || die "runuser (util-linux) not found"
        (cd / && runuser -u "$user" -- "$@")
    fi
}

pg_port() { cat "$bench/pg/port" 2>/dev/null; }

pg_running() {
    local port bin
    [[ -f $bench/pg.env && -d $bench/pg/data ]] || return 1
    port=$(pg_port) && bin=$(cat "$bench/pg/bin" 2>/dev/null) || return 1
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1
}

pg_url() {
    echo "postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$1/postgres"
}

pg_stop() {
    local dir=$bench/pg bin user pid
    if [[ -d $dir/data ]]; then
        bin=$(cat "$dir/bin" 2>/dev/null || find_pg_bin || true)
        user=$(stat -c %U "$dir/data")
        if [[ -f $dir/data/postmaster.pid ]]; then
            pid=$(head -n 1 "$dir/data/postmaster.pid")
            if [[ -n $bin ]] && pid_alive "$pid"; then
                as_pg "$user" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 -s stop >&2 ||
                    as_pg "$user" "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 10 -s stop >&2 ||
                    true
            fi
            if pid_runs "$pid" postgres; then
                log "PostgreSQL (pid $pid) did not stop; killing it"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 1
            fi
        fi
    fi
    rm -rf "$dir"
    rm -f "$bench/pg.env"
}

# One attempt on one port; returns 1 when the port was taken meanwhile, dies on other errors.
pg_launch() {
    local bin=$1 user=$2 port=$3 dir=$bench/pg logfile=$bench/postgres.log
    local socket_dir=$dir/run
    # A Unix socket path is limited to 107 bytes; without a socket the TCP URL still works.
    if ((${#socket_dir} + 20 > 107)); then
        log "bench path too long for a Unix socket; PostgreSQL listens on TCP only"
        socket_dir=
    fi
    {
        echo
        echo "# testbench: a throwaway test server on loopback"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$socket_dir'"
        echo "max_connections = 200"
        echo "password_encryption = 'scram-sha-256'"
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
        echo "timezone = 'UTC'"
        echo "log_timezone = 'UTC'"
    } >>"$dir/data/postgresql.conf"
    : >"$logfile"
    chown "$user" "$logfile"
    if as_pg "$user" "$bin/pg_ctl" -D "$dir/data" -l "$logfile" -w -t "$START_TIMEOUT" -s start \
        >&2 9>&-; then
        return 0
    fi
    if grep -qE 'could not bind|Address already in use' "$logfile"; then
        as_pg "$user" "$bin/pg_ctl" -D "$dir/data" -m immediate -s stop >/dev/null 2>&1 || true
        return 1
    fi
    show_log_tail "$logfile"
    die "PostgreSQL did not start (log: $logfile)"
}

pg_start() {
    local dir=$bench/pg bin user port attempt major deadline
    if pg_running; then
        log "PostgreSQL already running on 127.0.0.1:$(pg_port) (reused)"
        return 0
    fi
    pg_stop # leftovers of an earlier run that did not stop cleanly

    bin=$(find_pg_bin) || die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found;" \
        "install PostgreSQL $PG_PREFERRED_MAJOR (Debian/Ubuntu: apt-get install" \
        "postgresql-$PG_PREFERRED_MAJOR) or set MWAA_DR_TEST_PG_BIN"
    major=$("$bin/postgres" --version | awk '{print $3}')
    major=${major%%.*}
    [[ $major == "$PG_PREFERRED_MAJOR" ]] ||
        log "warning: using PostgreSQL $major from $bin (the tests expect $PG_PREFERRED_MAJOR)"
    user=$(pg_os_user)

    mkdir -p "$dir"
    chmod 700 "$dir"
    chown "$user" "$dir"
    as_pg "$user" test -w "$dir" ||
        die "OS user $user cannot reach $dir; set MWAA_DR_BENCH_DIR to a directory it can" \
            "reach, e.g. /tmp/mwaa-dr-bench"
    echo "$bin" >"$dir/bin"
    printf '%s\n' "$PG_PASSWORD" >"$dir/pwfile"
    chown "$user" "$dir/pwfile"
    chmod 600 "$dir/pwfile"
    mkdir -p "$dir/run"
    chown "$user" "$dir/run"
    chmod 700 "$dir/run"

    log "initdb with $bin (as OS user $user)"
    if ! as_pg "$user" "$bin/initdb" -D "$dir/data" -U "$PG_ROLE" --pwfile="$dir/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C \
        --no-sync --no-instructions >"$bench/initdb.log" 2>&1; then
        show_log_tail "$bench/initdb.log"
        die "initdb failed (log: $bench/initdb.log)"
    fi
    rm -f "$dir/pwfile"
    # Password auth over TCP on 127.0.0.1 only; the socket (in a directory only the server's
    # OS user can enter) trusts that user.
    cat >"$dir/data/pg_hba.conf" <<EOF
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  scram-sha-256
EOF

    for attempt in 1 2 3; do
        port=$(free_port)
        echo "$port" >"$dir/port"
        log "starting PostgreSQL on 127.0.0.1:$port"
        pg_launch "$bin" "$user" "$port" && break
        log "port $port was taken meanwhile; trying another"
        [[ $attempt -lt 3 ]] || die "PostgreSQL found no free port"
    done

    deadline=$((SECONDS + START_TIMEOUT))
    until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            show_log_tail "$bench/postgres.log"
            die "PostgreSQL on 127.0.0.1:$port not ready after ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    # The URL the tests get must work as given: password auth over TCP.
    if ! "$bin/psql" "$(pg_url "$port")" -X -q -A -t -c 'select 1' >/dev/null 2>"$bench/psql.err"; then
        cat "$bench/psql.err" >&2
        show_log_tail "$bench/postgres.log"
        die "cannot log in as $PG_ROLE over TCP on 127.0.0.1:$port"
    fi
    rm -f "$bench/psql.err"

    {
        printf 'export MWAA_DR_TEST_PG_URL=%q\n' "$(pg_url "$port")"
        printf 'export MWAA_DR_TEST_PG_BIN=%q\n' "$bin"
    } | write_atomic "$bench/pg.env"
    log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') ready on 127.0.0.1:$port" \
        "(data: $dir/data, log: $bench/postgres.log)"
}

# ---------------------------------------------------------------------------------------
# moto

moto_venv() {
    echo "${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/mwaa-dr/venvs/moto-$MOTO_VERSION"
}

# Creates (or reuses) the cached venv. The marker file is written last, so an interrupted
# install is never reused.
ensure_moto_venv() {
    local venv cache_root marker fingerprint start
    venv=$(moto_venv)
    cache_root=$(dirname "$venv")
    marker=$venv/.mwaa-dr-complete
    command -v python3 >/dev/null 2>&1 || die "python3 not found (needed for moto)"
    fingerprint="python $(python3 -c 'import sys; print(sys.version.split()[0])') moto[server]==$MOTO_VERSION"
    venv_ready() {
        [[ -f $marker && "$(cat "$marker")" == "$fingerprint" && -x $venv/bin/moto_server ]]
    }
    venv_ready && return 0
    mkdir -p "$cache_root"
    (
        # One installer at a time; the others wait, then reuse its result.
        if command -v flock >/dev/null 2>&1; then
            exec 8>"$cache_root/moto-$MOTO_VERSION.lock"
            if ! flock -n 8; then
                log "waiting for another install of moto $MOTO_VERSION to finish"
                flock 8
            fi
        fi
        venv_ready && exit 0
        if [[ -e $venv ]]; then
            log "removing incomplete or outdated $venv"
            rm -rf "$venv"
        fi
        start=$SECONDS
        log "creating $venv (moto[server]==$MOTO_VERSION, about half a minute)"
        python3 -m venv "$venv" >&2 ||
            die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
        if ! "$venv/bin/python" -m pip install --no-input --disable-pip-version-check \
            --progress-bar off --quiet "moto[server]==$MOTO_VERSION" >&2; then
            rm -rf "$venv"
            die "pip install moto[server]==$MOTO_VERSION failed"
        fi
        echo "$fingerprint" >"$marker.tmp"
        mv "$marker.tmp" "$marker"
        log "installed moto $MOTO_VERSION in $((SECONDS - start))s"
    )
}

moto_pid() { cat "$bench/moto.pid" 2>/dev/null; }
moto_port() { cat "$bench/moto.port" 2>/dev/null; }

moto_running() {
    local pid port
    [[ -f $bench/moto.env ]] || return 1
    pid=$(moto_pid) && port=$(moto_port) || return 1
    pid_runs "$pid" moto_server &&
        curl -fsS -o /dev/null --max-time 3 "http://127.0.0.1:$port/moto-api/data.json" 2>/dev/null
}

moto_stop() {
    local pid i
    pid=$(moto_pid || true)
    if [[ -n $pid ]] && pid_runs "$pid" moto_server; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then
            log "moto (pid $pid) did not stop; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$bench/moto.pid" "$bench/moto.port" "$bench/moto.env"
}

# One attempt on one port; returns 1 when the port was taken meanwhile, dies on other errors.
moto_launch() {
    local venv=$1 port=$2 logfile=$bench/moto.log pid="" deadline
    rm -f "$bench/moto.pid"
    echo "$port" >"$bench/moto.port"
    : >"$logfile"
    # A session of its own, so that a Ctrl-C in the terminal does not reach it; the inner
    # shell records its own pid and then becomes moto_server.
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' moto-launch "$bench/moto.pid" \
        env "MOTO_PORT=$port" "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" \
        </dev/null >>"$logfile" 2>&1 9>&- &
    deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        [[ -n $pid ]] || pid=$(moto_pid || true)
        if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/moto-api/data.json" \
            2>/dev/null; then
            break
        fi
        if [[ -n $pid ]] && ! pid_alive "$pid"; then
            if grep -qE 'Address already in use|address already in use' "$logfile"; then
                return 1
            fi
            show_log_tail "$logfile"
            die "moto exited during start (log: $logfile)"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$logfile"
            [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null
            die "moto on 127.0.0.1:$port not ready after ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    # Something else may have answered on that port: the pid must be ours and alive.
    pid_runs "$pid" moto_server || die "moto did not start (log: $logfile)"
}

# GET /moto-api/config does not report the stepfunctions setting, so run a one-state machine:
# without the interpreter its execution stays RUNNING forever. Then reset moto's state (the
# configuration survives a reset) so that the tests start from nothing.
moto_check_interpreter() {
    local venv=$1 url=$2 sfn_machine sfn_execution status="" i
    sfn_call() {
        curl -fsS --max-time 10 -X POST -H 'content-type: application/x-amz-json-1.0' \
            -H "x-amz-target: AWSStepFunctions.$1" \
            -H 'authorization: AWS4-HMAC-SHA256 Credential=testing/20000101/us-east-1/states/aws4_request, SignedHeaders=host, Signature=0' \
            -d "$2" "$url/"
    }
    json_field() {
        "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
    }
    sfn_machine=$(sfn_call CreateStateMachine '{"name": "testbench-probe",
        "roleArn": "arn:aws:iam::123456789012:role/testbench-probe",
        "definition": "{\"StartAt\": \"P\", \"States\": {\"P\": {\"Type\": \"Pass\", \"End\": true}}}"}' |
        json_field stateMachineArn) || die "moto: CreateStateMachine failed"
    sfn_execution=$(sfn_call StartExecution "{\"stateMachineArn\": \"$sfn_machine\", \"name\": \"probe\"}" |
        json_field executionArn) || die "moto: StartExecution failed"
    for ((i = 0; i < 50; i++)); do
        status=$(sfn_call DescribeExecution "{\"executionArn\": \"$sfn_execution\"}" |
            json_field status) || die "moto: DescribeExecution failed"
        [[ $status == RUNNING ]] || break
        sleep 0.1
    done
    [[ $status == SUCCEEDED ]] ||
        die "moto's Step Functions interpreter is not on (probe execution: $status)"
    curl -fsS -o /dev/null --max-time 10 -X POST "$url/moto-api/reset" ||
        die "could not reset moto at $url/moto-api/reset"
}

moto_start() {
    local venv port attempt url
    if moto_running; then
        log "moto already running on 127.0.0.1:$(moto_port) (reused)"
        return 0
    fi
    moto_stop
    command -v curl >/dev/null 2>&1 || die "curl not found (apt-get install curl)"
    ensure_moto_venv
    venv=$(moto_venv)

    for attempt in 1 2 3; do
        port=$(free_port)
        log "starting moto $MOTO_VERSION on 127.0.0.1:$port"
        moto_launch "$venv" "$port" && break
        log "port $port was taken meanwhile; trying another"
        [[ $attempt -lt 3 ]] || die "moto found no free port"
    done
    url=http://127.0.0.1:$port

    # The real Step Functions interpreter is off by default; no env var turns it on.
    curl -fsS -o /dev/null --max-time 10 -X POST -H 'content-type: application/json' \
        -d '{"stepfunctions":{"execute_state_machine":true}}' "$url/moto-api/config" ||
        die "could not configure moto at $url/moto-api/config"
    moto_check_interpreter "$venv" "$url"

    printf 'export MWAA_DR_TEST_MOTO_URL=%q\n' "$url" | write_atomic "$bench/moto.env"
    log "moto ready on $url (pid $(moto_pid), log: $bench/moto.log)"
}

# ---------------------------------------------------------------------------------------
# MWAA stand-in

mwaa_pid() { cat "$bench/mwaa.pid" 2>/dev/null; }
mwaa_port() { cat "$bench/mwaa.port" 2>/dev/null; }

mwaa_running() {
    local pid port
    [[ -f $bench/mwaa.env ]] || return 1
    pid=$(mwaa_pid) && port=$(mwaa_port) || return 1
    pid_runs "$pid" mwaa-standin.py &&
        curl -fsS -o /dev/null --max-time 3 "http://127.0.0.1:$port/_standin/health" 2>/dev/null
}

mwaa_stop() {
    local pid i
    pid=$(mwaa_pid || true)
    if [[ -n $pid ]] && pid_runs "$pid" mwaa-standin.py; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then
            log "MWAA stand-in (pid $pid) did not stop; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$bench/mwaa.pid" "$bench/mwaa.port" "$bench/mwaa.env"
}

# The stand-in picks a free port itself (--port 0) and writes it to a file once it listens,
# so no other process can take the port between choosing and binding it.
mwaa_start() {
    local logfile=$bench/mwaa.log pid="" port="" deadline url
    if mwaa_running; then
        log "MWAA stand-in already running on 127.0.0.1:$(mwaa_port) (reused)"
        return 0
    fi
    mwaa_stop
    command -v curl >/dev/null 2>&1 || die "curl not found (apt-get install curl)"
    command -v python3 >/dev/null 2>&1 || die "python3 not found (needed for the MWAA stand-in)"
    [[ -f $MWAA_STANDIN ]] || die "$MWAA_STANDIN not found"
    : >"$logfile"
    log "starting the MWAA stand-in"
    # Its own session, as moto; the inner shell records its pid and then becomes python3.
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' mwaa-launch "$bench/mwaa.pid" \
        python3 "$MWAA_STANDIN" --host 127.0.0.1 --port 0 --port-file "$bench/mwaa.port" \
        </dev/null >>"$logfile" 2>&1 9>&- &
    deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        [[ -n $pid ]] || pid=$(mwaa_pid || true)
        [[ -n $port ]] || port=$(mwaa_port || true)
        if [[ -n $port ]] && curl -fsS -o /dev/null --max-time 2 \
            "http://127.0.0.1:$port/_standin/health" 2>/dev/null; then
            break
        fi
        if [[ -n $pid ]] && ! pid_alive "$pid"; then
            show_log_tail "$logfile"
            die "the MWAA stand-in exited during start (log: $logfile)"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$logfile"
            [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null
            die "the MWAA stand-in was not ready after ${START_TIMEOUT}s"
        fi
        sleep 0.1
    done
    pid_runs "$pid" mwaa-standin.py || die "the MWAA stand-in did not start (log: $logfile)"
    url=http://127.0.0.1:$port
    printf 'export MWAA_DR_TEST_MWAA_URL=%q\n' "$url" | write_atomic "$bench/mwaa.env"
    log "MWAA stand-in ready on $url (pid $pid, log: $logfile)"
}

# ---------------------------------------------------------------------------------------
# Commands

want_pg=0
want_moto=0
want_mwaa=0

# Parses service names; none means all.
parse_services() {
    local s
    want_pg=0
    want_moto=0
    want_mwaa=0
    for s in "$@"; do
        case $s in
        pg | postgres | postgresql) want_pg=1 ;;
        moto) want_moto=1 ;;
        mwaa) want_mwaa=1 ;;
        *)
            log "unknown service: $s (expected pg, moto or mwaa)"
            usage
            ;;
        esac
    done
    if ((want_pg == 0 && want_moto == 0 && want_mwaa == 0)); then
        want_pg=1
        want_moto=1
        want_mwaa=1
    fi
}

# Services this invocation is starting; a failed `start` stops them again.
starting=()

# Starts the wanted services in $bench.
start_services() {
    lock_bench
    # The slow part first, so that no server idles while the venv is built.
    if ((want_moto)) && ! moto_running; then ensure_moto_venv; fi
    if ((want_pg)); then
        pg_running || starting+=(pg)
        pg_start
    fi
    if ((want_moto)); then
        moto_running || starting+=(moto)
        moto_start
    fi
    if ((want_mwaa)); then
        mwaa_running || starting+=(mwaa)
        mwaa_start
    fi
    starting=()
    unlock_bench
}

# Stops the named services (default: all) in $bench.
stop_services() {
    local s
    (($# > 0)) || set -- pg moto mwaa
    for s in "$@"; do
        case $s in
        pg) pg_stop ;;
        moto) moto_stop ;;
        mwaa) mwaa_stop ;;
        esac
    done
    publish_env >/dev/null
}

cmd_start() {
    parse_services "$@"
    # shellcheck disable=SC2317 # invoked by the trap
    stop_half_started() {
        if ((${#starting[@]} > 0)); then
            log "start failed; stopping ${starting[*]}"
            stop_services "${starting[@]}"
        fi
    }
    trap stop_half_started EXIT
    start_services
    trap - EXIT
    publish_env
}

cmd_env() {
    (($# == 0)) || usage
    [[ -d $bench ]] || die "nothing runs (no $bench)"
    pg_running || rm -f "$bench/pg.env"
    moto_running || rm -f "$bench/moto.env"
    mwaa_running || rm -f "$bench/mwaa.env"
    local out
    out=$(publish_env)
    [[ -n $out ]] || die "nothing runs in $bench; start it with: $0 start"
    echo "$out"
}

cmd_status() {
    (($# == 0)) || usage
    echo "bench directory: $bench"
    if pg_running; then
        echo "postgres: running on 127.0.0.1:$(pg_port) (data: $bench/pg/data)"
    else
        echo "postgres: stopped"
    fi
    if moto_running; then
        echo "moto:     running on 127.0.0.1:$(moto_port) (pid $(moto_pid))"
    else
        echo "moto:     stopped"
    fi
    if mwaa_running; then
        echo "mwaa:     running on 127.0.0.1:$(mwaa_port) (pid $(mwaa_pid))"
    else
        echo "mwaa:     stopped"
    fi
    local d
    for d in "$bench_root"/run.*; do
        [[ -d $d ]] || continue
        if pid_alive "${d##*.}"; then
            echo "run:      $d (pid ${d##*.})"
        else
            echo "run:      $d (left over; '$0 stop' removes it)"
        fi
    done
}

# Stops $bench_root's servers and the servers of runs whose process is gone.
cmd_stop() {
    (($# == 0)) || usage
    local d stopped=()
    if [[ -d $bench_root ]]; then
        for d in "$bench_root"/run.*; do
            [[ -d $d ]] || continue
            if pid_alive "${d##*.}"; then
                log "leaving $d alone: its run (pid ${d##*.}) is still going"
                continue
            fi
            bench=$d
            stop_services
            rm -rf "$d"
            stopped+=("$d")
        done
        bench=$bench_root
        lock_bench
        [[ -d $bench/pg || -f $bench/moto.pid || -f $bench/mwaa.pid ]] && stopped+=("$bench")
        stop_services
        unlock_bench
    fi
    if ((${#stopped[@]} > 0)); then
        log "stopped ${stopped[*]}"
    else
        log "nothing was running"
    fi
}

cmd_run() {
    local services=()
    while (($# > 0)) && [[ $1 != -- ]]; do
        services+=("$1")
        shift
    done
    (($# >= 2)) || usage # "--" and a command
    shift
    parse_services ${services[@]+"${services[@]}"}

    local reuse=1
    if ((want_pg)) && ! pg_running; then reuse=0; fi
    if ((want_moto)) && ! moto_running; then reuse=0; fi
    if ((want_mwaa)) && ! mwaa_running; then reuse=0; fi
    if ((reuse)); then
        log "using the running servers in $bench"
        # shellcheck source=/dev/null
        source "$bench/env"
        exec "$@"
    fi

    mkdir -p "$bench_root"
    chmod 755 "$bench_root"
    bench=$bench_root/run.$$
    run_status=1
    # shellcheck disable=SC2317 # invoked by the traps
    finish_run() {
        trap - EXIT INT TERM HUP
        stop_services
        if ((run_status == 0)); then
            rm -rf "$bench"
        else
            log "logs kept in $bench"
        fi
    }
    trap finish_run EXIT
    # CMD runs in the foreground, so that it keeps the terminal and a Ctrl-C reaches it with
    # default signal handling (a background job would ignore SIGINT); bash runs these traps
    # once CMD has ended.
    trap 'run_status=130; exit 130' INT
    trap 'run_status=143; exit 143' TERM
    trap 'run_status=129; exit 129' HUP
    start_services
    publish_env >/dev/null
    # shellcheck source=/dev/null
    source "$bench/env"
    set +e
    "$@"
    run_status=$?
    set -e
    exit "$run_status"
}

(($# > 0)) || usage
command=$1
shift
case $command in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
env) cmd_env "$@" ;;
status) cmd_status "$@" ;;
run) cmd_run "$@" ;;
moto-python)
    ensure_moto_venv
    echo "$(moto_venv)/bin/python"
    ;;
-h | --help | help) usage ;;
*)
    log "unknown command: $command"
    usage
    ;;
esac
