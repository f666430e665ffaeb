"""Airflow DAG for scripts/airflow-e2e.sh: a task that fails on its first try and succeeds
on the retry."""

from datetime import timedelta

from e2e_common import DAG, START, TAGS, task

with DAG(
    dag_id="e2e_retry",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=TAGS,
    default_args={"owner": "mwaa-dr"},
):

    @task(retries=2, retry_delay=timedelta(seconds=1))
    def flaky(**context):
        if context["ti"].try_number < 2:
            raise RuntimeError("failing the first try on purpose")
        return context["ti"].try_number

    @task
    def after(tries):
        return f"succeeded after {tries} tries"

    after(flaky())
