"""Task bodies of ``infra_setup`` (create or update the CloudFormation stack in
``include/cloudformation/stack.yaml``, then publish its outputs as the Airflow Variables
``ml_workflow_<setting>``) and of ``teardown`` (delete what the workflow created on AWS:
endpoint, endpoint configs, models, Lambdas, state machine and, on request, the stack).

Every deletion treats "not found" as done, so a teardown can run any number of times;
``verify_teardown`` turns any other failure into a failed run. The waits and creates that
the provider has operators for are in the DAG files; here is what it has none for.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerDeleteModelOperator
from airflow.sdk.exceptions import AirflowFailException
from botocore.exceptions import ClientError, WaiterError

from ml_workflow import names, registry, s3_layout
from ml_workflow.dag_defaults import PROJECT_TAG
from ml_workflow.sagemaker_requests import ALGORITHM
from ml_workflow.settings import Settings, load_settings

log = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "cloudformation" / "stack.yaml"
CAPABILITIES = ["CAPABILITY_NAMED_IAM"]  # the roles have fixed names (<project>-sagemaker...)
STACK_DEADLINE_S = 1800
ENDPOINT_DELETE_DEADLINE_S = 900

# Stack output → the setting (Airflow Variable ml_workflow_<setting>) it feeds.
OUTPUT_SETTINGS = {
    "BucketName": "bucket",
    "EndpointName": "endpoint_name",
    "SageMakerRoleArn": "sagemaker_role_arn",
    "LambdaRoleArn": "lambda_role_arn",
    "StepFunctionsRoleArn": "stepfunctions_role_arn",
    "AlertTopicName": "sns_topic_name",
    "AlertTopicArn": "sns_topic_arn",
}
# States from which update_stack is allowed.
UPDATABLE = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE",
             "IMPORT_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"}
FAILED_STATES = {"failed", "upstream_failed"}


# --------------------------------------------------------------------------- pure helpers

class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, !GetAtt, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(text: str) -> dict:
    return yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def key_prefix(s: Settings) -> str:
    """The stack's KeyPrefix: the settings' prefix, empty or ending in '/'."""
    p = s.key()
    return f"{p}/" if p else ""


def stack_parameters(s: Settings, params: dict) -> dict[str, str]:
    """The stack's parameter values: the run's params, else the settings."""
    return {
        "ProjectName": names.PROJECT,
        "BucketName": params.get("bucket_name") or s.bucket,
        "KeyPrefix": key_prefix(s),
        "EndpointName": params.get("endpoint_name") or s.endpoint_name,
        "AlertEmail": params.get("alert_email") or s.alert_email,
    }


def check_parameters(template: dict, values: dict[str, str]) -> None:
    """Refuse values CloudFormation would refuse, before anything is sent, naming each."""
    declared = template.get("Parameters", {})
    problems = [f"{k}: the template has no such parameter" for k in values if k not in declared]
    for name, spec in declared.items():
        value = values.get(name, spec.get("Default"))
        if value is None:
            problems.append(f"{name}: required")
            continue
        pattern = spec.get("AllowedPattern")
        if pattern and not re.fullmatch(pattern, str(value)):
            problems.append(f"{name}={value!r} does not match {pattern}")
        if "AllowedValues" in spec and value not in spec["AllowedValues"]:
            problems.append(f"{name}={value!r} is not one of {spec['AllowedValues']}")
    if problems:
        raise AirflowFailException("stack parameters refused: " + "; ".join(problems))


def stack_request(stack_name: str, template_body: str, values: dict[str, str]) -> dict:
    """The create_stack/update_stack arguments."""
    return {
        "StackName": stack_name,
        "TemplateBody": template_body,
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
        "Capabilities": CAPABILITIES,
        "Tags": [{"Key": "project", "Value": PROJECT_TAG}],
    }


def settings_from_outputs(outputs: list[dict]) -> dict[str, str]:
    """{setting: value} for every stack output that feeds a setting."""
    by_key = {o["OutputKey"]: o["OutputValue"] for o in outputs}
    missing = sorted(set(OUTPUT_SETTINGS) - set(by_key))
    if missing:
        raise AirflowFailException(f"the stack has no output(s) {missing}: is it this "
                                   "project's template?")
    return {setting: by_key[key] for key, setting in OUTPUT_SETTINGS.items()}


def is_not_found(exc: ClientError) -> bool:
    """The error says the thing is already gone (each service spells that differently)."""
    err = exc.response.get("Error", {})
    code, message = err.get("Code", ""), err.get("Message", "")
    if code in {"ResourceNotFoundException", "StateMachineDoesNotExist", "NoSuchBucket",
                "NoSuchKey", "NotFound", "404", "NoSuchEntity"}:
        return True
    # SageMaker and CloudFormation answer a missing name with a validation error.
    return code in {"", "ValidationException", "ValidationError"} and bool(
        re.search(r"Could not find|does not exist", message, re.IGNORECASE))


def failed_tasks(task_states: dict[str, Any], watched: list[str]) -> dict[str, str]:
    """Those of the watched tasks (mapped ones as <task>_<index>) that failed."""
    out = {}
    for key, state in task_states.items():
        base = re.sub(r"_\d+$", "", key)
        if (key in watched or base in watched) and str(state) in FAILED_STATES:
            out[key] = str(state)
    return out


# --------------------------------------------------------------------------- AWS helpers

def _client(s: Settings, service: str):
    return AwsBaseHook(aws_conn_id=s.aws_conn_id, client_type=service).get_conn()


def _stack(cf, name: str) -> dict | None:
    try:
        return cf.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def _failure_reasons(cf, name: str, limit: int = 5) -> list[str]:
    try:
        events = cf.describe_stack_events(StackName=name)["StackEvents"]
    except ClientError:
        return []
    return [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}" for e in events
            if e["ResourceStatus"].endswith("FAILED")][:limit]


def _waiter_config(s: Settings, deadline_s: int) -> dict:
    delay = max(1, s.poll_interval_s)
    return {"Delay": delay, "MaxAttempts": max(1, math.ceil(deadline_s / delay))}


# --------------------------------------------------------------------------- infra_setup

def plan_stack(params: dict) -> dict:
    """Create or update? A stack left in ROLLBACK_COMPLETE by a failed first create holds
    no resources and cannot be updated: it is deleted so that it can be created again."""
    s = load_settings()
    stack_name = params.get("stack_name") or s.stack_name
    body = TEMPLATE_PATH.read_text()
    values = stack_parameters(s, params)
    check_parameters(load_template(body), values)
    cf = _client(s, "cloudformation")
    stack = _stack(cf, stack_name)
    status = stack["StackStatus"] if stack else None
    if status == "ROLLBACK_COMPLETE":
        log.warning("stack %s is ROLLBACK_COMPLETE (its first create failed: %s); deleting "
                    "it to create it again", stack_name, _failure_reasons(cf, stack_name))
        cf.delete_stack(StackName=stack_name)
        cf.get_waiter("stack_delete_complete").wait(
            StackName=stack["StackId"], WaiterConfig=_waiter_config(s, STACK_DEADLINE_S))
        status = None
    if status is None:
        action = "create"
    elif status in UPDATABLE:
        action = "update"
    else:
        raise AirflowFailException(
            f"stack {stack_name} is {status}: wait for the operation in progress to end, or "
            f"repair it (reasons: {_failure_reasons(cf, stack_name)}), then run again")
    log.info("stack %s (%s): %s with %s", stack_name, status or "absent", action,
             {k: v for k, v in values.items() if k != "AlertEmail"})
    return {"stack_name": stack_name, "action": action,
            "request": stack_request(stack_name, body, values)}


def update_stack(plan: dict) -> dict:
    """update_stack, then wait; "No updates are to be performed" is a success."""
    s = load_settings()
    cf = _client(s, "cloudformation")
    name = plan["stack_name"]
    try:
        cf.update_stack(**plan["request"])
    except ClientError as exc:
        if "No updates are to be performed" in str(exc):
            log.info("stack %s is already up to date", name)
            return {"stack_name": name, "updated": False}
        raise
    try:
        cf.get_waiter("stack_update_complete").wait(
            StackName=name, WaiterConfig=_waiter_config(s, STACK_DEADLINE_S))
    except WaiterError as exc:
        stack = _stack(cf, name) or {}
        raise AirflowFailException(
            f"update of stack {name} ended {stack.get('StackStatus')}: "
            f"{_failure_reasons(cf, name) or exc}") from None
    log.info("stack %s updated", name)
    return {"stack_name": name, "updated": True}


def publish_outputs(stack_name: str) -> dict[str, str]:
    """Write the stack's outputs as Airflow Variables ml_workflow_<setting>."""
    from airflow.sdk import Variable

    from ml_workflow.settings import variable_name

    s = load_settings()
    cf = _client(s, "cloudformation")
    stack = _stack(cf, stack_name)
    status = stack["StackStatus"] if stack else "absent"
    # UPDATE_ROLLBACK_COMPLETE here: an update found nothing to change on a stack whose
    # earlier update was rolled back; its outputs are what this run asked for.
    if status not in UPDATABLE:
        raise AirflowFailException(f"stack {stack_name} is {status}, not complete: "
                                   f"{_failure_reasons(cf, stack_name)}")
    values = settings_from_outputs(stack.get("Outputs", []))
    for setting, value in values.items():
        Variable.set(variable_name(setting), value,
                     description=f"output of CloudFormation stack {stack_name} (infra_setup)")
    log.info("Airflow Variables written from stack %s: %s", stack_name, values)
    return values


# --------------------------------------------------------------------------- teardown

def _exists(call, **kwargs) -> bool:
    try:
        call(**kwargs)
        return True
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise


def _owned_by_name(sm, s: Settings) -> tuple[set[str], set[str]]:
    """Models/configs named like the project's (the algorithm's name first) whose data is
    in the project's bucket: orphans of failed deployments the registry never saw."""
    models_uri = s3_layout.model_output_uri(s)
    capture_uri = s3_layout.data_capture_uri(s)
    models, configs = set(), set()
    for page in sm.get_paginator("list_models").paginate(NameContains=ALGORITHM):
        for m in page["Models"]:
            try:
                d = sm.describe_model(ModelName=m["ModelName"])
            except ClientError as exc:
                if is_not_found(exc):
                    continue
                raise
            urls = [c.get("ModelDataUrl", "") for c in
                    [d.get("PrimaryContainer", {}), *d.get("Containers", [])]]
            if any(u.startswith(models_uri) for u in urls):
                models.add(m["ModelName"])
    for page in sm.get_paginator("list_endpoint_configs").paginate(NameContains=ALGORITHM):
        for c in page["EndpointConfigs"]:
            try:
                d = sm.describe_endpoint_config(EndpointConfigName=c["EndpointConfigName"])
            except ClientError as exc:
                if is_not_found(exc):
                    continue
                raise
            dest = (d.get("DataCaptureConfig") or {}).get("DestinationS3Uri", "")
            if dest.rstrip("/") == capture_uri.rstrip("/") or any(
                    v.get("ModelName") in models for v in d.get("ProductionVariants", [])):
                configs.add(c["EndpointConfigName"])
    return models, configs


def discover(params: dict) -> dict:
    """The SageMaker resources of the endpoint: its current config and models, those the
    registry names (serving and history), and orphans found by name and bucket. Only
    those that still exist are returned."""
    s = load_settings()
    endpoint = params.get("endpoint_name") or s.endpoint_name
    sm = _client(s, "sagemaker")
    models: set[str] = set()
    configs: set[str] = set()
    try:
        current = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        configs.add(current)
        variants = sm.describe_endpoint_config(EndpointConfigName=current)
        models |= {v["ModelName"] for v in variants.get("ProductionVariants", [])}
    except ClientError as exc:
        if not is_not_found(exc):
            raise
    s3 = _client(s, "s3")
    try:
        doc = registry.read(s3, s.bucket, s3_layout.registry_key(s, endpoint))
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        doc = {"serving": None, "history": []}
    for entry in [doc.get("serving") or {}, *doc.get("history", [])]:
        if entry.get("model_name"):
            models.add(entry["model_name"])
        if entry.get("endpoint_config"):
            configs.add(entry["endpoint_config"])
    orphan_models, orphan_configs = _owned_by_name(sm, s)
    models |= orphan_models
    configs |= orphan_configs
    models = {m for m in models if _exists(sm.describe_model, ModelName=m)}
    configs = {c for c in configs
               if _exists(sm.describe_endpoint_config, EndpointConfigName=c)}
    log.info("endpoint %s: endpoint configs %s, models %s", endpoint, sorted(configs),
             sorted(models))
    return {"endpoint": endpoint, "endpoint_configs": sorted(configs),
            "models": [{"ModelName": m} for m in sorted(models)]}


def delete_endpoint(endpoint: str) -> str:
    """Delete the endpoint and wait until it is gone."""
    s = load_settings()
    sm = _client(s, "sagemaker")
    try:
        sm.delete_endpoint(EndpointName=endpoint)
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        log.info("endpoint %s: already gone", endpoint)
        return "already gone"
    try:
        sm.get_waiter("endpoint_deleted").wait(
            EndpointName=endpoint, WaiterConfig=_waiter_config(s, ENDPOINT_DELETE_DEADLINE_S))
    except WaiterError as exc:
        raise RuntimeError(f"endpoint {endpoint} still exists after deletion: {exc}") from None
    log.info("endpoint %s deleted", endpoint)
    return "deleted"


def retire_registry(endpoint: str) -> str:
    """The registry no longer names a serving model (its history stays): otherwise the
    next train_deploy would gate new models against one that no longer exists."""
    s = load_settings()
    s3 = _client(s, "s3")
    key = s3_layout.registry_key(s, endpoint)
    try:
        doc = registry.read(s3, s.bucket, key)
    except ClientError as exc:
        if is_not_found(exc):
            return "no registry"
        raise
    if not doc.get("serving"):
        return "nothing serving"
    retired = {**doc["serving"], "retired_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    history = [retired if h == doc["serving"] else h for h in doc.get("history", [])]
    registry.write(s3, s.bucket, key, {**doc, "serving": None, "history": history})
    log.info("registry %s: %s retired", key, retired.get("model_name"))
    return "retired"


def delete_endpoint_configs(config_names: list[str]) -> dict[str, list[str]]:
    s = load_settings()
    sm = _client(s, "sagemaker")
    return _delete_each(config_names, lambda n: sm.delete_endpoint_config(
        EndpointConfigName=n), "endpoint config")


def delete_lambdas() -> dict[str, list[str]]:
    s = load_settings()
    aws_lambda = _client(s, "lambda")
    return _delete_each(list(names.lambda_function_names(s).values()),
                        lambda n: aws_lambda.delete_function(FunctionName=n), "Lambda")


def delete_state_machine() -> dict[str, list[str]]:
    s = load_settings()
    sfn = _client(s, "stepfunctions")
    name = names.state_machine_name(s)
    arns = [m["stateMachineArn"]
            for page in sfn.get_paginator("list_state_machines").paginate()
            for m in page["stateMachines"] if m["name"] == name]
    if not arns:
        log.info("state machine %s: already gone", name)
        return {"deleted": [], "already_gone": [name]}
    return _delete_each(arns, lambda arn: sfn.delete_state_machine(stateMachineArn=arn),
                        "state machine")


def _delete_each(items: list[str], delete, kind: str) -> dict[str, list[str]]:
    """Delete every item even when one fails; fail at the end naming each failure."""
    done: dict[str, list[str]] = {"deleted": [], "already_gone": []}
    failures: dict[str, str] = {}
    for item in items:
        try:
            delete(item)
            done["deleted"].append(item)
        except ClientError as exc:
            if is_not_found(exc):
                done["already_gone"].append(item)
            else:
                failures[item] = str(exc)
    log.info("%s: deleted %s; already gone %s", kind, done["deleted"], done["already_gone"])
    if failures:
        raise RuntimeError(f"could not delete {kind}(s): {failures}")
    return done


class SageMakerDeleteModelIfExistsOperator(SageMakerDeleteModelOperator):
    """The provider's SageMakerDeleteModelOperator, with a model that is already gone
    counted as deleted (so a teardown can run twice)."""

    def execute(self, context):
        try:
            return super().execute(context)
        except ClientError as exc:
            if not is_not_found(exc):
                raise
            self.log.info("model %s: already gone", self.config["ModelName"])


def stack_bucket(stack_name: str) -> str | None:
    """The bucket the stack owns (None when there is no such stack)."""
    s = load_settings()
    cf = _client(s, "cloudformation")
    try:
        res = cf.describe_stack_resource(StackName=stack_name, LogicalResourceId="DataBucket")
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    return res["StackResourceDetail"].get("PhysicalResourceId")


def empty_bucket(stack_name: str) -> dict:
    """Delete every object version and delete marker of the stack's bucket: CloudFormation
    cannot delete a bucket that holds anything. Only the bucket the stack owns is touched."""
    s = load_settings()
    bucket = stack_bucket(stack_name)
    if not bucket:
        log.info("no stack %s (or it has no bucket): nothing to empty", stack_name)
        return {"bucket": None, "deleted": 0}
    s3 = _client(s, "s3")
    deleted = 0
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            batch = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                     for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]
            for i in range(0, len(batch), 1000):
                answer = s3.delete_objects(Bucket=bucket,
                                           Delete={"Objects": batch[i:i + 1000], "Quiet": True})
                if answer.get("Errors"):
                    raise RuntimeError(f"could not delete from s3://{bucket}: "
                                       f"{answer['Errors'][:5]}")
                deleted += len(batch[i:i + 1000])
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        log.info("bucket %s: already gone", bucket)
    log.info("bucket %s emptied: %d object versions and delete markers removed", bucket, deleted)
    return {"bucket": bucket, "deleted": deleted}


def verify_teardown(task_states: dict[str, Any], watched: list[str]) -> dict:
    """Fail the run when a deletion failed (deletions succeed on "not found")."""
    failed = failed_tasks(task_states, watched)
    if failed:
        raise AirflowFailException(f"teardown incomplete: {failed}; see those tasks' logs, "
                                   "fix the cause and run teardown again (it is idempotent)")
    log.info("teardown complete: %s", {k: str(v) for k, v in sorted(task_states.items())})
    return {k: str(v) for k, v in task_states.items()}
