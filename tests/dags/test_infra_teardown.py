"""infra_setup and teardown end to end with dag.test() against a real localaws: the stack
is created, then updated in place, and its outputs become Airflow Variables; teardown
deletes what the workflow created, twice in a row, reports a deletion that really failed,
and on request empties the versioned bucket and deletes the stack."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from datetime import UTC, datetime

import boto3
import pytest

from ml_workflow import infra_tasks, names
from ml_workflow.settings import Settings, variable_name

pytestmark = pytest.mark.usefixtures("airflow_db")

IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
ROLE = "arn:aws:iam::123456789012:role/ml-workflow-sagemaker"
WRITTEN = [variable_name(s) for s in infra_tasks.OUTPUT_SETTINGS.values()]


def _dag(file: str, dag_id: str, retries: int | None = None):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=f"dags/{file}")
    assert not bag.import_errors
    dag = bag.dags[dag_id]
    if retries is not None:  # a failure path need not wait for the retries
        for t in dag.tasks:
            t.retries = retries
    return dag


def _run(dag, conf: dict):
    return dag.test(logical_date=datetime.now(UTC), run_conf=conf)


def _states(run) -> dict:
    return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}": ti.state
            for ti in run.get_task_instances()}


def _variable(key: str) -> str | None:
    from airflow.models.variable import Variable

    return Variable.get(key, default_var=None)


@pytest.fixture
def variables():
    """infra_setup writes Variables that override every other test's environment: remove
    them afterwards."""
    from airflow.models.variable import Variable

    yield
    for key in WRITTEN:
        Variable.delete(key)


@pytest.fixture
def env(monkeypatch, localaws):
    tag = uuid.uuid4().hex[:8]
    monkeypatch.setenv("ML_WORKFLOW_POLL_INTERVAL_S", "1")
    return tag


def _delete_stack(name: str) -> None:
    cf = boto3.client("cloudformation")
    try:
        bucket = cf.describe_stack_resource(StackName=name, LogicalResourceId="DataBucket")[
            "StackResourceDetail"]["PhysicalResourceId"]
    except cf.exceptions.ClientError:
        return
    s3 = boto3.client("s3")
    try:
        versions = s3.list_object_versions(Bucket=bucket)
        for v in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
            s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    except s3.exceptions.ClientError:
        pass
    cf.delete_stack(StackName=name)
    cf.get_waiter("stack_delete_complete").wait(
        StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})


@pytest.fixture
def stack(env, variables):
    """A fresh stack name and bucket; the stack is deleted afterwards (the role and topic
    names are the project's, so only one such stack can exist at a time)."""
    name, bucket = f"mlw-test-{env}", f"mlw-test-{env}"
    yield name, bucket
    _delete_stack(name)


def _policies(iam, role: str) -> list[dict]:
    docs = [iam.get_role_policy(RoleName=role, PolicyName=p)["PolicyDocument"]
            for p in iam.list_role_policies(RoleName=role)["PolicyNames"]]
    return [st for d in docs for st in d["Statement"]]


def _grants(statements: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for st in statements:
        assert st["Effect"] == "Allow"
        for action in [st["Action"]] if isinstance(st["Action"], str) else st["Action"]:
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            out.setdefault(action, []).extend(resources)
    return out


def test_infra_setup_creates_then_updates_the_stack_and_writes_the_variables(stack):
    name, bucket = stack
    dag = _dag("infra_setup.py", "infra_setup")
    conf = {"stack_name": name, "bucket_name": bucket, "alert_email": "owner@example.com"}
    run = _run(dag, conf)
    states = _states(run)
    assert run.state == "success", states
    assert states["create_stack"] == "success" and states["update_stack"] == "skipped"

    s3 = boto3.client("s3")
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
        "Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert pab == {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                   "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    (deny,) = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}}
    assert sorted(deny["Resource"]) == [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]

    iam = boto3.client("iam")
    p = names.PROJECT
    grants = {role: _grants(_policies(iam, f"{p}-{role}"))
              for role in ("sagemaker", "lambda", "states")}
    for role in grants:
        assert iam.list_attached_role_policies(RoleName=f"{p}-{role}")[
            "AttachedPolicies"] == []
    assert sorted(grants["sagemaker"]["s3:GetObject"]) == [
        f"arn:aws:s3:::{bucket}/datasets/*", f"arn:aws:s3:::{bucket}/models/*"]
    assert grants["lambda"]["sagemaker:InvokeEndpoint"] == [
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/cifar-classifier"]
    assert sorted(grants["states"]["lambda:InvokeFunction"]) == sorted(
        f"arn:aws:lambda:us-east-1:123456789012:function:{fn}{q}"
        for fn in names.lambda_function_names(Settings()).values() for q in ("", ":*"))
    topic_arn = f"arn:aws:sns:us-east-1:123456789012:{p}-alerts"
    assert grants["states"]["sns:Publish"] == [topic_arn]

    sns = boto3.client("sns")
    subs = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", "owner@example.com")]

    outputs = {o["OutputKey"]: o["OutputValue"] for o in boto3.client(
        "cloudformation").describe_stacks(StackName=name)["Stacks"][0]["Outputs"]}
    assert outputs["BucketName"] == bucket and outputs["AlertTopicArn"] == topic_arn
    for output, setting in infra_tasks.OUTPUT_SETTINGS.items():
        assert _variable(variable_name(setting)) == outputs[output], setting
    assert _variable("ml_workflow_sagemaker_role_arn") == iam.get_role(
        RoleName=f"{p}-sagemaker")["Role"]["Arn"]
    assert _variable("ml_workflow_sns_topic_name") == f"{p}-alerts"

    # A second run updates the stack in place: a new address replaces the subscription.
    run = _run(dag, {**conf, "alert_email": "new-owner@example.com"})
    states = _states(run)
    assert run.state == "success", states
    assert states["update_stack"] == "success"
    assert states["create_stack"] == states["wait_for_stack_create"] == "skipped"
    subs = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    assert [s["Endpoint"] for s in subs] == ["new-owner@example.com"]
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert _variable("ml_workflow_bucket") == bucket


def test_infra_setup_refuses_bad_parameters_before_calling_aws(env):
    from airflow.sdk.exceptions import ParamValidationError

    dag = _dag("infra_setup.py", "infra_setup", retries=0)
    conf = {"stack_name": f"mlw-bad-{env}", "bucket_name": f"mlw-bad-{env}"}
    with pytest.raises(ParamValidationError, match="alert_email"):  # the trigger form
        _run(dag, {**conf, "alert_email": "not-an-address"})
    # A valid address that the template's pattern refuses: plan names it, nothing is sent.
    run = _run(dag, {**conf, "alert_email": "owner@localhost"})
    assert run.state == "failed"
    assert _states(run)["plan"] == "failed"
    cf = boto3.client("cloudformation")
    assert all(s["StackName"] != f"mlw-bad-{env}" for s in cf.list_stacks()["StackSummaries"])


# --------------------------------------------------------------------------- teardown

def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buf.getvalue()


def _test_role(service: str) -> str:
    """A role of this test's own (moto checks that a function's role exists)."""
    iam, name = boto3.client("iam"), f"teardown-test-{service}"
    try:
        return iam.get_role(RoleName=name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        return iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "sts:AssumeRole",
                "Principal": {"Service": f"{service}.amazonaws.com"}}]}))["Role"]["Arn"]


def _create_workflow_functions() -> None:
    aws_lambda, sfn = boto3.client("lambda"), boto3.client("stepfunctions")
    for fn in names.lambda_function_names(Settings()).values():
        try:
            aws_lambda.delete_function(FunctionName=fn)
        except aws_lambda.exceptions.ResourceNotFoundException:
            pass
        aws_lambda.create_function(
            FunctionName=fn, Runtime="python3.11", Handler="app.handler",
            Role=_test_role("lambda"),
            Code={"ZipFile": _zip()})
    for m in sfn.list_state_machines()["stateMachines"]:
        if m["name"] == names.state_machine_name(Settings()):
            sfn.delete_state_machine(stateMachineArn=m["stateMachineArn"])
    sfn.create_state_machine(
        name=names.state_machine_name(Settings()),
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn=_test_role("states"))


def _workflow_gone() -> bool:
    fns = {f["FunctionName"] for f in boto3.client("lambda").list_functions()["Functions"]}
    machines = {m["name"] for m in boto3.client("stepfunctions").list_state_machines()[
        "stateMachines"]}
    return (not fns & set(names.lambda_function_names(Settings()).values())
            and names.state_machine_name(Settings()) not in machines)


@pytest.fixture
def deployed(env, monkeypatch):
    """An endpoint with its config and model, an older model the registry remembers, an
    orphan of a failed deployment, a stranger's model, the Lambdas and the state machine."""
    bucket, other = f"td-{env}", f"td-other-{env}"
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    s3.create_bucket(Bucket=bucket)
    endpoint = f"td-endpoint-{env}"
    monkeypatch.setenv("ML_WORKFLOW_BUCKET", bucket)
    monkeypatch.setenv("ML_WORKFLOW_ENDPOINT_NAME", endpoint)

    def model(name: str, data_bucket: str, capture_bucket: str) -> str:
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": IMAGE, "ModelDataUrl": f"s3://{data_bucket}/models/{name}/model.tar.gz"})
        sm.create_endpoint_config(
            EndpointConfigName=f"{name}-config",
            ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name,
                                 "InitialInstanceCount": 1, "InstanceType": "ml.m5.xlarge"}],
            DataCaptureConfig={"EnableCapture": True, "InitialSamplingPercentage": 100,
                               "DestinationS3Uri": f"s3://{capture_bucket}/data_capture",
                               "CaptureOptions": [{"CaptureMode": "Input"}]})
        return name

    serving = model(f"image-classification-{env}-serving", bucket, bucket)
    old = model(f"image-classification-{env}-old", bucket, bucket)
    orphan = model(f"image-classification-{env}-orphan", bucket, bucket)
    stranger = model(f"image-classification-{env}-stranger", other, other)
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{serving}-config")
    entry = {"model_name": serving, "endpoint_config": f"{serving}-config",
             "training_job": serving}
    s3.put_object(Bucket=bucket, Key=f"registry/{endpoint}.json", Body=json.dumps({
        "serving": entry, "history": [entry, {"model_name": old,
                                              "endpoint_config": f"{old}-config"}]}))
    _create_workflow_functions()
    yield {"bucket": bucket, "endpoint": endpoint, "ours": [serving, old, orphan],
           "stranger": stranger}
    for name in (stranger,):
        for call, arg, value in ((sm.delete_endpoint_config, "EndpointConfigName",
                                  f"{name}-config"), (sm.delete_model, "ModelName", name)):
            try:
                call(**{arg: value})
            except sm.exceptions.ClientError:
                pass


def _models() -> set[str]:
    return {m["ModelName"] for m in boto3.client("sagemaker").list_models(
        MaxResults=100)["Models"]}


def _configs() -> set[str]:
    return {c["EndpointConfigName"] for c in boto3.client("sagemaker").list_endpoint_configs(
        MaxResults=100)["EndpointConfigs"]}


def test_teardown_deletes_the_workflow_and_can_run_again(deployed):
    sm = boto3.client("sagemaker")
    dag = _dag("teardown.py", "teardown")
    run = _run(dag, {})
    states = _states(run)
    assert run.state == "success", states
    assert {states[f"delete_models_{i}"] for i in range(3)} == {"success"}
    assert states["empty_bucket"] == states["delete_stack"] == "skipped", states
    assert states["verify"] == "success", states

    with pytest.raises(sm.exceptions.ClientError, match="Could not find endpoint"):
        sm.describe_endpoint(EndpointName=deployed["endpoint"])
    assert not set(deployed["ours"]) & _models()
    assert not {f"{m}-config" for m in deployed["ours"]} & _configs()
    assert deployed["stranger"] in _models()  # its data is in another bucket
    assert f"{deployed['stranger']}-config" in _configs()
    assert _workflow_gone()
    doc = json.loads(boto3.client("s3").get_object(
        Bucket=deployed["bucket"], Key=f"registry/{deployed['endpoint']}.json")["Body"].read())
    assert doc["serving"] is None
    assert doc["history"][0]["model_name"] == deployed["ours"][0]
    assert "retired_at" in doc["history"][0]

    # Everything is gone already: the second run succeeds and finds nothing to delete.
    run = _run(dag, {})
    states = _states(run)
    assert run.state == "success", states
    assert states["delete_models"] == "skipped"  # mapped over no model
    assert states["verify"] == "success"
    assert deployed["stranger"] in _models()


def test_a_deletion_that_fails_for_another_reason_fails_the_run(env, monkeypatch):
    # An invalid bucket name makes every registry read fail (not a "not found").
    monkeypatch.setenv("ML_WORKFLOW_BUCKET", "not/a/bucket")
    monkeypatch.setenv("ML_WORKFLOW_ENDPOINT_NAME", f"td-none-{env}")
    _create_workflow_functions()
    run = _run(_dag("teardown.py", "teardown", retries=0), {})
    states = _states(run)
    assert run.state == "failed", states
    assert states["find_models"] == "failed" and states["retire_registry"] == "failed"
    # the other deletions still ran
    assert states["delete_lambdas"] == states["delete_state_machine"] == "success"
    assert _workflow_gone()
    assert states["verify"] == "failed"


def test_teardown_with_delete_stack_empties_the_versioned_bucket_and_deletes_it(stack):
    name, bucket = stack
    run = _run(_dag("infra_setup.py", "infra_setup"),
               {"stack_name": name, "bucket_name": bucket, "alert_email": "o@example.com"})
    assert run.state == "success", _states(run)
    s3 = boto3.client("s3")
    for body in (b"v1", b"v2"):  # the stack's TLS-only policy lets localaws' requests in
        s3.put_object(Bucket=bucket, Key="datasets/d/2026-11-27/_MANIFEST.json", Body=body)
    s3.put_object(Bucket=bucket, Key="reports/x.json", Body=b"{}")
    s3.delete_object(Bucket=bucket, Key="reports/x.json")  # leaves a delete marker
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == 3

    dag = _dag("teardown.py", "teardown")
    run = _run(dag, {"delete_stack": True, "stack_name": name})
    states = _states(run)
    assert run.state == "success", states
    assert run.get_task_instance("empty_bucket").xcom_pull(task_ids="empty_bucket") == {
        "bucket": bucket, "deleted": 4}
    cf = boto3.client("cloudformation")
    with pytest.raises(cf.exceptions.ClientError, match="does not exist"):
        cf.describe_stacks(StackName=name)
    assert bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    roles = {r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]}
    assert not roles & {f"{names.PROJECT}-{r}" for r in ("sagemaker", "lambda", "states")}

    run = _run(dag, {"delete_stack": True, "stack_name": name})
    assert run.state == "success", _states(run)
