"""Airflow DAG for scripts/airflow-e2e.sh: XCom push and pull (a return value and an
explicit key), and a dataset outlet that schedules e2e_dataset_consumer."""

from e2e_common import DAG, ORDERS, START, TAGS, task

with DAG(
    dag_id="e2e_xcom",
    schedule="@daily",
    start_date=START,
    catchup=False,
    tags=TAGS,
    default_args={"owner": "mwaa-dr"},
):

    @task
    def extract(**context):
        context["ti"].xcom_push(key="greeting", value="hello from extract")
        return {"orders": 42, "currency": "EUR"}

    @task(outlets=[ORDERS])
    def publish(summary, **context):
        greeting = context["ti"].xcom_pull(task_ids="extract", key="greeting")
        if greeting != "hello from extract" or summary["orders"] != 42:
            raise ValueError(f"unexpected XComs: {greeting!r}, {summary!r}")
        return f"{greeting}: {summary['orders']} orders"

    publish(extract())
