"""Airflow DAG for scripts/airflow-e2e.sh: a reschedule-mode sensor whose first poke says
no and the next one yes."""

import os

from e2e_common import DAG, POKE_INTERVAL, START, TAGS, PythonSensor, state_file, task


def orders_arrived(**context):
    marker = state_file("e2e_sensor", context["run_id"], context["ti"].map_index)
    if os.path.exists(marker):
        return True
    with open(marker, "w") as f:
        f.write("poked once\n")
    return False


with DAG(
    dag_id="e2e_sensor",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=TAGS,
    default_args={"owner": "mwaa-dr"},
):
    wait = PythonSensor(
        task_id="wait_for_orders",
        python_callable=orders_arrived,
        mode="reschedule",
        poke_interval=POKE_INTERVAL,
        timeout=300,
    )

    @task
    def process():
        return "processed"

    wait >> process()
