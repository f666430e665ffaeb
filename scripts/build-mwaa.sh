#!/usr/bin/env bash
# Builds the mwaa-dr binary that runs inside every Amazon MWAA image, and proves it does.
#
# Usage: scripts/build-mwaa.sh [--out DIR] [--target-dir DIR] [--check]
#
#   --out DIR         where mwaa-dr and mwaa-dr.sha256 are written (default: dist/)
#   --target-dir DIR  cargo's target dir for this build (default:
#                     $HOME/.cache/mwaa-dr/target-mwaa: outside the clone, so a rebuild,
#                     in CI too, is incremental)
#   --check           build nothing: verify DIR/mwaa-dr (glibc floor, stripped, SHA-256
#                     file, runs --version)
#
# MWAA runs Amazon Linux 2 (glibc 2.26) for Airflow 2.4-2.6 and Amazon Linux 2023
# (glibc 2.34) for 2.7 and later, x86_64 only. A binary linked on this machine asks for the
# build host's glibc, so the build links against glibc 2.26 through cargo-zigbuild
# (target x86_64-unknown-linux-gnu.2.26); Zig also compiles the C dependencies (zstd,
# aws-lc) against 2.26's headers. Zig and cargo-zigbuild come from PyPI, pinned, into a
# cached venv ($HOME/.cache/mwaa-dr/venvs/zig-<version>).
#
# After building, the floor is checked, not assumed: `objdump -T` must list no GLIBC_
# symbol version newer than 2.26, and the binary must run.
#
# Environment: XDG_CACHE_HOME (cache root, default $HOME/.cache).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

zig_version=0.14.1
zigbuild_version=0.20.1
glibc_floor=2.26
triple=x86_64-unknown-linux-gnu
profile=mwaa

log() { echo "build-mwaa: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    sed -n '3,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/mwaa-dr
out=dist
target_dir=$cache_root/target-mwaa
check_only=false
while (($# > 0)); do
    case $1 in
    --out)
        (($# >= 2)) || die "--out needs a directory"
        out=$2
        shift 2
        ;;
    --target-dir)
        (($# >= 2)) || die "--target-dir needs a directory"
        target_dir=$2
        shift 2
        ;;
    --check)
        check_only=true
        shift
        ;;
    -h | --help) usage ;;
    *)
        log "unknown argument '$1' (accepted: --out DIR, --target-dir DIR, --check)"
        exit 2
        ;;
    esac
done

command -v objdump >/dev/null 2>&1 ||
    die "objdump not found: install binutils (apt-get install binutils); it proves the glibc floor"

# Verifies a built binary: glibc floor, stripped, and it runs. Prints the newest GLIBC_
# version it needs.
verify() {
    local bin=$1 newest offending sections
    [ -x "$bin" ] || die "$bin does not exist or is not executable"
    local dynsyms
    dynsyms=$(objdump -T "$bin") || die "objdump -T $bin failed"
    # The versions newer than the floor are those sort -V puts after it; then every symbol
    # that asks for one of them.
    local newer
    newer=$(
        { echo "$glibc_floor"; grep -o 'GLIBC_[0-9][0-9.]*' <<<"$dynsyms" | sed 's/^GLIBC_//'; } |
            sort -uV | sed "1,/^${glibc_floor//./\\.}\$/d" | paste -sd' ' -
    )
    offending=$(
        awk -v newer=" $newer " 'match($0, /GLIBC_[0-9][0-9.]*/) {
            v = substr($0, RSTART + 6, RLENGTH - 6)
            if (index(newer, " " v " ")) print $NF " (GLIBC_" v ")"
        }' <<<"$dynsyms"
    )
    if [ -n "$offending" ]; then
        die "$bin needs a glibc newer than $glibc_floor, so it would not load on Amazon Linux 2 (MWAA with Airflow 2.4-2.6); symbols: $(echo "$offending" | sort -u | paste -sd, -)"
    fi
    newest=$(grep -o 'GLIBC_[0-9][0-9.]*' <<<"$dynsyms" | sort -uV | tail -1)
    [ -n "$newest" ] || die "objdump -T $bin lists no GLIBC_ symbol: not a glibc-linked binary?"
    sections=$(objdump -h "$bin") || die "objdump -h $bin failed"
    if grep -Eq '[[:space:]](\.symtab|\.debug_[a-z_]+)[[:space:]]' <<<"$sections"; then
        die "$bin is not stripped (it has .symtab or .debug_* sections)"
    fi
    "$bin" --version >/dev/null || die "$bin --version failed: the binary does not run here"
    echo "$newest"
}

report() {
    local bin=$1 newest=$2
    echo "binary:  $(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
    echo "size:    $(stat -c %s "$bin") bytes"
    echo "sha256:  $(cut -d' ' -f1 "$bin.sha256")"
    echo "glibc:   newest symbol version $newest (floor $glibc_floor)"
}

if $check_only; then
    bin=$out/mwaa-dr
    [ -f "$bin.sha256" ] || die "$bin.sha256 not found: build with scripts/build-mwaa.sh first"
    (cd "$out" && sha256sum --check --quiet mwaa-dr.sha256) ||
        die "$bin does not match $bin.sha256"
    newest=$(verify "$bin")
    report "$bin" "$newest"
    exit 0
fi

# The cached venv with Zig and cargo-zigbuild; a marker written last makes an interrupted
# install start over instead of being reused half-made.
venv=$cache_root/venvs/zig-$zig_version
marker=$venv/.mwaa-dr-complete
want="ziglang==$zig_version cargo-zigbuild==$zigbuild_version"
if ! { [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; }; then
    command -v python3 >/dev/null 2>&1 || die "python3 not found: it installs Zig and cargo-zigbuild from PyPI"
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 ||
        die "Python's venv module is missing: install python3-venv"
    log "installing $want into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --no-input --disable-pip-version-check --progress-bar off \
        "ziglang==$zig_version" "cargo-zigbuild==$zigbuild_version" >&2 ||
        die "pip could not install $want"
    echo "$want" >"$marker"
fi
# cargo-zigbuild finds Zig as `python3 -m ziglang` of the venv's interpreter.
export PATH=$venv/bin:$PATH

# The target triple is the host's, so build scripts that follow cc-rs's convention (aws-lc-sys
# among them) would prefer a HOST_CC over the zig cc that cargo-zigbuild sets, and compile C
# against this machine's newer glibc.
unset HOST_CC HOST_CXX HOST_CFLAGS HOST_CXXFLAGS \
    HOST_CC_x86_64_unknown_linux_gnu HOST_CXX_x86_64_unknown_linux_gnu \
    HOST_CFLAGS_x86_64_unknown_linux_gnu HOST_CXXFLAGS_x86_64_unknown_linux_gnu

# Run from a test or `cargo run`, the outer cargo's package variables (CARGO_PKG_NAME, ...)
# are in the environment; build scripts that watch them (rerun-if-env-changed) would see a
# change and rebuild most of the tree, about 40 minutes here, instead of reusing it.
for var in $(compgen -e); do
    case $var in
    CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_BIN_EXE_* | CARGO_CRATE_NAME | CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | NEXTEST*)
        unset "$var"
        ;;
    esac
done

mkdir -p "$out" "$target_dir"
log "building $triple.$glibc_floor (profile $profile) in $target_dir"
start=$SECONDS
CARGO_TARGET_DIR=$target_dir cargo zigbuild --locked --profile "$profile" \
    --target "$triple.$glibc_floor" --bin mwaa-dr >&2 ||
    die "cargo zigbuild failed (see above)"
log "built in $((SECONDS - start))s"

built=$target_dir/$triple/$profile/mwaa-dr
[ -f "$built" ] || die "cargo zigbuild reported success but $built does not exist"
bin=$out/mwaa-dr
# Replaced atomically so a --check or a copy running meanwhile never sees half a file.
cp "$built" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
(cd "$out" && sha256sum mwaa-dr >mwaa-dr.sha256)
newest=$(verify "$bin")
report "$bin" "$newest"
