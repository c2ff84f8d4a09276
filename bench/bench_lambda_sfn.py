"""Lambda and Step Functions latency on a local localaws (loopback, plain boto3).

    .venv/bin/python -m bench.bench_lambda_sfn

Figures merged into bench/results.json:
- localaws.lambda_cold_ms: first Invoke after CreateFunction (worker start + handler import
  of boto3), median over a few functions;
- localaws.lambda_warm_p50_ms: Invoke on a warm worker (goal <= 10 ms);
- localaws.sfn_two_lambda_p50_ms: StartExecution -> SUCCEEDED for a machine with two Lambda
  tasks, seen by polling DescribeExecution in a tight loop (warm workers);
- localaws.s3_put_get_p50_ms: PutObject + GetObject of 1 KiB.
The machine is shared and has 2 cores: the figures are noisy.
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import boto3

from bench.results import merge_results
from localaws.testing import LocalAWSProcess

HANDLER = """
import json
import boto3

def handler(event, context):
    return {"n": event.get("n", 0) + 1}
"""

COLD_FUNCTIONS = 5
WARM_CALLS = 300
SFN_RUNS = 40
S3_CALLS = 300


def _zip(source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", source)
    return buf.getvalue()


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-lambda-") as tmp, \
            LocalAWSProcess(Path(tmp) / "data") as aws:
        kw = {"endpoint_url": aws.endpoint_url, "region_name": "us-east-1",
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        lam = boto3.client("lambda", **kw)
        sfn = boto3.client("stepfunctions", **kw)
        s3 = boto3.client("s3", **kw)
        role = boto3.client("iam", **kw).create_role(
            RoleName="bench", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = _zip(HANDLER)

        cold = []
        for i in range(COLD_FUNCTIONS):
            lam.create_function(FunctionName=f"cold{i}", Runtime="python3.11", Role=role,
                                Handler="app.handler", Code={"ZipFile": code})
            start = time.perf_counter()
            lam.invoke(FunctionName=f"cold{i}", Payload=b"{}")["Payload"].read()
            cold.append(_ms(start))

        warm = []
        for _ in range(WARM_CALLS):
            start = time.perf_counter()
            lam.invoke(FunctionName="cold0", Payload=b'{"n": 1}')["Payload"].read()
            warm.append(_ms(start))

        arn = lam.get_function(FunctionName="cold0")["Configuration"]["FunctionArn"]
        definition = {"StartAt": "One", "States": {
            "One": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                    "Parameters": {"FunctionName": arn, "Payload.$": "$"},
                    "OutputPath": "$.Payload", "Next": "Two"},
            "Two": {"Type": "Task", "Resource": arn, "End": True}}}
        machine = sfn.create_state_machine(name="bench-two", definition=json.dumps(definition),
                                           roleArn=role)["stateMachineArn"]
        two = []
        for i in range(SFN_RUNS + 2):
            start = time.perf_counter()
            execution = sfn.start_execution(stateMachineArn=machine,
                                            input='{"n": 0}')["executionArn"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status = sfn.describe_execution(executionArn=execution)["status"]
                if status != "RUNNING":
                    break
            if status != "SUCCEEDED":
                raise RuntimeError(f"execution ended {status}")
            if i >= 2:  # the first runs parse the definition and open connections
                two.append(_ms(start))

        s3.create_bucket(Bucket="bench")
        body = b"x" * 1024
        put_get = []
        for i in range(S3_CALLS):
            start = time.perf_counter()
            s3.put_object(Bucket="bench", Key=f"k{i % 10}", Body=body)
            s3.get_object(Bucket="bench", Key=f"k{i % 10}")["Body"].read()
            put_get.append(_ms(start))

    figures = {
        "localaws.lambda_cold_ms": round(statistics.median(cold), 1),
        "localaws.lambda_warm_p50_ms": round(statistics.median(warm), 2),
        "localaws.sfn_two_lambda_p50_ms": round(statistics.median(two), 1),
        "localaws.s3_put_get_p50_ms": round(statistics.median(put_get), 2),
    }
    print(json.dumps({**figures,
                      "lambda_warm_p90_ms": round(_pct(warm, 0.9), 2),
                      "lambda_cold_all_ms": [round(c) for c in cold],
                      "sfn_two_lambda_p90_ms": round(_pct(two, 0.9), 1)}, indent=2))
    return figures


def main() -> int:
    merge_results(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
