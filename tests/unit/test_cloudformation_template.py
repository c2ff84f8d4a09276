"""The CloudFormation stack: cfn-lint clean, least privilege in every IAM policy, the bucket
locked down, names and outputs in step with the settings; and the pure helpers of
infra_tasks that build its parameters and read its outputs."""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import datetime
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException
from botocore.exceptions import ClientError
from cfnlint.api import lint_all
from cfnlint.decode import decode

from ml_workflow import infra_tasks, names
from ml_workflow.settings import Settings

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "include" / "cloudformation" / "stack.yaml"
TEXT = TEMPLATE_PATH.read_text()


@pytest.fixture(scope="module")
def template() -> dict:
    tpl, matches = decode(str(TEMPLATE_PATH))  # cfn-lint's own loader, not ours
    assert not matches, matches
    return tpl


def _statements(template: dict):
    """(resource, policy, statement) of every IAM policy document the stack grants."""
    for rid, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                for st in policy["PolicyDocument"]["Statement"]:
                    yield rid, policy["PolicyName"], st
        elif res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for st in props["PolicyDocument"]["Statement"]:
                yield rid, rid, st


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _grants(template: dict, role: str) -> dict[str, list]:
    """{action: [resources]} of a role's Allow statements."""
    out: dict[str, list] = {}
    for rid, _, st in _statements(template):
        if rid == role and st["Effect"] == "Allow":
            for action in _as_list(st["Action"]):
                out.setdefault(action, []).extend(_as_list(st["Resource"]))
    return out


def _sub(value) -> str:
    """The text of a !Sub (or a plain string)."""
    return value["Fn::Sub"] if isinstance(value, dict) and "Fn::Sub" in value else value


def test_the_template_passes_cfn_lint():
    problems = [m for m in lint_all(TEXT) if m.rule.id[0] in "EW"]
    assert problems == []


def test_no_wildcard_actions_and_no_star_resource_without_a_documented_reason(template):
    statements = list(_statements(template))
    assert len(statements) >= 8
    star_sids = []
    for rid, policy, st in statements:
        where = f"{rid}/{policy}/{st.get('Sid')}"
        assert st["Effect"] == "Allow", f"{where}: only grants belong in role policies"
        assert "NotAction" not in st and "NotResource" not in st, where
        for action in _as_list(st["Action"]):
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action), (
                f"{where}: action {action!r} has a wildcard or is malformed")
        if "*" in _as_list(st["Resource"]):
            assert st.get("Condition"), f"{where}: Resource '*' without a narrowing Condition"
            star_sids.append(st["Sid"])
    # Each Resource "*" is explained by a comment right above its statement.
    for sid in star_sids:
        above = TEXT[:TEXT.index(f"- Sid: {sid}")].rstrip().splitlines()[-3:]
        assert any('EXCEPTION Resource "*"' in line for line in above), sid
    assert star_sids == ["SageMakerMetrics"]  # cloudwatch:PutMetricData: AWS requires "*"


def test_no_managed_policies_and_trust_limited_to_one_service(template):
    services = {}
    for rid, res in template["Resources"].items():
        if res["Type"] != "AWS::IAM::Role":
            continue
        props = res["Properties"]
        assert "ManagedPolicyArns" not in props, f"{rid}: managed policies grant too much"
        (trust,) = props["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Action"] == "sts:AssumeRole"
        services[rid] = trust["Principal"]["Service"]
    assert services == {"SageMakerRole": "sagemaker.amazonaws.com",
                        "LambdaRole": "lambda.amazonaws.com",
                        "StepFunctionsRole": "states.amazonaws.com"}


def test_sagemaker_role_reads_datasets_writes_models_and_logs_under_aws_sagemaker(template):
    g = _grants(template, "SageMakerRole")
    assert sorted(g) == ["cloudwatch:PutMetricData", "logs:CreateLogGroup",
                         "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents",
                         "s3:GetObject", "s3:ListBucket", "s3:PutObject"]
    assert [_sub(r) for r in g["s3:GetObject"]] == [
        "${DataBucket.Arn}/${KeyPrefix}datasets/*", "${DataBucket.Arn}/${KeyPrefix}models/*"]
    assert [_sub(r) for r in g["s3:PutObject"]] == [
        "${DataBucket.Arn}/${KeyPrefix}models/*", "${DataBucket.Arn}/${KeyPrefix}data_capture/*"]
    assert g["s3:ListBucket"] == [{"Fn::GetAtt": ["DataBucket", "Arn"]}]
    for resource in g["logs:PutLogEvents"]:
        assert ":log-group:/aws/sagemaker/*" in _sub(resource)


def test_lambda_role_reads_images_invokes_only_the_endpoint_logs_only_its_functions(template):
    g = _grants(template, "LambdaRole")
    assert sorted(g) == ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                         "s3:GetObject", "sagemaker:InvokeEndpoint"]
    assert [_sub(r) for r in g["s3:GetObject"]] == [
        "${DataBucket.Arn}/${KeyPrefix}datasets/*", "${DataBucket.Arn}/${KeyPrefix}inference/*"]
    (endpoint,) = g["sagemaker:InvokeEndpoint"]
    assert _sub(endpoint).endswith(":endpoint/${EndpointName}")
    for resource in g["logs:PutLogEvents"]:
        assert ":log-group:/aws/lambda/${ProjectName}-*" in _sub(resource)


def test_step_functions_role_invokes_the_three_workflow_functions_and_publishes_alerts(template):
    g = _grants(template, "StepFunctionsRole")
    assert sorted(g) == ["lambda:InvokeFunction", "sns:Publish"]
    functions = {re.sub(r":\*$", "", _sub(r)).rsplit(":function:", 1)[1]
                 for r in g["lambda:InvokeFunction"]}
    # the same names the inference workflow deploys (ml_workflow.names)
    assert functions == {f"${{ProjectName}}-{role}" for role in names.LAMBDAS}
    assert g["sns:Publish"] == [{"Ref": "AlertTopic"}]


def test_bucket_is_encrypted_private_versioned_and_tls_only(template):
    props = template["Resources"]["DataBucket"]["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    policy = template["Resources"]["DataBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "DataBucket"}
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert [_sub(r) for r in deny["Resource"]] == [
        {"Fn::GetAtt": ["DataBucket", "Arn"]}, "${DataBucket.Arn}/*"]


def test_topic_has_an_email_subscription_to_the_alert_address(template):
    res = template["Resources"]
    assert _sub(res["AlertTopic"]["Properties"]["TopicName"]) == "${ProjectName}-alerts"
    sub = res["AlertEmailSubscription"]["Properties"]
    assert sub == {"TopicArn": {"Ref": "AlertTopic"}, "Protocol": "email",
                   "Endpoint": {"Ref": "AlertEmail"}}


def test_names_and_outputs_match_the_settings(template):
    defaults = Settings()
    params = template["Parameters"]
    assert set(params) == {"ProjectName", "BucketName", "KeyPrefix", "EndpointName",
                           "AlertEmail"}
    assert params["ProjectName"]["Default"] == names.PROJECT
    assert params["EndpointName"]["Default"] == defaults.endpoint_name
    project = names.PROJECT
    res = template["Resources"]
    assert _sub(res["AlertTopic"]["Properties"]["TopicName"]).replace(
        "${ProjectName}", project) == defaults.sns_topic_name
    for rid, setting in (("SageMakerRole", "sagemaker_role_arn"),
                         ("LambdaRole", "lambda_role_arn"),
                         ("StepFunctionsRole", "stepfunctions_role_arn")):
        role_name = _sub(res[rid]["Properties"]["RoleName"]).replace("${ProjectName}", project)
        assert getattr(defaults, setting).endswith(f":role/{role_name}")
    setting_names = {f.name for f in fields(Settings)}
    for output, setting in infra_tasks.OUTPUT_SETTINGS.items():
        assert output in template["Outputs"], output
        assert setting in setting_names, setting


def test_our_loader_reads_the_template_as_cfn_lint_does(template):
    ours = infra_tasks.load_template(TEXT)
    assert ours["Outputs"]["BucketArn"] == {"Value": {"Fn::GetAtt": ["DataBucket", "Arn"]}}
    assert set(ours["Resources"]) == set(template["Resources"])


def test_parameters_from_settings_pass_and_bad_values_are_named():
    tpl = infra_tasks.load_template(TEXT)
    s = Settings(bucket="my-data", prefix="team/a")
    values = infra_tasks.stack_parameters(s, {"alert_email": "me@example.org"})
    assert values == {"ProjectName": names.PROJECT, "BucketName": "my-data",
                      "KeyPrefix": "team/a/", "EndpointName": "cifar-classifier",
                      "AlertEmail": "me@example.org"}
    infra_tasks.check_parameters(tpl, values)
    assert infra_tasks.stack_parameters(Settings(), {})["KeyPrefix"] == ""
    bad = {**values, "AlertEmail": "nobody", "EndpointName": "Cifar-Classifier", "Extra": "1"}
    with pytest.raises(AirflowFailException) as err:
        infra_tasks.check_parameters(tpl, bad)
    for needle in ("AlertEmail='nobody'", "EndpointName='Cifar-Classifier'",
                   "Extra: the template has no such parameter"):
        assert needle in str(err.value)
    with pytest.raises(AirflowFailException, match="BucketName: required"):
        infra_tasks.check_parameters(tpl, {k: v for k, v in values.items() if k != "BucketName"})


def test_outputs_become_settings_and_a_foreign_stack_is_refused():
    outputs = [{"OutputKey": k, "OutputValue": f"v-{k}"} for k in infra_tasks.OUTPUT_SETTINGS]
    assert infra_tasks.settings_from_outputs(outputs)["sagemaker_role_arn"] == (
        "v-SageMakerRoleArn")
    with pytest.raises(AirflowFailException, match="AlertTopicArn"):
        infra_tasks.settings_from_outputs([o for o in outputs
                                           if o["OutputKey"] != "AlertTopicArn"])


def _error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "Op")


@pytest.mark.parametrize("code,message,gone", [
    ("ValidationException", 'Could not find model "m".', True),
    ("ValidationException", "Could not find endpoint configuration \"c\".", True),
    ("ValidationError", "Stack with id s does not exist", True),
    ("ResourceNotFoundException", "Function not found: f", True),
    ("StateMachineDoesNotExist", "State Machine Does Not Exist", True),
    ("NoSuchBucket", "The specified bucket does not exist", True),
    ("ValidationException", "Cannot delete endpoint in Creating state", False),
    ("AccessDenied", "Access Denied", False),
    ("ThrottlingException", "Rate exceeded", False),
])
def test_not_found_is_told_apart_from_real_failures(code, message, gone):
    assert infra_tasks.is_not_found(_error(code, message)) is gone


def test_failed_tasks_include_mapped_instances_and_ignore_skips():
    states = {"delete_lambdas": "success", "delete_models_0": "success",
              "delete_models_1": "failed", "empty_bucket": "skipped",
              "delete_endpoint": "upstream_failed", "verify": None}
    assert infra_tasks.failed_tasks(states, ["delete_lambdas", "delete_models",
                                             "empty_bucket", "delete_endpoint"]) == {
        "delete_models_1": "failed", "delete_endpoint": "upstream_failed"}


# --------------------------------------------------------------------------- plan / update

@pytest.fixture
def cloudformation(monkeypatch):
    """A stubbed CloudFormation client behind infra_tasks (no AWS, no Airflow)."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("cloudformation", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    monkeypatch.setattr(infra_tasks, "_client", lambda s, service: client)
    monkeypatch.setattr(infra_tasks, "load_settings", lambda: Settings(poll_interval_s=1))
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def _described(status: str) -> dict:
    return {"Stacks": [{"StackName": "s", "StackId": "arn:aws:cloudformation:us-east-1:1:stack/s/1",
                        "StackStatus": status, "CreationTime": datetime(2026, 11, 1)}]}


def test_update_with_nothing_to_change_is_a_success(cloudformation):
    cloudformation.add_client_error("update_stack", "ValidationError",
                                     "No updates are to be performed.")
    plan = {"stack_name": "s", "request": infra_tasks.stack_request("s", "{}", {"A": "b"})}
    assert infra_tasks.update_stack(plan) == {"stack_name": "s", "updated": False}


def test_a_failed_update_fails_with_the_reasons(cloudformation):
    cloudformation.add_response("update_stack", {"StackId": "arn:s"})
    cloudformation.add_response("describe_stacks", _described("UPDATE_ROLLBACK_COMPLETE"))
    cloudformation.add_response("describe_stacks", _described("UPDATE_ROLLBACK_COMPLETE"))
    cloudformation.add_response("describe_stack_events", {"StackEvents": [{
        "StackId": "arn:s", "EventId": "1", "StackName": "s", "LogicalResourceId": "LambdaRole",
        "ResourceStatus": "UPDATE_FAILED", "ResourceStatusReason": "AccessDenied",
        "Timestamp": datetime(2026, 11, 1)}]})
    plan = {"stack_name": "s", "request": infra_tasks.stack_request("s", "{}", {"A": "b"})}
    with pytest.raises(AirflowFailException, match="UPDATE_ROLLBACK_COMPLETE.*LambdaRole"):
        infra_tasks.update_stack(plan)


def test_plan_recreates_a_stack_whose_first_create_failed(cloudformation):
    cloudformation.add_response("describe_stacks", _described("ROLLBACK_COMPLETE"))
    cloudformation.add_response("describe_stack_events", {"StackEvents": []})
    cloudformation.add_response("delete_stack", {})
    cloudformation.add_client_error("describe_stacks", "ValidationError",
                                    "Stack with id s does not exist")
    plan = infra_tasks.plan_stack({"stack_name": "s", "bucket_name": "my-data",
                                   "alert_email": "me@example.org"})
    assert plan["action"] == "create"
    assert plan["request"]["Capabilities"] == ["CAPABILITY_NAMED_IAM"]
    assert {"ParameterKey": "BucketName", "ParameterValue": "my-data"} in plan["request"][
        "Parameters"]


@pytest.mark.parametrize("status,action", [
    ("CREATE_COMPLETE", "update"), ("UPDATE_ROLLBACK_COMPLETE", "update"),
    ("UPDATE_IN_PROGRESS", None), ("DELETE_FAILED", None)])
def test_plan_updates_a_healthy_stack_and_refuses_a_busy_or_broken_one(
        cloudformation, status, action):
    cloudformation.add_response("describe_stacks", _described(status))
    if action is None:
        cloudformation.add_response("describe_stack_events", {"StackEvents": []})
        with pytest.raises(AirflowFailException, match=status):
            infra_tasks.plan_stack({"stack_name": "s"})
    else:
        assert infra_tasks.plan_stack({"stack_name": "s"})["action"] == action
