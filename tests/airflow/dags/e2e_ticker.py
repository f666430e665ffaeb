"""Airflow DAG for scripts/airflow-e2e.sh: scheduled every minute without catch-up, so a
run is always due when a scheduler starts; the scheduler of a restored database must create
it."""

from e2e_common import DAG, START, TAGS, task

with DAG(
    dag_id="e2e_ticker",
    schedule="* * * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=TAGS,
    default_args={"owner": "mwaa-dr"},
):

    @task
    def tick(**context):
        return context["run_id"]

    tick()
