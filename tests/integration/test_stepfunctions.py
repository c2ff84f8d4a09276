"""Step Functions executions really run, with real Lambdas: Map, Retry, Catch, Choice,
lambda:invoke and sns:publish integrations, payload limit, StopExecution, history."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from datetime import timedelta

import boto3
import pytest

FUNCTIONS = {
    # The product's shape: serialize -> classify -> filter, per image.
    "serialize": (
        "import base64\n"
        "def handler(event, context):\n"
        "    data = base64.b64encode(event['s3_key'].encode()).decode()\n"
        "    return {'statusCode': 200, 'body': {'s3_bucket': event['s3_bucket'],\n"
        "            's3_key': event['s3_key'], 'image_data': data, 'inferences': []}}\n"),
    "classify": (
        "def handler(event, context):\n"
        "    body = event['body']\n"
        "    body['inferences'] = [0.95, 0.05] if 'good' in body['s3_key'] else [0.55, 0.45]\n"
        "    return {'statusCode': 200, 'body': body}\n"),
    "filter": (
        "def handler(event, context):\n"
        "    body = event['body']\n"
        "    body['confident'] = max(body['inferences']) >= 0.9\n"
        "    return {'statusCode': 200, 'body': body}\n"),
    "inc": "def handler(event, context):\n    return {'n': event.get('n', 0) + 1}\n",
    # Fails until the state's retry count reaches event['succeed_at'].
    "flaky": (
        "class Flaky(Exception):\n    pass\n"
        "def handler(event, context):\n"
        "    if event['retry'] < event['succeed_at']:\n"
        "        raise Flaky(f\"attempt {event['retry']}\")\n"
        "    return {'attempts': event['retry'] + 1}\n"),
    "fail": (
        "def handler(event, context):\n"
        "    raise KeyError('no such case')\n"),
    "big": "def handler(event, context):\n    return {'blob': 'x' * (300 * 1024)}\n",
    "sleep": (
        "import time\n"
        "def handler(event, context):\n"
        "    start = time.time()\n"
        "    time.sleep(event.get('seconds', 0.3))\n"
        "    return {'start': start, 'end': time.time(), 'i': event.get('i')}\n"),
}


def make_zip(source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", source)
    return buf.getvalue()


@pytest.fixture(scope="module")
def sfn(localaws):
    return boto3.client("stepfunctions")


@pytest.fixture(scope="module")
def role(localaws):
    return boto3.client("iam").create_role(
        RoleName=f"sfn-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]


@pytest.fixture(scope="module")
def fns(localaws, role):
    """Function name -> ARN, created once for the module and deleted after."""
    lam = boto3.client("lambda")
    suffix = uuid.uuid4().hex[:6]
    arns = {}
    for name, source in FUNCTIONS.items():
        arns[name] = lam.create_function(
            FunctionName=f"sfn-{name}-{suffix}", Runtime="python3.11", Role=role,
            Handler="app.handler", Code={"ZipFile": make_zip(source)}, Timeout=30,
        )["FunctionArn"]
    yield arns
    for arn in arns.values():
        lam.delete_function(FunctionName=arn)


@pytest.fixture()
def machine(sfn, role):
    created = []

    def make(definition: dict) -> str:
        arn = sfn.create_state_machine(name=f"sm-{uuid.uuid4().hex[:10]}", roleArn=role,
                                       definition=json.dumps(definition))["stateMachineArn"]
        created.append(arn)
        return arn

    yield make
    for arn in created:
        sfn.delete_state_machine(stateMachineArn=arn)


def wait(sfn, execution_arn: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        desc = sfn.describe_execution(executionArn=execution_arn)
        if desc["status"] != "RUNNING" or time.monotonic() > deadline:
            return desc
        time.sleep(0.02)


def run(sfn, machine_arn: str, payload: dict, **kwargs) -> dict:
    arn = sfn.start_execution(stateMachineArn=machine_arn, input=json.dumps(payload),
                              **kwargs)["executionArn"]
    return wait(sfn, arn)


def history(sfn, execution_arn: str) -> list[dict]:
    return sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]


def lambda_task(arn: str, **extra) -> dict:
    return {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": arn, "Payload.$": "$"}, **extra}


def test_two_lambda_tasks_run_and_unnamed_executions_do_not_collide(sfn, fns, machine):
    arn = machine({"StartAt": "One", "States": {
        "One": lambda_task(fns["inc"], OutputPath="$.Payload", Next="Two"),
        "Two": {"Type": "Task", "Resource": fns["inc"], "End": True}}})
    first = sfn.start_execution(stateMachineArn=arn, input='{"n": 1}')
    second = sfn.start_execution(stateMachineArn=arn, input='{"n": 10}')
    assert first["executionArn"] != second["executionArn"]
    name = first["executionArn"].rsplit(":", 1)[1]
    uuid.UUID(name)
    done = [wait(sfn, first["executionArn"]), wait(sfn, second["executionArn"])]
    assert [d["status"] for d in done] == ["SUCCEEDED", "SUCCEEDED"]
    assert [json.loads(d["output"]) for d in done] == [{"n": 3}, {"n": 12}]
    assert done[0]["name"] == name
    assert done[0]["stopDate"] >= done[0]["startDate"]

    types = [e["type"] for e in history(sfn, first["executionArn"])]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    assert types.count("TaskSucceeded") == 1  # the lambda:invoke integration
    assert types.count("LambdaFunctionSucceeded") == 1  # the plain function ARN
    listed = sfn.list_executions(stateMachineArn=arn, statusFilter="SUCCEEDED")["executions"]
    assert {e["executionArn"] for e in listed} == {first["executionArn"], second["executionArn"]}

    named = sfn.start_execution(stateMachineArn=arn, name="my-run", input="{}")["executionArn"]
    assert named.endswith(":my-run")
    assert wait(sfn, named)["status"] == "SUCCEEDED"
    with pytest.raises(sfn.exceptions.ExecutionAlreadyExists):
        sfn.start_execution(stateMachineArn=arn, name="my-run", input='{"other": 1}')


def test_running_status_is_visible_before_success(sfn, fns, machine):
    arn = machine({"StartAt": "Sleep", "States": {"Sleep": {
        "Type": "Task", "Resource": fns["sleep"], "End": True}}})
    execution = sfn.start_execution(stateMachineArn=arn, input='{"seconds": 1.0}')
    first = sfn.describe_execution(executionArn=execution["executionArn"])
    assert first["status"] == "RUNNING"
    assert "output" not in first and "stopDate" not in first
    assert wait(sfn, execution["executionArn"])["status"] == "SUCCEEDED"


def product_definition(fns: dict, topic_arn: str, map_fields: dict) -> dict:
    per_image = {
        "StartAt": "Serialize",
        "States": {
            "Serialize": lambda_task(
                fns["serialize"], ResultSelector={"body.$": "$.Payload.body"},
                Retry=[{"ErrorEquals": ["Lambda.ServiceException",
                                        "Lambda.TooManyRequestsException"],
                        "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 2}],
                Next="Classify"),
            "Classify": lambda_task(fns["classify"], ResultSelector={"body.$": "$.Payload.body"},
                                    Next="Filter"),
            "Filter": lambda_task(fns["filter"], OutputPath="$.Payload.body", End=True),
        },
    }
    return {"StartAt": "PerImage", "States": {
        "PerImage": {"Type": "Map", "ItemsPath": "$.cases", "MaxConcurrency": 2,
                     "ResultPath": "$.results", "Next": "AnyLowConfidence", **map_fields,
                     **({"ItemProcessor": per_image} if "Iterator" not in map_fields else {})},
        "AnyLowConfidence": {"Type": "Choice", "Choices": [{
            "Variable": "$.results[0].confident", "BooleanEquals": False, "Next": "Notify"}],
            "Default": "Done"},
        "Notify": {"Type": "Task", "Resource": "arn:aws:states:::sns:publish",
                   "Parameters": {"TopicArn": topic_arn, "Subject": "Low confidence",
                                  "Message.$": "$.results"},
                   "ResultPath": "$.notification", "Next": "Done"},
        "Done": {"Type": "Succeed"},
    }}


@pytest.fixture()
def topic_queue(localaws):
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=f"low-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"low-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue,
                                         AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    yield topic, queue
    sns.delete_topic(TopicArn=topic)
    sqs.delete_queue(QueueUrl=queue)


def _messages(queue: str) -> list[dict]:
    sqs = boto3.client("sqs")
    out = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                              WaitTimeSeconds=1).get("Messages", [])
    return [json.loads(m["Body"]) for m in out]


@pytest.mark.parametrize("map_fields", [
    {"ItemSelector": {"s3_bucket.$": "$.bucket", "s3_key.$": "$$.Map.Item.Value.s3_key"}},
    {"Parameters": {"s3_bucket.$": "$.bucket", "s3_key.$": "$$.Map.Item.Value.s3_key"}},
], ids=["ItemSelector", "Parameters"])
def test_product_workflow_map_choice_and_sns(sfn, fns, machine, topic_queue, map_fields):
    topic, queue = topic_queue
    arn = machine(product_definition(fns, topic, map_fields))

    good = run(sfn, arn, {"bucket": "b", "cases": [{"s3_key": "good/1.png"},
                                                   {"s3_key": "good/2.png"},
                                                   {"s3_key": "good/3.png"}]})
    assert good["status"] == "SUCCEEDED", good.get("cause")
    out = json.loads(good["output"])
    assert [r["s3_key"] for r in out["results"]] == ["good/1.png", "good/2.png", "good/3.png"]
    assert all(r["confident"] and r["s3_bucket"] == "b" and r["image_data"]
               for r in out["results"])
    assert "notification" not in out
    assert _messages(queue) == []

    low = run(sfn, arn, {"bucket": "b", "cases": [{"s3_key": "blurry/1.png"},
                                                  {"s3_key": "good/2.png"}]})
    assert low["status"] == "SUCCEEDED", low.get("cause")
    out = json.loads(low["output"])
    assert [r["confident"] for r in out["results"]] == [False, True]
    assert out["notification"]["MessageId"]
    (message,) = _messages(queue)
    assert message["Subject"] == "Low confidence"
    assert json.loads(message["Message"])[0]["s3_key"] == "blurry/1.png"


def test_map_result_selector_output_path_and_max_concurrency(sfn, fns, machine):
    arn = machine({"StartAt": "Fan", "States": {"Fan": {
        "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2,
        "ItemSelector": {"i.$": "$$.Map.Item.Index", "seconds": 0.4},
        "ItemProcessor": {"StartAt": "S", "States": {"S": {
            "Type": "Task", "Resource": fns["sleep"], "End": True}}},
        "ResultSelector": {"runs.$": "$"},
        "ResultPath": "$.fan", "OutputPath": "$.fan", "End": True}}})
    done = run(sfn, arn, {"items": list(range(5)), "other": "dropped"})
    assert done["status"] == "SUCCEEDED", done.get("cause")
    runs = json.loads(done["output"])["runs"]
    assert [r["i"] for r in runs] == [0, 1, 2, 3, 4]
    spans = [(r["start"], r["end"]) for r in runs]
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap <= 2, f"more than MaxConcurrency=2 iterations ran at once: {spans}"


def flaky_machine(fns: dict, max_attempts: int) -> dict:
    return {"StartAt": "Flaky", "States": {"Flaky": {
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": fns["flaky"],
                       "Payload": {"retry.$": "$$.State.RetryCount", "succeed_at.$": "$.ok_at"}},
        "OutputPath": "$.Payload",
        "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 1, "BackoffRate": 2.0,
                   "MaxAttempts": max_attempts}],
        "End": True}}}


def test_retry_with_backoff_then_success(sfn, fns, machine):
    arn = machine(flaky_machine(fns, max_attempts=3))
    done = run(sfn, arn, {"ok_at": 2})
    assert done["status"] == "SUCCEEDED", done.get("cause")
    assert json.loads(done["output"]) == {"attempts": 3}
    events = history(sfn, done["executionArn"])
    scheduled = [e["timestamp"] for e in events if e["type"] == "TaskScheduled"]
    assert len(scheduled) == 3
    # IntervalSeconds=1, BackoffRate=2: the waits are 1 s then 2 s (lower bounds).
    assert scheduled[1] - scheduled[0] >= timedelta(seconds=0.9)
    assert scheduled[2] - scheduled[1] >= timedelta(seconds=1.9)

    exhausted = run(sfn, machine(flaky_machine(fns, max_attempts=1)), {"ok_at": 9})
    assert exhausted["status"] == "FAILED"
    assert exhausted["error"] == "Flaky"


def test_catch_routes_the_error_and_uncaught_errors_fail(sfn, fns, machine):
    caught = machine({"StartAt": "Fail", "States": {
        "Fail": {"Type": "Task", "Resource": fns["fail"],
                 "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error",
                            "Next": "Handled"}], "End": True},
        "Handled": {"Type": "Pass", "End": True}}})
    done = run(sfn, caught, {"case": 1})
    assert done["status"] == "SUCCEEDED"
    out = json.loads(done["output"])
    assert out["case"] == 1
    assert out["error"]["Error"] == "KeyError"
    assert json.loads(out["error"]["Cause"])["errorMessage"] == "'no such case'"

    uncaught = machine({"StartAt": "Fail", "States": {"Fail": lambda_task(fns["fail"],
                                                                          End=True)}})
    failed = run(sfn, uncaught, {})
    assert failed["status"] == "FAILED"
    assert failed["error"] == "KeyError"
    cause = json.loads(failed["cause"])
    assert cause["errorType"] == "KeyError" and cause["errorMessage"] == "'no such case'"
    assert "output" not in failed
    assert history(sfn, failed["executionArn"])[-1]["type"] == "ExecutionFailed"


def test_payload_limit_fails_with_data_limit_exceeded(sfn, fns, machine):
    arn = machine({"StartAt": "Big", "States": {"Big": {
        "Type": "Task", "Resource": fns["big"], "End": True}}})
    done = run(sfn, arn, {})
    assert done["status"] == "FAILED"
    assert done["error"] == "States.DataLimitExceeded"

    in_map = machine({"StartAt": "M", "States": {"M": {
        "Type": "Map", "ItemsPath": "$.items",
        "ItemProcessor": {"StartAt": "Big", "States": {"Big": lambda_task(fns["big"],
                                                                          End=True)}},
        "End": True}}})
    done = run(sfn, in_map, {"items": [1]})
    assert done["status"] == "FAILED"
    assert done["error"] == "States.DataLimitExceeded"

    passthrough = machine({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    with pytest.raises(sfn.exceptions.ClientError) as err:
        sfn.start_execution(stateMachineArn=passthrough,
                            input=json.dumps({"x": "y" * (257 * 1024)}))
    assert err.value.response["Error"]["Code"] == "ValidationException"
    ok = run(sfn, passthrough, {"x": "y" * (200 * 1024)})
    assert ok["status"] == "SUCCEEDED"


def _reports(function_arn: str) -> int:
    """How many invocations of the function have finished (REPORT lines in its logs)."""
    logs = boto3.client("logs")
    group = f"/aws/lambda/{function_arn.rsplit(':', 1)[1]}"
    events = logs.filter_log_events(logGroupName=group, limit=10000)["events"]
    return sum(e["message"].startswith("REPORT RequestId:") for e in events)


def test_stop_execution_aborts_at_once(sfn, fns, machine):
    arn = machine({"StartAt": "Sleep", "States": {
        "Sleep": {"Type": "Task", "Resource": fns["sleep"], "Next": "After"},
        "After": {"Type": "Task", "Resource": fns["inc"], "End": True}}})
    execution = sfn.start_execution(stateMachineArn=arn, input='{"seconds": 2}')["executionArn"]
    deadline = time.monotonic() + 10
    while not any(e["type"] == "LambdaFunctionStarted" for e in history(sfn, execution)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    reports_before = _reports(fns["sleep"])
    stopped = sfn.stop_execution(executionArn=execution, error="Operator", cause="no longer needed")
    desc = sfn.describe_execution(executionArn=execution)
    assert desc["status"] == "ABORTED"
    assert desc["stopDate"] == stopped["stopDate"]
    assert desc.get("error") == "Operator" and desc.get("cause") == "no longer needed"
    events = history(sfn, execution)
    assert events[-1]["type"] == "ExecutionAborted"
    assert events[-1]["executionAbortedEventDetails"] == {"error": "Operator",
                                                          "cause": "no longer needed"}
    # The in-flight Lambda runs to its end (as on AWS); after that nothing may run.
    deadline = time.monotonic() + 15
    while _reports(fns["sleep"]) == reports_before:
        assert time.monotonic() < deadline, "the in-flight Lambda never finished"
        time.sleep(0.05)
    after = sfn.describe_execution(executionArn=execution)
    assert after["status"] == "ABORTED" and after["stopDate"] == stopped["stopDate"]
    assert history(sfn, execution)[-1]["type"] == "ExecutionAborted"
    assert sum(e["type"] == "LambdaFunctionScheduled" for e in history(sfn, execution)) == 1


def test_unknown_execution_has_a_proper_error_code(sfn, machine):
    arn = machine({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    missing = arn.replace(":stateMachine:", ":execution:") + ":nope"
    with pytest.raises(sfn.exceptions.ExecutionDoesNotExist):
        sfn.describe_execution(executionArn=missing)


def test_timeouts(sfn, fns, machine):
    task_timeout = machine({"StartAt": "Slow", "States": {
        "Slow": {"Type": "Task", "Resource": fns["sleep"], "TimeoutSeconds": 1,
                 "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error",
                            "Next": "TimedOut"}], "End": True},
        "TimedOut": {"Type": "Pass", "End": True}}})
    done = run(sfn, task_timeout, {"seconds": 3})
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"])["error"]["Error"] == "States.Timeout"

    machine_timeout = machine({"TimeoutSeconds": 1, "StartAt": "Slow", "States": {
        "Slow": {"Type": "Task", "Resource": fns["sleep"], "End": True}}})
    done = run(sfn, machine_timeout, {"seconds": 3})
    assert done["status"] == "TIMED_OUT"
    assert done["stopDate"] > done["startDate"]
