"""Airflow DAG for scripts/airflow-e2e.sh: dynamic task mapping, one task instance per
element, then a reduce."""

from e2e_common import DAG, START, TAGS, task

with DAG(
    dag_id="e2e_mapped",
    schedule="@daily",
    start_date=START,
    catchup=False,
    tags=TAGS,
    default_args={"owner": "mwaa-dr"},
):

    @task
    def numbers():
        return [1, 2, 3, 4]

    @task
    def square(x):
        return x * x

    @task
    def total(values):
        return sum(values)

    total(square.expand(x=numbers()))
