"""Shared pieces of the end-to-end DAGs (scripts/airflow-e2e.sh), importable on Airflow
2.4 through 3.0 (the script puts the dags folder on PYTHONPATH); this module defines no DAG."""

import os
import tempfile

import pendulum

try:  # Airflow 3: the task SDK; datasets are called assets
    from airflow.sdk import DAG, Asset as Dataset, task

    AIRFLOW_3 = True
except ImportError:  # Airflow 2.4 - 2.11
    from airflow import DAG
    from airflow.datasets import Dataset
    from airflow.decorators import task

    AIRFLOW_3 = False

try:  # Airflow 3 (and 2.x with the standard provider installed)
    from airflow.providers.standard.sensors.python import PythonSensor
except ImportError:
    from airflow.sensors.python import PythonSensor

__all__ = [
    "DAG",
    "Dataset",
    "PythonSensor",
    "task",
    "START",
    "TAGS",
    "ORDERS",
    "POKE_INTERVAL",
    "state_file",
]

START = pendulum.datetime(2024, 1, 1, tz="UTC")
TAGS = ["mwaa-dr-e2e"]
# Written by e2e_xcom.publish, schedules e2e_dataset_consumer.
ORDERS = Dataset("s3://mwaa-dr-e2e/orders.json")
# Seconds between two pokes of a reschedule-mode sensor. Airflow 3's task supervisor reports
# a finished try about 5 s after the task ends; a sensor queued again before that report is
# failed by the 3.0 scheduler ("finished with state success, but the task instance's state
# attribute is queued").
POKE_INTERVAL = 10 if AIRFLOW_3 else 1


def state_file(*parts):
    """A file in the run's state directory (MWAA_DR_E2E_STATE_DIR), to remember something
    between two tries or pokes of one task instance."""
    root = os.environ.get("MWAA_DR_E2E_STATE_DIR") or tempfile.gettempdir()
    name = "__".join(str(p).replace("/", "_").replace(":", "_") for p in parts)
    return os.path.join(root, name)
