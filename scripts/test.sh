#!/usr/bin/env bash
# Runs the whole test suite against a throwaway PostgreSQL server and a moto server
# (scripts/testbench.sh), installing what is missing first.
#
# Usage: scripts/test.sh [NEXTEST ARGS...]     e.g. scripts/test.sh -E 'test(restore)'
#
# Extra arguments go to `cargo nextest run`. Without cargo-nextest the suite runs under
# `cargo test` instead (extra arguments then go to `cargo test`).
#
# Installs, when missing and running as root with apt-get: the PostgreSQL 15 server, curl,
# and Python's venv module (moto runs from a cached venv). Otherwise it says what to install.
# CARGO_TARGET_DIR, when set, is used as it is.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "test.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

have_pg_server() {
    local d
    for d in "${MWAA_DR_TEST_PG_BIN:-}" /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
        [[ -n $d && -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] && return 0
    done
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

missing=()
have_pg_server || missing+=(postgresql)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi

if ((${#missing[@]} > 0)); then
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        die "missing: ${missing[*]}. Install them (Debian/Ubuntu:" \
            "sudo apt-get install ${missing[*]/#postgresql/postgresql-15}), then run $0 again"
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    packages=()
    for p in "${missing[@]}"; do
        if [[ $p == postgresql ]]; then
            # PostgreSQL 15 where the distribution has it (Debian 12), else its default.
            if apt-cache show postgresql-15 >/dev/null 2>&1; then p=postgresql-15; fi
        fi
        packages+=("$p")
    done
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
    have_pg_server || die "the PostgreSQL server is still not found after installing it"
fi

command -v cargo >/dev/null 2>&1 || die "cargo not found (install the Rust toolchain with rustup)"

if cargo nextest --version >/dev/null 2>&1; then
    test_command=(cargo nextest run --no-fail-fast "$@")
else
    log "cargo-nextest not found (install: cargo install --locked cargo-nextest);" \
        "running cargo test instead"
    test_command=(cargo test --no-fail-fast "$@")
fi

exec scripts/testbench.sh run -- "${test_command[@]}"
