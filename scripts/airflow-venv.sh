#!/usr/bin/env bash
# Create (or reuse) a cached Python virtualenv with a real Apache Airflow release and
# psycopg2, for generating schema fixtures and for end-to-end tests against Airflow's CLI.
#
# Usage: scripts/airflow-venv.sh VERSION
#
# The venv lives in ${XDG_CACHE_HOME:-$HOME/.cache}/mwaa-dr/venvs/airflow-VERSION and its
# path is the only thing printed on stdout; progress goes to stderr.
#
# The install is reproducible: scripts/airflow/constraints/airflow-VERSION.txt, when present,
# pins every package (pip -c). A version without a constraints file gets only the extra pins
# of its minor version from scripts/airflow/pins.txt.
#
# The install is atomic: a marker file is written last, holding a fingerprint of the Python
# interpreter, the requirements and the constraints. A venv without a matching marker (an
# interrupted install, or changed constraints) is removed and built again.
#
# Environment:
#   MWAA_DR_AIRFLOW_PYTHON  interpreter to build the venv with
#                           (default: python3.11 when on PATH, else python3)
#   XDG_CACHE_HOME          cache root (default: $HOME/.cache)
set -euo pipefail

usage() {
    echo "usage: $0 VERSION   (e.g. $0 2.10.3)" >&2
    exit 2
}

[ $# -eq 1 ] || usage
version=$1
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || usage

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
data_dir=$script_dir/airflow
constraints=$data_dir/constraints/airflow-$version.txt
minor=${version%.*}

log() { echo "airflow-venv: $*" >&2; }

python=${MWAA_DR_AIRFLOW_PYTHON:-}
if [ -z "$python" ]; then
    if command -v python3.11 >/dev/null 2>&1; then python=python3.11; else python=python3; fi
fi
command -v "$python" >/dev/null 2>&1 || { log "Python interpreter '$python' not found"; exit 1; }
python_version=$("$python" -c 'import sys; print(sys.version.split()[0])')

pins=()
if [ -f "$data_dir/pins.txt" ]; then
    line=$(awk -v m="$minor" '$1 == m { $1 = ""; print; exit }' "$data_dir/pins.txt")
    read -r -a pins <<<"$line"
fi
requirements=("apache-airflow==$version" psycopg2-binary ${pins[@]+"${pins[@]}"})

pip_args=(install --no-input --disable-pip-version-check --progress-bar off)
if [ -f "$constraints" ]; then
    pip_args+=(-c "$constraints")
else
    log "no constraints file for $version (scripts/airflow/constraints/airflow-$version.txt);"
    log "installing the latest matching packages with pins: ${pins[*]:-none}"
fi
pip_args+=("${requirements[@]}")

fingerprint=$(
    {
        echo "python $python_version"
        printf 'requirement %s\n' "${requirements[@]}"
        if [ -f "$constraints" ]; then cat "$constraints"; fi
    } | sha256sum | cut -d' ' -f1
)

cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/mwaa-dr/venvs
venv=$cache_root/airflow-$version
marker=$venv/.mwaa-dr-complete
mkdir -p "$cache_root"

is_ready() {
    [ -f "$marker" ] && [ "$(cat "$marker")" = "$fingerprint" ] && [ -x "$venv/bin/airflow" ]
}

# One installer per venv at a time; the others wait, then reuse its result.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache_root/airflow-$version.lock"
    if ! flock -n 9; then
        log "waiting for another install of $version to finish"
        flock 9
    fi
fi

if is_ready; then
    log "reusing $venv"
    echo "$venv"
    exit 0
fi

if [ -e "$venv" ]; then
    log "removing incomplete or outdated $venv"
    rm -rf "$venv"
fi

log "creating $venv (Python $python_version)"
log "pip ${pip_args[*]}"
start=$(date +%s)
"$python" -m venv "$venv"
# pip's stdout goes to stderr: this script's stdout is only the venv path.
if ! "$venv/bin/python" -m pip "${pip_args[@]}" >&2; then
    log "pip install failed; removing $venv"
    rm -rf "$venv"
    exit 1
fi
# Starting the CLI is the real test of the pins. Airflow writes a default airflow.cfg into
# AIRFLOW_HOME, so give it a throwaway one.
check_home=$(mktemp -d)
if ! AIRFLOW_HOME=$check_home "$venv/bin/airflow" version >/dev/null 2>"$check_home/err"; then
    cat "$check_home/err" >&2
    rm -rf "$check_home" "$venv"
    log "airflow $version does not start; removed $venv"
    exit 1
fi
rm -rf "$check_home"
echo "$fingerprint" >"$marker.tmp"
mv "$marker.tmp" "$marker"
log "installed Airflow $version in $(($(date +%s) - start)) s"
echo "$venv"
