"""Lambda Invoke runs the uploaded handler for real: payloads, errors, sandbox, warm workers,
timeouts, logs, asynchronous and SNS invocations - all through plain boto3."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
import uuid
import zipfile

import boto3
import pytest
from botocore.config import Config

from localaws.testing import LocalAWSProcess

APP = '''
import json
import logging
import os
import time

import boto3

CALLS = {"n": 0}
logger = logging.getLogger()
logger.setLevel(logging.INFO)
print("init phase")


def handler(event, context):
    CALLS["n"] += 1
    action = event.get("action")
    print("got event", json.dumps(event))
    logger.info("info line %s", context.aws_request_id)
    if action == "boom":
        raise ValueError("it broke: " + event.get("why", ""))
    if action == "sleep":
        time.sleep(event["seconds"])
    if action == "exit":
        os._exit(3)
    if action == "unserializable":
        return {"when": object()}
    if action == "s3":
        s3 = boto3.client("s3")
        s3.put_object(Bucket=event["bucket"], Key=event["key"], Body=json.dumps(event))
        return {"stored": event["key"]}
    if action == "import":
        try:
            __import__(event["module"])
            return {"imported": True}
        except ImportError as exc:
            return {"imported": False, "error": str(exc)}
    return {
        "event": event,
        "pid": os.getpid(),
        "calls": CALLS["n"],
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": int(context.memory_limit_in_mb),
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "env": {k: os.environ.get(k) for k in (
            "GREETING", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID",
            "AWS_LAMBDA_FUNCTION_NAME", "LAMBDA_TASK_ROOT")},
        "cwd": os.getcwd(),
    }
'''


def make_zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def poll(fn, timeout=20.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not reaped yet) is as good as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def lam(localaws):
    return boto3.client("lambda", config=Config(read_timeout=120, retries={"max_attempts": 0}))


@pytest.fixture(scope="module")
def role(localaws):
    iam = boto3.client("iam")
    name = f"lambda-{uuid.uuid4().hex[:8]}"
    return iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]


@pytest.fixture()
def make_function(lam, role):
    created = []

    def make(files=None, handler="app.handler", **kwargs):
        name = f"fn-{uuid.uuid4().hex[:10]}"
        lam.create_function(FunctionName=name, Runtime="python3.11", Role=role,
                            Handler=handler, Code={"ZipFile": make_zip(files or {"app.py": APP})},
                            **kwargs)
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            lam.delete_function(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            pass


def invoke(lam, name, event=None, **kwargs):
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}), **kwargs)
    return resp, json.loads(resp["Payload"].read() or b"null")


def test_invoke_runs_handler_with_event_context_and_environment(localaws, lam, make_function):
    name = make_function(Timeout=7, MemorySize=256,
                         Environment={"Variables": {"GREETING": "hello"}})
    resp, out = invoke(lam, name, {"x": [1, 2, 3]})
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp
    assert resp["ExecutedVersion"] == "$LATEST"
    assert out["event"] == {"x": [1, 2, 3]}
    assert out["function_name"] == name
    assert out["function_version"] == "$LATEST"
    assert out["invoked_function_arn"].endswith(f":function:{name}")
    assert out["memory_limit_in_mb"] == 256
    uuid.UUID(out["aws_request_id"])
    assert out["log_group_name"] == f"/aws/lambda/{name}"
    assert "[$LATEST]" in out["log_stream_name"]
    assert 0 < out["remaining_ms"] <= 7000
    env = out["env"]
    assert env["GREETING"] == "hello"
    assert env["AWS_ENDPOINT_URL"] == localaws.endpoint_url
    assert env["AWS_REGION"] == "us-east-1"
    assert env["AWS_ACCESS_KEY_ID"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert out["cwd"] == env["LAMBDA_TASK_ROOT"]


def test_empty_payload_is_an_empty_event_and_none_is_null(lam, make_function):
    name = make_function({"app.py": "def handler(event, context):\n    return None if event == {}"
                                    " else event\n"})
    resp = lam.invoke(FunctionName=name)
    assert resp["Payload"].read() == b"null"


def test_handler_reaches_localaws_with_boto3(lam, make_function):
    s3 = boto3.client("s3")
    bucket = f"lambda-s3-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    name = make_function()
    _, out = invoke(lam, name, {"action": "s3", "bucket": bucket, "key": "from-lambda.json"})
    assert out == {"stored": "from-lambda.json"}
    body = json.loads(s3.get_object(Bucket=bucket, Key="from-lambda.json")["Body"].read())
    assert body["bucket"] == bucket


def test_unhandled_exception_has_the_lambda_error_shape(lam, make_function):
    name = make_function()
    resp, out = invoke(lam, name, {"action": "boom", "why": "bad input"})
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-function-error"] == "Unhandled"
    assert out["errorType"] == "ValueError"
    assert out["errorMessage"] == "it broke: bad input"
    assert isinstance(out["stackTrace"], list) and out["stackTrace"]
    assert "app.py" in out["stackTrace"][-1] and "in handler" in out["stackTrace"][-1]
    assert "lambda_worker" not in "".join(out["stackTrace"])
    # the worker survives a handled-by-runtime exception
    _, ok = invoke(lam, name, {})
    assert ok["calls"] == 2


@pytest.mark.parametrize(
    ("files", "handler", "error_type", "message"),
    [
        ({"app.py": APP}, "missing.handler", "Runtime.ImportModuleError",
         "Unable to import module 'missing': No module named 'missing'"),
        ({"app.py": "import numpy\ndef handler(e, c):\n    return 1\n"}, "app.handler",
         "Runtime.ImportModuleError", "Unable to import module 'app': No module named 'numpy'"),
        ({"app.py": "import moto\ndef handler(e, c):\n    return 1\n"}, "app.handler",
         "Runtime.ImportModuleError", "Unable to import module 'app': No module named 'moto'"),
        ({"app.py": APP}, "app.nothing", "Runtime.HandlerNotFound",
         "Handler 'nothing' missing on module 'app'"),
    ],
    ids=["missing-module", "numpy-not-in-runtime", "moto-not-in-runtime", "missing-function"],
)
def test_bad_module_or_handler(lam, make_function, files, handler, error_type, message):
    name = make_function(files, handler=handler)
    for _ in range(2):  # init is retried on the next invoke, as on AWS
        resp, out = invoke(lam, name, {})
        assert resp["FunctionError"] == "Unhandled"
        assert out["errorType"] == error_type
        assert out["errorMessage"] == message


def test_runtime_offers_stdlib_and_boto3_only(lam, make_function):
    name = make_function()
    for module in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six",
                   "sqlite3", "json", "decimal"):
        _, out = invoke(lam, name, {"action": "import", "module": module})
        assert out == {"imported": True}, module
    for module in ("numpy", "moto", "localaws", "airflow", "werkzeug", "requests"):
        _, out = invoke(lam, name, {"action": "import", "module": module})
        assert out["imported"] is False, module


def test_code_packaged_with_the_function_is_importable(lam, make_function):
    files = {"app.py": "from helpers.text import shout\ndef handler(e, c):\n"
                       "    return shout(e['word'])\n",
             "helpers/__init__.py": "", "helpers/text.py": "def shout(w):\n    return w.upper()\n"}
    name = make_function(files)
    _, out = invoke(lam, name, {"word": "quiet"})
    assert out == "QUIET"


def test_worker_stays_warm_between_invocations(lam, make_function):
    name = make_function()
    _, first = invoke(lam, name, {})
    _, second = invoke(lam, name, {})
    assert second["pid"] == first["pid"]
    assert second["calls"] == first["calls"] + 1
    assert second["aws_request_id"] != first["aws_request_id"]


def test_concurrent_invocations_get_more_workers(lam, make_function):
    name = make_function(Timeout=30)
    invoke(lam, name, {})  # one warm worker
    results: list[dict] = []

    def call():
        results.append(invoke(lam, name, {"action": "sleep", "seconds": 1.5})[1])

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3
    assert all("pid" in r for r in results)
    assert len({r["pid"] for r in results}) == 3


def test_update_function_code_replaces_the_workers(lam, make_function):
    name = make_function()
    _, before = invoke(lam, name, {})
    lam.update_function_code(FunctionName=name, ZipFile=make_zip(
        {"app.py": "import os\ndef handler(e, c):\n    return {'v': 2, 'pid': os.getpid()}\n"}))
    _, after = invoke(lam, name, {})
    assert after["v"] == 2
    assert after["pid"] != before["pid"]
    assert poll(lambda: not pid_alive(before["pid"]), timeout=10), "old worker still running"


def test_update_configuration_is_seen_by_the_next_invocation(lam, make_function):
    name = make_function(Environment={"Variables": {"GREETING": "one"}})
    _, before = invoke(lam, name, {})
    lam.update_function_configuration(FunctionName=name,
                                      Environment={"Variables": {"GREETING": "two"}})
    _, after = invoke(lam, name, {})
    assert (before["env"]["GREETING"], after["env"]["GREETING"]) == ("one", "two")


def test_timeout_kills_the_worker_and_the_next_invoke_works(lam, make_function):
    name = make_function(Timeout=1)
    _, warm = invoke(lam, name, {})
    resp, out = invoke(lam, name, {"action": "sleep", "seconds": 30}, LogType="Tail")
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in out["errorMessage"]
    tail = base64.b64decode(resp["LogResult"]).decode()
    assert "Task timed out after 1.00 seconds" in tail
    assert "Status: timeout" in tail
    assert poll(lambda: not pid_alive(warm["pid"]), timeout=10), "timed-out worker not killed"
    _, again = invoke(lam, name, {})
    assert again["pid"] != warm["pid"]


def test_runtime_exit_and_unserializable_result(lam, make_function):
    name = make_function()
    resp, out = invoke(lam, name, {"action": "exit"})
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in out["errorMessage"]
    resp, out = invoke(lam, name, {"action": "unserializable"})
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.MarshalError"
    _, ok = invoke(lam, name, {})
    assert "pid" in ok


def test_invalid_json_payload_is_rejected(lam, make_function):
    name = make_function()
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=name, Payload=b"{not json")


def test_logs_go_to_cloudwatch_and_to_the_tail(lam, make_function):
    name = make_function()
    resp, out = invoke(lam, name, {"action": "boom", "why": "log me"}, LogType="Tail")
    request_id = out["requestId"]
    tail = base64.b64decode(resp["LogResult"]).decode()
    assert f"START RequestId: {request_id} Version: $LATEST" in tail
    assert "got event" in tail
    assert "[INFO]\t" in tail and f"info line {request_id}" in tail
    assert "[ERROR] ValueError: it broke: log me" in tail
    assert f"END RequestId: {request_id}" in tail
    assert f"REPORT RequestId: {request_id}\tDuration: " in tail
    assert "Init Duration: " in tail  # first invocation of this worker

    resp, _ = invoke(lam, name, {"n": 2})
    assert "LogResult" not in resp  # only with LogType=Tail

    logs = boto3.client("logs")
    group = f"/aws/lambda/{name}"
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert len(streams) == 1  # one worker, one stream
    events = logs.get_log_events(logGroupName=group, logStreamName=streams[0]["logStreamName"],
                                 startFromHead=True)["events"]
    messages = [e["message"] for e in events]
    assert messages[0] == "init phase\n"  # init output comes before the first START
    assert sum(m.startswith("START RequestId:") for m in messages) == 2
    assert sum(m.startswith("REPORT RequestId:") for m in messages) == 2
    assert any("got event {\"n\": 2}" in m for m in messages)
    timestamps = [e["timestamp"] for e in events]
    assert timestamps == sorted(timestamps)


def test_tail_is_the_last_4kb(lam, make_function):
    name = make_function({"app.py": "def handler(e, c):\n    for i in range(500):\n"
                                    "        print('line', i, 'x' * 40)\n    return 1\n"})
    resp, _ = invoke(lam, name, {}, LogType="Tail")
    tail = base64.b64decode(resp["LogResult"])
    assert len(tail) == 4096
    assert tail.decode().rstrip().split("\n")[-1].startswith("REPORT RequestId:")


def test_event_invocation_runs_asynchronously(lam, make_function):
    s3 = boto3.client("s3")
    bucket = f"lambda-event-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    name = make_function()
    started = time.monotonic()
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(
        {"action": "s3", "bucket": bucket, "key": "async.json"}))
    assert resp["StatusCode"] == 202
    assert resp["Payload"].read() == b""
    assert time.monotonic() - started < 10

    def stored():
        return s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 1
    assert poll(stored), "the asynchronous invocation did not run"


def test_dry_run_does_not_run_the_handler(lam, make_function):
    name = make_function()
    resp = lam.invoke(FunctionName=name, InvocationType="DryRun")
    assert resp["StatusCode"] == 204


def test_sns_subscription_invokes_the_function(lam, make_function):
    s3 = boto3.client("s3")
    sns = boto3.client("sns")
    bucket = f"lambda-sns-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    files = {"app.py": (
        "import boto3, json\n"
        "def handler(event, context):\n"
        "    record = event['Records'][0]['Sns']\n"
        "    boto3.client('s3').put_object(Bucket=json.loads(record['Message'])['bucket'],\n"
        "        Key='sns.json', Body=record['Message'])\n")}
    name = make_function(files)
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    topic = sns.create_topic(Name=f"to-lambda-{uuid.uuid4().hex[:8]}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=arn)
    sns.publish(TopicArn=topic, Message=json.dumps({"bucket": bucket}))

    def stored():
        return s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 1
    assert poll(stored), "SNS did not invoke the function"
    sns.delete_topic(TopicArn=topic)


def test_s3_notification_invokes_the_function(lam, make_function):
    s3 = boto3.client("s3")
    source, target = (f"lambda-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("src", "dst"))
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=target)
    files = {"app.py": (
        "import boto3\n"
        "def handler(event, context):\n"
        "    record = event['Records'][0]['s3']\n"
        f"    boto3.client('s3').put_object(Bucket='{target}',\n"
        "        Key='seen/' + record['object']['key'], Body=b'1')\n")}
    arn = lam.get_function(FunctionName=make_function(files))["Configuration"]["FunctionArn"]
    s3.put_bucket_notification_configuration(Bucket=source, NotificationConfiguration={
        "LambdaFunctionConfigurations": [{"LambdaFunctionArn": arn,
                                          "Events": ["s3:ObjectCreated:*"]}]})
    s3.put_object(Bucket=source, Key="image.png", Body=b"png")

    def seen():
        return s3.list_objects_v2(Bucket=target, Prefix="seen/").get("KeyCount", 0) == 1
    assert poll(seen), "the S3 notification did not invoke the function"


def test_published_version_runs_its_own_code(lam, make_function):
    v1 = {"app.py": "def handler(e, c):\n    return {'v': 1, 'ver': c.function_version}\n"}
    v2 = {"app.py": "def handler(e, c):\n    return {'v': 2, 'ver': c.function_version}\n"}
    name = make_function(v1)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.update_function_code(FunctionName=name, ZipFile=make_zip(v2))
    _, latest = invoke(lam, name, {})
    resp, pinned = invoke(lam, name, {}, Qualifier=version)
    assert latest == {"v": 2, "ver": "$LATEST"}
    assert pinned == {"v": 1, "ver": version}


def test_delete_function_stops_its_workers(lam, make_function):
    name = make_function()
    _, out = invoke(lam, name, {})
    lam.delete_function(FunctionName=name)
    assert poll(lambda: not pid_alive(out["pid"]), timeout=10), "worker outlived its function"


def test_shutdown_stops_the_workers(tmp_path):
    with LocalAWSProcess(tmp_path / "own") as server:
        kw = {"endpoint_url": server.endpoint_url, "region_name": "us-east-1",
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        client = boto3.client("lambda", **kw)
        own_role = boto3.client("iam", **kw).create_role(
            RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        client.create_function(FunctionName="f", Runtime="python3.11", Role=own_role,
                               Handler="app.handler", Code={"ZipFile": make_zip({"app.py": APP})})
        _, out = invoke(client, "f", {})
        assert pid_alive(out["pid"])
        assert server.status()["lambda"]["workers"] == 1
    assert poll(lambda: not pid_alive(out["pid"]), timeout=10), "worker outlived the server"


def test_event_keys_are_not_mistaken_for_invoke_parameters(lam, make_function):
    name = make_function()
    _, out = invoke(lam, name, {"qualifier": "7", "FunctionName": "other"})
    assert out["event"] == {"qualifier": "7", "FunctionName": "other"}
