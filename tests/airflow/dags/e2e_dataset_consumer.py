"""Airflow DAG for scripts/airflow-e2e.sh: scheduled by the dataset (asset on Airflow 3)
that e2e_xcom.publish updates."""

from e2e_common import DAG, ORDERS, START, TAGS, task

with DAG(
    dag_id="e2e_dataset_consumer",
    schedule=[ORDERS],
    start_date=START,
    catchup=False,
    tags=TAGS,
    default_args={"owner": "mwaa-dr"},
):

    @task
    def load(**context):
        return f"loaded for {context['run_id']}"

    load()
