"""cifar_etl: CIFAR-100 archive → chosen classes → PNG + .lst partition in S3.

Daily and backfillable (one partition per data interval), or triggered from the UI with
the form below. The partition is published by ``_MANIFEST.json``, written last, and
announced through the ``cifar_dataset`` Asset that schedules ``train_deploy``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Param, chain, task

from ml_workflow.assets import DATASET
from ml_workflow.dag_defaults import DEFAULT_ARGS, PROJECT_TAG
from ml_workflow.settings import settings_from_env

_s = settings_from_env()

with DAG(
    dag_id="cifar_etl",
    description="CIFAR-100 archive → PNG + .lst dataset partition in S3",
    schedule="@daily",
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=[PROJECT_TAG, "etl"],
    doc_md=__doc__,
    params={
        "classes": Param(list(_s.classes), type="array", items={"type": "string"},
                         minItems=2, uniqueItems=True, title="Classes",
                         description="CIFAR-100 fine class names, in label order"),
        "source": Param(_s.cifar100_source, type="string", minLength=1, title="Source",
                        description="Archive: a path, file://, https:// or s3:// URL"),
        "md5": Param(_s.cifar100_md5, type="string", pattern="^[0-9a-fA-F]{32}$",
                     title="MD5", description="Expected MD5 of the archive"),
        "dataset_name": Param(_s.dataset_name, type="string",
                              pattern="^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", title="Dataset"),
        "test_split": Param("official", enum=["official", "holdout"], title="Test split",
                            description="official: CIFAR's test rows; holdout: a stratified "
                                        "share of the train rows (CIFAR's test rows unused)"),
        "holdout_fraction": Param(0.1, type="number", minimum=0.05, maximum=0.5,
                                  title="Holdout fraction"),
    },
) as dag:

    @task
    def plan(params=None, logical_date=None, dag_run=None, run_id=None) -> dict:
        from ml_workflow.etl_tasks import plan_partition

        return plan_partition(params, logical_date or dag_run.run_after, run_id,
                              manual=dag_run.run_type == "manual")

    @task
    def extract(partition: dict) -> dict:
        from ml_workflow.etl_tasks import run_extract

        return run_extract(partition)

    @task
    def transform(partition: dict, raw: dict) -> dict:
        from ml_workflow.etl_tasks import run_transform

        return run_transform(partition, raw)

    @task(outlets=[DATASET])
    def load(partition: dict, staged: dict, outlet_events=None) -> dict:
        from ml_workflow.etl_tasks import run_load

        published = run_load(partition, staged)
        outlet_events[DATASET].extra = published
        return published

    partition = plan()
    raw = extract(partition)
    staged = transform(partition, raw)
    chain(partition, raw, staged, load(partition, staged))
