#!/usr/bin/env bash
# Runs cfn-lint (AWS's CloudFormation linter) from a cached venv, installing it first when
# missing: ${XDG_CACHE_HOME:-$HOME/.cache}/mwaa-dr/venvs/cfn-lint-$CFN_LINT_VERSION.
#
# Usage: scripts/cfn-lint.sh TEMPLATE...        (arguments go to cfn-lint)
# Exit status: cfn-lint's (0 clean, non-zero with findings); 1 when it cannot be installed.
set -euo pipefail

CFN_LINT_VERSION=${CFN_LINT_VERSION:-1.58.0}

log() { echo "cfn-lint.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

venv="${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/mwaa-dr/venvs/cfn-lint-$CFN_LINT_VERSION"
marker=$venv/.mwaa-dr-complete
command -v python3 >/dev/null 2>&1 || die "python3 not found (needed for cfn-lint)"
fingerprint="python $(python3 -c 'import sys; print(sys.version.split()[0])') cfn-lint==$CFN_LINT_VERSION"

venv_ready() { [[ -f $marker && "$(cat "$marker")" == "$fingerprint" && -x $venv/bin/cfn-lint ]]; }

if ! venv_ready; then
    mkdir -p "$(dirname "$venv")"
    (
        # One install at a time; the marker is written last, so an interrupted install is
        # redone.
        exec 8>"$venv.lock"
        flock 8
        venv_ready && exit 0
        rm -rf "$venv"
        log "creating $venv (cfn-lint==$CFN_LINT_VERSION)"
        python3 -m venv "$venv" >&2 ||
            die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
        if ! "$venv/bin/python" -m pip install --no-input --disable-pip-version-check \
            --progress-bar off --quiet "cfn-lint==$CFN_LINT_VERSION" >&2; then
            rm -rf "$venv"
            die "pip install cfn-lint==$CFN_LINT_VERSION failed"
        fi
        echo "$fingerprint" >"$marker"
    )
fi

exec "$venv/bin/cfn-lint" "$@"
