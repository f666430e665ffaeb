#!/usr/bin/env bash
# MWAA startup script rendered by `mwaa-dr dags render`: installs the mwaa-dr binary from S3
# into this container, refusing it unless its SHA-256 is the one written below, and exports
# MWAA_DR_BIN (and PATH) for the DR DAGs. Render it again rather than edit it.

MWAA_DR_BINARY_URI=__BINARY_URI__
MWAA_DR_BINARY_VERSION=__BINARY_VERSION__
MWAA_DR_BINARY_SHA256=__BINARY_SHA256__
MWAA_DR_INSTALL_PATH=__INSTALL_PATH__

# python3 and boto3 are on every MWAA image; the AWS CLI is not.
if MWAA_DR_BINARY_URI="$MWAA_DR_BINARY_URI" MWAA_DR_BINARY_VERSION="$MWAA_DR_BINARY_VERSION" \
    MWAA_DR_BINARY_SHA256="$MWAA_DR_BINARY_SHA256" MWAA_DR_INSTALL_PATH="$MWAA_DR_INSTALL_PATH" \
    python3 - <<'PY'
import hashlib, os, sys, tempfile
import boto3

uri, version = os.environ["MWAA_DR_BINARY_URI"], os.environ["MWAA_DR_BINARY_VERSION"]
expected, path = os.environ["MWAA_DR_BINARY_SHA256"].lower(), os.environ["MWAA_DR_INSTALL_PATH"]
bucket, _, key = uri[len("s3://"):].partition("/")
extra = {"VersionId": version} if version else {}
body = boto3.client("s3").get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
actual = hashlib.sha256(body).hexdigest()
if actual != expected:
    sys.exit(
        f"mwaa-dr: refusing {uri}: its SHA-256 is {actual}, the startup script expects {expected}; "
        "nothing was installed"
    )
os.makedirs(os.path.dirname(path), exist_ok=True)
# Written beside the target and renamed, so a worker never sees half a binary.
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".mwaa-dr.")
with os.fdopen(fd, "wb") as f:
    f.write(body)
os.chmod(tmp, 0o755)
os.replace(tmp, path)
print(f"mwaa-dr: installed {uri} ({actual}) at {path}", file=sys.stderr)
PY
then
    export MWAA_DR_BIN="$MWAA_DR_INSTALL_PATH"
    export PATH="$(dirname "$MWAA_DR_INSTALL_PATH"):$PATH"
else
    echo "mwaa-dr: the binary was not installed; the DR DAGs will fail until it is" >&2
    # MWAA sources this script: `return` ends it without ending the caller's shell.
    return 1 2>/dev/null || exit 1
fi
