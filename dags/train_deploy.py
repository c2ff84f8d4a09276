"""train_deploy: SageMaker training (built-in image-classification) → quality gate →
endpoint with Data Capture, created once and updated in place by every better model.

Runs when ``cifar_etl`` publishes a partition (the ``cifar_dataset`` Asset) or weekly,
whichever comes first; or from the UI with the form below.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerEndpointOperator,
    SageMakerTrainingOperator,
)
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, chain, task

from ml_workflow.assets import DATASET
from ml_workflow.dag_defaults import DEFAULT_ARGS, PROJECT_TAG
from ml_workflow.settings import settings_from_env

_s = settings_from_env()

with DAG(
    dag_id="train_deploy",
    description="Train, gate and deploy the classifier to a Data Capture endpoint",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 0", timezone="UTC"), assets=DATASET),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[PROJECT_TAG, "sagemaker", "training"],
    doc_md=__doc__,
    params={
        "partition": Param("", type="string", title="Dataset partition",
                           description="YYYY-MM-DD or s3://bucket/prefix/; empty: the one "
                                       "that triggered the run, else the newest published"),
        "dataset_name": Param(_s.dataset_name, type="string", title="Dataset"),
        "hyperparameters": Param({}, type="object", title="Hyperparameters",
                                 description='Extra hyperparameters, e.g. {"epochs": 30}'),
        "training_instance_type": Param(_s.training_instance_type, type="string"),
        "endpoint_instance_type": Param(_s.endpoint_instance_type, type="string"),
        "endpoint_name": Param(_s.endpoint_name, type="string",
                               pattern="^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"),
        "min_accuracy": Param(_s.min_accuracy, type="number", minimum=0, maximum=1),
        "force_deploy": Param(False, type="boolean", title="Skip the quality gate"),
    },
) as dag:

    @task(multiple_outputs=True)
    def plan(params=None, run_id=None, dag_run=None, triggering_asset_events=None) -> dict:
        from ml_workflow.train_tasks import plan_training

        return plan_training(params, run_id, dag_run.logical_date or dag_run.run_after,
                             triggering_asset_events)

    planned = plan()
    train = SageMakerTrainingOperator(
        task_id="train",
        config=planned["training_config"],
        aws_conn_id=_s.aws_conn_id,
        wait_for_completion=True,
        print_log=True,
        check_interval=_s.poll_interval_s,
        check_if_job_exists=True,
        action_if_job_exists="timestamp",
        deferrable=_s.deferrable,
    )

    @task
    def evaluate(training: dict, partition: dict, params=None) -> dict:
        from ml_workflow.train_tasks import evaluate as evaluate_model

        return evaluate_model(params, training, partition)

    @task.branch
    def gate(decision: dict) -> str:
        return "prepare_deployment" if decision["deploy"] else "reject"

    @task
    def reject(decision: dict) -> str:
        import logging

        logging.getLogger(__name__).warning(
            "model %s NOT deployed: %s; endpoint %s left untouched",
            decision["training_job"], decision["reason"], decision["endpoint"])
        return decision["reason"]

    @task
    def prepare_deployment(decision: dict, image: str, params=None) -> dict:
        from ml_workflow.train_tasks import prepare_deployment as prepare

        return prepare(params, decision, image)

    @task
    def verify(decision: dict, deployment: dict) -> dict:
        from ml_workflow.train_tasks import verify_and_smoke_test

        return verify_and_smoke_test(decision, deployment)

    @task
    def register(decision: dict, deployment: dict, smoke: dict) -> dict:
        from ml_workflow.train_tasks import register_and_clean_up

        return register_and_clean_up(decision, deployment, smoke)

    decision = evaluate(train.output, planned["partition"])
    deployment = prepare_deployment(decision, planned["image"])
    deploy = SageMakerEndpointOperator(
        task_id="deploy",
        config=deployment,
        operation="create",  # the operator updates in place when the endpoint exists
        aws_conn_id=_s.aws_conn_id,
        wait_for_completion=True,
        check_interval=_s.poll_interval_s,
        max_ingestion_time=3600,
        deferrable=_s.deferrable,
    )
    smoke = verify(decision, deployment)
    chain(planned["training_config"], train, decision, gate(decision),
          [deployment, reject(decision)])
    chain(deployment, deploy, smoke, register(decision, deployment, smoke))
