"""The inference_workflow DAG's task bodies: package and deploy the three Lambdas, the SNS
topic and the state machine; pick a batch of images; collect and summarise the outputs."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk.exceptions import AirflowFailException

from ml_workflow import lambda_package, names, registry, s3_layout, statemachine
from ml_workflow.settings import Settings, load_settings
from ml_workflow.train_tasks import resolve_partition

log = logging.getLogger(__name__)
LAMBDA_RUNTIME = "python3.11"
LAMBDA_TIMEOUT_S = {"serialize": 30, "classify": 60, "filter": 10}


def _client(s: Settings, service: str):
    return AwsBaseHook(aws_conn_id=s.aws_conn_id, client_type=service).get_conn()


def _serving_classes(s: Settings, s3) -> list[str]:
    serving = registry.read(s3, s.bucket, s3_layout.registry_key(s, s.endpoint_name))["serving"]
    return list(serving["classes"]) if serving else list(s.classes)


def package_lambdas() -> list[dict]:
    """Upload each package once (its content hash is in the key); say what each needs."""
    s = load_settings()
    s3 = S3Hook(aws_conn_id=s.aws_conn_id).get_conn()
    env = {
        "serialize": {},
        "classify": {"ENDPOINT_NAME": s.endpoint_name},
        "filter": {"THRESHOLD": str(s.confidence_threshold),
                   "CLASS_NAMES": json.dumps(_serving_classes(s, s3))},
    }
    specs = []
    for role in names.LAMBDAS:
        package = lambda_package.build(role)
        key = s3_layout.lambda_package_key(s, role, package.sha256_hex)
        try:
            s3.head_object(Bucket=s.bucket, Key=key)
        except s3.exceptions.ClientError:
            s3.put_object(Bucket=s.bucket, Key=key, Body=package.data)
            log.info("uploaded %s (%d bytes) to s3://%s/%s", role, len(package.data),
                     s.bucket, key)
        specs.append({"role": role, "function_name": names.lambda_function_name(s, role),
                      "s3_bucket": s.bucket, "s3_key": key,
                      "code_sha256": package.code_sha256, "environment": env[role]})
    return specs


def split_create_update(specs: list[dict]) -> dict:
    """Functions that do not exist yet go to LambdaCreateFunctionOperator; the others are
    updated in place (code and configuration) only where they differ."""
    s = load_settings()
    lam = _client(s, "lambda")
    create, update = [], []
    for spec in specs:
        try:
            lam.get_function(FunctionName=spec["function_name"])
            update.append(spec)
        except lam.exceptions.ResourceNotFoundException:
            create.append({
                "function_name": spec["function_name"],
                "runtime": LAMBDA_RUNTIME,
                "role": s.lambda_role_arn,
                "handler": "app.lambda_handler",
                "code": {"S3Bucket": spec["s3_bucket"], "S3Key": spec["s3_key"]},
                "timeout": LAMBDA_TIMEOUT_S[spec["role"]],
                "config": {"environment": {"Variables": spec["environment"]},
                           "memory_size": 256,
                           "tags": {"project": "ml-workflow-aws"}},
            })
    log.info("Lambdas to create: %s; to check for updates: %s",
             [c["function_name"] for c in create], [u["function_name"] for u in update])
    return {"create": create, "update": update}


def update_lambda(spec: dict) -> str:
    s = load_settings()
    lam = _client(s, "lambda")
    name = spec["function_name"]
    current = lam.get_function_configuration(FunctionName=name)
    changed = []
    if current["CodeSha256"] != spec["code_sha256"]:
        lam.update_function_code(FunctionName=name, S3Bucket=spec["s3_bucket"],
                                 S3Key=spec["s3_key"])
        lam.get_waiter("function_updated_v2").wait(FunctionName=name,
                                                   WaiterConfig={"Delay": 1})
        changed.append("code")
    wanted_env = spec["environment"]
    if current.get("Environment", {}).get("Variables", {}) != wanted_env \
            or current.get("Role") != s.lambda_role_arn:
        lam.update_function_configuration(FunctionName=name, Role=s.lambda_role_arn,
                                          Environment={"Variables": wanted_env})
        lam.get_waiter("function_updated_v2").wait(FunctionName=name,
                                                   WaiterConfig={"Delay": 1})
        changed.append("configuration")
    log.info("%s: %s", name, f"updated {', '.join(changed)}" if changed else "up to date")
    return name


def ensure_topic() -> str:
    """The alert topic (CreateTopic is idempotent) with the owner's email subscribed."""
    s = load_settings()
    sns = _client(s, "sns")
    arn = sns.create_topic(Name=s.sns_topic_name)["TopicArn"]
    subscribed = {sub["Endpoint"] for page in
                  sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=arn)
                  for sub in page["Subscriptions"] if sub["Protocol"] == "email"}
    if s.alert_email not in subscribed:
        sns.subscribe(TopicArn=arn, Protocol="email", Endpoint=s.alert_email)
        log.info("subscribed the owner's address to %s (AWS sends a confirmation mail)", arn)
    return arn


def ensure_state_machine(topic_arn: str, max_concurrency: int = 4,
                         images_per_chunk: int = 16) -> str:
    s = load_settings()
    lam = _client(s, "lambda")
    arns = {role: lam.get_function(FunctionName=fn)["Configuration"]["FunctionArn"]
            for role, fn in names.lambda_function_names(s).items()}
    definition = statemachine.definition(arns, topic_arn, max_concurrency, images_per_chunk)
    sfn = _client(s, "stepfunctions")
    name = names.state_machine_name(s)
    existing = [m["stateMachineArn"] for page in
                sfn.get_paginator("list_state_machines").paginate()
                for m in page["stateMachines"] if m["name"] == name]
    if existing:
        sfn.update_state_machine(stateMachineArn=existing[0], definition=definition,
                                 roleArn=s.stepfunctions_role_arn)
        log.info("updated state machine %s", existing[0])
        return existing[0]
    arn = sfn.create_state_machine(name=name, definition=definition,
                                   roleArn=s.stepfunctions_role_arn,
                                   tags=[{"key": "project", "value": "ml-workflow-aws"}])
    log.info("created state machine %s", arn["stateMachineArn"])
    return arn["stateMachineArn"]


def choose_batches(params: dict, run_id: str, asset_events=None) -> list[dict]:
    """Cases for the executions: explicit keys, or ``count`` test images of a partition;
    split into executions of ``batch_size`` (started in parallel)."""
    s = load_settings()
    s3 = S3Hook(aws_conn_id=s.aws_conn_id).get_conn()
    labels: dict[str, str] = {}
    keys = params.get("keys") or []
    if keys:
        cases = []
        for key in keys:
            if key.startswith("s3://"):
                bucket, _, k = key[5:].partition("/")
            else:
                bucket, k = s.bucket, key
            cases.append({"s3_bucket": bucket, "s3_key": k})
    else:
        bucket, prefix, how = resolve_partition(s, s3, params, asset_events)
        lst = s3.get_object(Bucket=bucket, Key=prefix + "test.lst")["Body"].read().decode()
        classes = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "labels.json")["Body"]
                             .read())
        class_of = {str(c["label"]): c["class_name"] for c in classes}
        rows = [line.split("\t") for line in lst.splitlines() if line]
        count = int(params.get("count") or len(rows))
        step = max(1, len(rows) // count)
        cases = []
        for _, label, rel in rows[::step][:count]:
            key = prefix + "test/" + rel
            cases.append({"s3_bucket": bucket, "s3_key": key})
            labels[f"s3://{bucket}/{key}"] = class_of[label]
        log.info("%d test images of s3://%s/%s (%s)", len(cases), bucket, prefix, how)
    if not cases:
        raise AirflowFailException("no images to classify: give keys or a partition with "
                                   "test images")
    batch_size = int(params.get("batch_size") or 50)
    safe_run = s3_layout.inference_prefix(s, run_id).rstrip("/").rsplit("/", 1)[-1][:60]
    batches = [{"name": f"{safe_run}-{i // batch_size}"[:80],
                "state_machine_input": {"cases": cases[i:i + batch_size]}}
               for i in range(0, len(cases), batch_size)]
    s3.put_object(Bucket=s.bucket, Key=s3_layout.inference_prefix(s, run_id) + "input.json",
                  ContentType="application/json",
                  Body=json.dumps({"cases": cases, "labels": labels,
                                   "executions": [b["name"] for b in batches]}).encode())
    return batches


def summarise(run_id: str, outputs: list) -> dict:
    """Merge the executions' outputs, write output.json, and summarise them."""
    s = load_settings()
    s3 = S3Hook(aws_conn_id=s.aws_conn_id).get_conn()
    prefix = s3_layout.inference_prefix(s, run_id)
    labels = json.loads(s3.get_object(Bucket=s.bucket, Key=prefix + "input.json")["Body"]
                        .read())["labels"]
    results = []
    for out in outputs:
        out = json.loads(out) if isinstance(out, str) else out
        results += out.get("results", [])
    known = [r for r in results if f"s3://{r['s3_bucket']}/{r['s3_key']}" in labels]
    correct = sum(r["predicted_class"] == labels[f"s3://{r['s3_bucket']}/{r['s3_key']}"]
                  for r in known)
    summary = {
        "images": len(results),
        "executions": len(outputs),
        "per_class": dict(Counter(r["predicted_class"] for r in results)),
        "low_confidence": sum(not r["confident"] for r in results),
        "threshold": results[0]["threshold"] if results else s.confidence_threshold,
        "accuracy": round(correct / len(known), 4) if known else None,
        "labelled": len(known),
        "output": f"s3://{s.bucket}/{prefix}output.json",
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    s3.put_object(Bucket=s.bucket, Key=prefix + "output.json", ContentType="application/json",
                  Body=json.dumps({"summary": summary, "results": results}, indent=2).encode())
    log.info("inference summary: %s", json.dumps(summary))
    return summary
