"""teardown: delete what the workflow created on AWS, so that nothing keeps costing money:
the SageMaker endpoint, its endpoint configs and models (the current ones, those the
registry names, and orphans named like the project's whose data is in its bucket), the
inference Lambdas and the state machine; with ``delete_stack`` also the CloudFormation
stack, after emptying its bucket (every object version: CloudFormation cannot delete a
bucket that holds anything). The data is gone for good then.

Every deletion runs even when another one failed, and one that finds its resource already
gone counts as done: run it as often as needed. The last task fails the run if anything
could not be deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.providers.amazon.aws.operators.cloud_formation import (
    CloudFormationDeleteStackOperator,
)
from airflow.providers.amazon.aws.sensors.cloud_formation import CloudFormationDeleteStackSensor
from airflow.sdk import DAG, Param, TriggerRule, chain, task

from ml_workflow.dag_defaults import DEFAULT_ARGS, PROJECT_TAG
from ml_workflow.infra_tasks import SageMakerDeleteModelIfExistsOperator
from ml_workflow.settings import settings_from_env

_s = settings_from_env()
ALL_DONE = TriggerRule.ALL_DONE

with DAG(
    dag_id="teardown",
    description="Delete the endpoint, models, Lambdas, state machine and optionally the stack",
    schedule=None,
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[PROJECT_TAG, "infrastructure", "teardown"],
    doc_md=__doc__,
    params={
        "endpoint_name": Param(_s.endpoint_name, type="string", title="Endpoint",
                               pattern="^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"),
        "delete_stack": Param(False, type="boolean", title="Also delete the stack",
                              description="Empties the bucket (all versions) and deletes the "
                                          "bucket, the IAM roles and the SNS topic"),
        "stack_name": Param(_s.stack_name, type="string", title="Stack name",
                            pattern="^[A-Za-z][A-Za-z0-9-]{0,127}$"),
    },
) as dag:

    @task
    def find_endpoint_configs(params=None) -> list[str]:
        from ml_workflow.infra_tasks import discover

        return discover(params)["endpoint_configs"]

    @task
    def find_models(params=None) -> list[dict]:
        from ml_workflow.infra_tasks import discover

        return discover(params)["models"]

    @task(trigger_rule=ALL_DONE)
    def delete_endpoint(params=None) -> str:
        from ml_workflow.infra_tasks import delete_endpoint as delete

        return delete(params["endpoint_name"])

    @task(trigger_rule=ALL_DONE)
    def retire_registry(params=None) -> str:
        from ml_workflow.infra_tasks import retire_registry as retire

        return retire(params["endpoint_name"])

    @task(trigger_rule=ALL_DONE)
    def delete_endpoint_configs(config_names: list[str]) -> dict:
        from ml_workflow.infra_tasks import delete_endpoint_configs as delete

        return delete(config_names)

    @task(trigger_rule=ALL_DONE)
    def delete_state_machine() -> dict:
        from ml_workflow.infra_tasks import delete_state_machine as delete

        return delete()

    @task(trigger_rule=ALL_DONE)
    def delete_lambdas() -> dict:
        from ml_workflow.infra_tasks import delete_lambdas as delete

        return delete()

    @task.branch(trigger_rule=ALL_DONE)
    def stack_requested(params=None) -> str | None:
        return "empty_bucket" if params["delete_stack"] else None

    @task
    def empty_bucket(params=None) -> dict:
        from ml_workflow.infra_tasks import empty_bucket as empty

        return empty(params["stack_name"])

    @task(trigger_rule=ALL_DONE)
    def verify(ti=None, run_id=None) -> dict:
        from ml_workflow.infra_tasks import verify_teardown

        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
        watched = [t for t in ti.task.dag.task_ids if t != ti.task_id]
        return verify_teardown(states, watched)

    configs = find_endpoint_configs()
    models = find_models()
    endpoint_deleted = delete_endpoint()
    configs_deleted = delete_endpoint_configs(configs)
    models_deleted = SageMakerDeleteModelIfExistsOperator.partial(
        task_id="delete_models", aws_conn_id=_s.aws_conn_id, trigger_rule=ALL_DONE,
    ).expand(config=models)
    machine_deleted = delete_state_machine()
    lambdas_deleted = delete_lambdas()
    stack_choice = stack_requested()
    emptied = empty_bucket()
    delete_stack = CloudFormationDeleteStackOperator(
        task_id="delete_stack", stack_name="{{ params.stack_name }}",
        aws_conn_id=_s.aws_conn_id,
        # runs after a failed empty_bucket too (it still deletes the roles and the topic)
        # but not when the branch skipped it
        trigger_rule=TriggerRule.NONE_SKIPPED,
    )
    wait_for_stack_delete = CloudFormationDeleteStackSensor(
        task_id="wait_for_stack_delete", stack_name="{{ params.stack_name }}",
        aws_conn_id=_s.aws_conn_id, poke_interval=_s.poll_interval_s, timeout=1800,
    )
    checked = verify()

    chain(
        # setup: find the project's SageMaker resources before anything is deleted
        [configs, models],
        # body: every deletion, in dependency order, each one whatever came before it
        endpoint_deleted,
    )
    chain(endpoint_deleted, retire_registry(), configs_deleted, models_deleted, stack_choice)
    chain(machine_deleted, lambdas_deleted, stack_choice)
    chain(stack_choice, emptied, delete_stack, wait_for_stack_delete)
    # teardown: fail the run if anything could not be deleted
    chain([wait_for_stack_delete, models_deleted, lambdas_deleted], checked)
