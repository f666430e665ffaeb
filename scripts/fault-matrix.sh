#!/usr/bin/env bash
# Regenerates docs/RELIABILITY.md: runs the fault matrix (tests/integration/matrix.rs) against
# private test servers and writes its table. The suite runs the same matrix and fails on any
# failing trial; this script only keeps the document current.
#
# Usage: scripts/fault-matrix.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MWAA_DR_RELIABILITY_OUT=$PWD/docs/RELIABILITY.md
exec scripts/test.sh -E 'test(matrix::)'
