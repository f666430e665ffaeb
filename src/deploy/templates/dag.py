"""__TITLE__

Rendered by `mwaa-dr dags render`: one task, "mwaa_dr", that runs the mwaa-dr binary. Its
stderr goes to the task log; its JSON report is the task's return value (XCom). Render it
again rather than edit it.
"""

import json
import logging
import os
import subprocess
import threading
from datetime import datetime, timezone

try:  # Airflow 3: the Task SDK and the standard provider
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.python import PythonOperator
from airflow.exceptions import AirflowException

DAG_ID = __DAG_ID__
COMMAND = __COMMAND__
# Settings resolved by `mwaa-dr config` at render time; never a password nor a key: the
# worker's own environment gives the database URL and the Fernet key.
SETTINGS = json.loads(__SETTINGS__)
# The dag_run.conf keys a run may set, and how each reaches the binary.
CONF_KEYS = json.loads(__CONF_KEYS__)
INSTALL_PATH = __INSTALL_PATH__

log = logging.getLogger("airflow.task")


def _argv(conf):
    unknown = sorted(set(conf) - set(CONF_KEYS))
    if unknown:
        accepted = ", ".join(sorted(CONF_KEYS)) or "none"
        raise AirflowException(
            f"dag_run.conf key(s) {', '.join(unknown)} not accepted by {DAG_ID}; accepted: {accepted}"
        )
    binary = os.environ.get("MWAA_DR_BIN") or INSTALL_PATH
    argv, env = [binary, "--output", "json", "--yes", COMMAND], {}
    for key, value in sorted(conf.items()):
        spec = CONF_KEYS[key]
        if spec["type"] == "bool":
            if not isinstance(value, bool):
                raise AirflowException(f"dag_run.conf {key} must be true or false, not {value!r}")
            if value:
                argv.append(spec["flag"])
        else:
            if not isinstance(value, str) or not value:
                raise AirflowException(f"dag_run.conf {key} must be a non-empty string, not {value!r}")
            if "flag" in spec:
                argv += [spec["flag"], value]
            else:
                env[spec["env"]] = value
    return argv, env


def _error_message(lines):
    for line in reversed(lines):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            return doc["error"].get("message", line)
    return "\n".join(lines[-5:]) or "no message"


def run_mwaa_dr(**context):
    dag_run = context["dag_run"]
    argv, conf_env = _argv(dag_run.conf or {})
    env = dict(os.environ)
    env.update(SETTINGS)
    env.update(conf_env)
    # Keeps this run's own rows out of backups and out of --clean deletes.
    env["MWAA_DR_DAG_RUN"] = f"{dag_run.dag_id}/{dag_run.run_id}"
    log.info("running %s", " ".join(argv))
    try:
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    except OSError as e:
        raise AirflowException(
            f"cannot run {argv[0]}: {e} (install it with the startup script, or set MWAA_DR_BIN)"
        )
    tail = []

    def pump():
        for line in proc.stderr:
            line = line.rstrip("\n")
            log.info("%s", line)
            tail.append(line)
            del tail[:-50]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    report = proc.stdout.read()
    code = proc.wait()
    reader.join()
    if code != 0:
        raise AirflowException(f"mwaa-dr {COMMAND} failed (exit {code}): {_error_message(tail)}")
    return report.strip()


with DAG(
    dag_id=DAG_ID,
    description=__DESCRIPTION__,
    schedule=__SCHEDULE__,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=__PAUSED_UPON_CREATION__,
    max_active_runs=1,
    tags=["mwaa-dr"],
):
    PythonOperator(task_id="mwaa_dr", python_callable=run_mwaa_dr)
