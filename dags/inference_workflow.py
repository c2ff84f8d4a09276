"""inference_workflow: deploy the three Lambdas, the alert topic and the state machine,
then classify a batch of images through Step Functions (several executions in parallel)
and summarise the results. Low-confidence images are emailed to the owner by the state
machine itself (SNS), as in the reference design."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.providers.amazon.aws.operators.lambda_function import (
    LambdaCreateFunctionOperator,
)
from airflow.providers.amazon.aws.operators.step_function import (
    StepFunctionGetExecutionOutputOperator,
    StepFunctionStartExecutionOperator,
)
from airflow.providers.amazon.aws.sensors.step_function import StepFunctionExecutionSensor
from airflow.sdk import DAG, Param, chain, task

from ml_workflow.dag_defaults import DEFAULT_ARGS, PROJECT_TAG
from ml_workflow.settings import settings_from_env

_s = settings_from_env()

with DAG(
    dag_id="inference_workflow",
    description="Lambdas + Step Functions + SNS: classify a batch of images",
    schedule=None,
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=[PROJECT_TAG, "inference", "stepfunctions"],
    doc_md=__doc__,
    params={
        "partition": Param("", type="string", title="Dataset partition",
                           description="YYYY-MM-DD or s3://bucket/prefix/; empty: newest"),
        "dataset_name": Param(_s.dataset_name, type="string", title="Dataset"),
        "count": Param(20, type="integer", minimum=1, maximum=10000,
                       title="Test images to classify"),
        "keys": Param([], type="array", items={"type": "string"}, title="Explicit images",
                      description="S3 keys in the bucket or s3:// URIs; overrides count"),
        "batch_size": Param(50, type="integer", minimum=1, maximum=500,
                            title="Images per execution"),
        "max_concurrency": Param(4, type="integer", minimum=1, maximum=40,
                                 title="Chunks in flight per execution"),
        "images_per_chunk": Param(16, type="integer", minimum=1, maximum=40,
                                  title="Images per Lambda call",
                                  description="Each chunk's base64 images travel in the "
                                              "state: keep chunk × image size ≪ 256 KB"),
    },
) as dag:

    @task
    def package_lambdas() -> list[dict]:
        from ml_workflow.inference_tasks import package_lambdas as package

        return package()

    @task
    def plan_lambdas(specs: list[dict]) -> dict:
        from ml_workflow.inference_tasks import split_create_update

        return split_create_update(specs)

    @task
    def to_create(plan: dict) -> list[dict]:
        return plan["create"]

    @task
    def to_update(plan: dict) -> list[dict]:
        return plan["update"]

    @task
    def update_lambda(spec: dict) -> str:
        from ml_workflow.inference_tasks import update_lambda as update

        return update(spec)

    @task
    def ensure_topic() -> str:
        from ml_workflow.inference_tasks import ensure_topic as topic

        return topic()

    @task(trigger_rule="none_failed")
    def ensure_state_machine(topic_arn: str, params=None) -> str:
        from ml_workflow.inference_tasks import ensure_state_machine as machine

        return machine(topic_arn, params["max_concurrency"], params["images_per_chunk"])

    @task
    def choose_batches(params=None, run_id=None) -> list[dict]:
        from ml_workflow.inference_tasks import choose_batches as choose

        return choose(params, run_id)

    @task
    def summarise(outputs, run_id=None) -> dict:
        from ml_workflow.inference_tasks import summarise as summary

        return summary(run_id, list(outputs))

    lambdas = plan_lambdas(package_lambdas())
    created = LambdaCreateFunctionOperator.partial(
        task_id="create_lambda", aws_conn_id=_s.aws_conn_id,
        wait_for_completion=True, waiter_delay=_s.poll_interval_s,
    ).expand_kwargs(to_create(lambdas))
    updated = update_lambda.expand(spec=to_update(lambdas))
    machine = ensure_state_machine(ensure_topic())
    batches = choose_batches()
    started = StepFunctionStartExecutionOperator.partial(
        task_id="start_execution", state_machine_arn=machine, aws_conn_id=_s.aws_conn_id,
    ).expand_kwargs(batches)
    finished = StepFunctionExecutionSensor.partial(
        task_id="wait_for_execution", aws_conn_id=_s.aws_conn_id,
        poke_interval=_s.poll_interval_s, timeout=3600, mode="poke",
    ).expand(execution_arn=started.output)
    outputs = StepFunctionGetExecutionOutputOperator.partial(
        task_id="get_execution_output", aws_conn_id=_s.aws_conn_id,
    ).expand(execution_arn=started.output)

    chain([created, updated], machine)
    chain(machine, batches, started, finished, outputs, summarise(outputs.output))
