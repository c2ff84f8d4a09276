"""infra_setup: deploy the project's CloudFormation stack (data bucket, least-privilege IAM
roles of SageMaker, Lambda and Step Functions, SNS alert topic with its e-mail
subscription), create it the first time and update it afterwards, then write its outputs
as the Airflow Variables ``ml_workflow_bucket``, ``ml_workflow_*_role_arn``,
``ml_workflow_sns_topic_name``/``_arn`` and ``ml_workflow_endpoint_name`` that every other
DAG reads through its settings.

Run it once before the other DAGs, and again after changing the template or a parameter.
The AlertEmail address receives a confirmation e-mail from SNS on AWS: confirm it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.providers.amazon.aws.operators.cloud_formation import (
    CloudFormationCreateStackOperator,
)
from airflow.providers.amazon.aws.sensors.cloud_formation import CloudFormationCreateStackSensor
from airflow.sdk import DAG, Param, TriggerRule, chain, task

from ml_workflow.dag_defaults import DEFAULT_ARGS, PROJECT_TAG
from ml_workflow.settings import settings_from_env

_s = settings_from_env()

with DAG(
    dag_id="infra_setup",
    description="Create or update the CloudFormation stack and publish its outputs",
    schedule=None,
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[PROJECT_TAG, "infrastructure", "cloudformation"],
    doc_md=__doc__,
    params={
        "stack_name": Param(_s.stack_name, type="string", title="Stack name",
                            pattern="^[A-Za-z][A-Za-z0-9-]{0,127}$"),
        "bucket_name": Param(_s.bucket, type="string", title="Data bucket",
                             pattern="^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
        "endpoint_name": Param(_s.endpoint_name, type="string", title="Endpoint",
                               description="The only endpoint the Lambda role may invoke",
                               pattern="^[a-z0-9](-*[a-z0-9]){0,62}$"),
        "alert_email": Param(_s.alert_email, type="string", format="idn-email",
                             title="Alert e-mail", description="Receives the SNS alerts"),
    },
) as dag:

    @task(multiple_outputs=True)
    def plan(params=None) -> dict:
        from ml_workflow.infra_tasks import plan_stack

        return plan_stack(params)

    @task.branch
    def create_or_update(action: str) -> str:
        return "create_stack" if action == "create" else "update_stack"

    @task
    def update_stack(stack_name: str, request: dict) -> dict:
        from ml_workflow.infra_tasks import update_stack as update

        return update({"stack_name": stack_name, "request": request})

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def publish_outputs(stack_name: str) -> dict:
        from ml_workflow.infra_tasks import publish_outputs as publish

        return publish(stack_name)

    planned = plan()
    create_stack = CloudFormationCreateStackOperator(
        task_id="create_stack",
        stack_name=planned["stack_name"],
        cloudformation_parameters=planned["request"],
        aws_conn_id=_s.aws_conn_id,
    )
    wait_for_stack_create = CloudFormationCreateStackSensor(
        task_id="wait_for_stack_create",
        stack_name=planned["stack_name"],
        aws_conn_id=_s.aws_conn_id,
        poke_interval=_s.poll_interval_s,
        timeout=1800,
    )
    updated = update_stack(planned["stack_name"], planned["request"])
    published = publish_outputs(planned["stack_name"])

    chain(
        # setup: read the template, check the parameters, find the stack's state
        planned,
        create_or_update(planned["action"]),
        # body: create (first time) or update it, and wait for it
        [create_stack, updated],
    )
    chain(create_stack, wait_for_stack_create)
    # last: the outputs become the settings of every other DAG
    chain([wait_for_stack_create, updated], published)
