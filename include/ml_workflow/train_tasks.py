"""The train_deploy DAG's task bodies: choose the partition, build the training request,
gate the model, prepare the deployment, verify it with a smoke test, register it and
clean up what it replaced. The AWS calls themselves are the provider's operators."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ml_workflow import etl, registry, s3_layout
from ml_workflow import sagemaker_requests as req
from ml_workflow.settings import Settings, load_settings

log = logging.getLogger(__name__)


def _client(s: Settings, service: str):
    return AwsBaseHook(aws_conn_id=s.aws_conn_id, client_type=service).get_conn()


def _latest_partition(s3, bucket: str, dataset_prefix: str) -> str | None:
    """Newest partition under datasets/<dataset>/ that has a manifest."""
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=dataset_prefix, Delimiter="/")
    prefixes = sorted((p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])),
                      reverse=True)
    for prefix in prefixes:
        try:
            s3.head_object(Bucket=bucket, Key=prefix + s3_layout.MANIFEST)
            return prefix
        except s3.exceptions.ClientError:
            continue
    return None


def _from_asset_events(events) -> dict | None:
    latest = None
    for asset_events in (events or {}).values():
        for event in asset_events:
            extra = getattr(event, "extra", None) or {}
            if "prefix" in extra and "bucket" in extra:
                latest = extra
    return latest


def resolve_partition(s: Settings, s3, params: dict, asset_events) -> tuple[str, str, str]:
    """(bucket, prefix, how it was chosen): the param, else the triggering Asset event,
    else the newest published partition."""
    wanted = (params.get("partition") or "").strip()
    dataset = params.get("dataset_name") or s.dataset_name
    if wanted.startswith("s3://"):
        bucket, _, key = wanted[5:].partition("/")
        return bucket, key.rstrip("/") + "/", "param"
    if wanted:
        return s.bucket, s3_layout.dataset_prefix(s, dataset, wanted), "param"
    extra = _from_asset_events(asset_events)
    if extra:
        return extra["bucket"], extra["prefix"], "asset event"
    prefix = _latest_partition(s3, s.bucket, s.key("datasets", dataset) + "/")
    if prefix is None:  # e.g. the weekly retrain before the first ETL: nothing to do yet
        raise AirflowSkipException(f"no published partition of dataset {dataset!r} in "
                                   f"s3://{s.bucket}/ yet: run cifar_etl first")
    return s.bucket, prefix, "latest published"


def plan_training(params: dict, run_id: str, when: datetime, asset_events) -> dict:
    s = load_settings()
    s3 = S3Hook(aws_conn_id=s.aws_conn_id).get_conn()
    bucket, prefix, how = resolve_partition(s, s3, params, asset_events)
    try:
        manifest = etl.read_manifest(s3, bucket, prefix)
    except FileNotFoundError as exc:
        raise AirflowFailException(str(exc)) from None
    log.info("training on s3://%s/%s (%s): %s", bucket, prefix, how, manifest["counts"])
    image = req.training_image(s.region)
    name = req.job_name("image-classification", when, run_id)
    try:
        config = req.training_job(
            name=name, image=image, role_arn=s.sagemaker_role_arn, bucket=bucket,
            prefix=prefix, output_uri=s.uri("models") + "/", manifest=manifest,
            instance_type=params.get("training_instance_type") or s.training_instance_type,
            overrides=params.get("hyperparameters") or {},
            max_runtime_s=s.max_training_runtime_s,
            tags={"project": "ml-workflow-aws", "dataset": prefix.rstrip("/")})
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from None
    return {"training_config": config, "partition": {
        "bucket": bucket, "prefix": prefix, "classes": manifest["classes"],
        "num_classes": manifest["num_classes"]}, "image": image}


def evaluate(params: dict, training: dict, partition: dict) -> dict:
    """Read the job's metrics and decide whether it may replace the serving model."""
    s = load_settings()
    describe = training["Training"]
    metrics = req.final_metrics(describe)
    s3 = S3Hook(aws_conn_id=s.aws_conn_id).get_conn()
    endpoint = params.get("endpoint_name") or s.endpoint_name
    serving = registry.read(s3, s.bucket, s3_layout.registry_key(s, endpoint))["serving"]
    min_accuracy = float(params.get("min_accuracy", s.min_accuracy))
    decision = registry.gate(metrics.get("validation:accuracy"), serving, min_accuracy,
                             force=bool(params.get("force_deploy")))
    log.info("training job %s metrics %s", describe["TrainingJobName"], metrics)
    log.info("quality gate: %s — %s", "DEPLOY" if decision.deploy else "REJECT",
             decision.reason)
    return {"deploy": decision.deploy, "reason": decision.reason, "metrics": metrics,
            "training_job": describe["TrainingJobName"],
            "model_data_url": describe["ModelArtifacts"]["S3ModelArtifacts"],
            "endpoint": endpoint, "serving": serving, "partition": partition}


def prepare_deployment(params: dict, decision: dict, image: str) -> dict:
    s = load_settings()
    job = decision["training_job"]
    model_cfg = req.model(name=job, image=image, model_data_url=decision["model_data_url"],
                          role_arn=s.sagemaker_role_arn)
    config_cfg = req.endpoint_config(
        name=f"{job}-config"[:63], model_name=job,
        instance_type=params.get("endpoint_instance_type") or s.endpoint_instance_type,
        capture_uri=s3_layout.data_capture_uri(s))
    sm = _client(s, "sagemaker")
    try:
        current = sm.describe_endpoint(EndpointName=decision["endpoint"])
        log.info("endpoint %s exists (config %s): it will be updated in place",
                 decision["endpoint"], current["EndpointConfigName"])
    except sm.exceptions.ClientError:
        log.info("endpoint %s does not exist yet: it will be created", decision["endpoint"])
    return req.endpoint_deployment(model_cfg=model_cfg, config_cfg=config_cfg,
                                   endpoint_name=decision["endpoint"])


def _smoke_images(s3, partition: dict, count: int) -> list[tuple[bytes, int]]:
    lst = s3.get_object(Bucket=partition["bucket"], Key=partition["prefix"] + "test.lst")
    rows = [line.split("\t") for line in lst["Body"].read().decode().splitlines() if line]
    step = max(1, len(rows) // count)
    picked = rows[::step][:count]
    return [(s3.get_object(Bucket=partition["bucket"],
                           Key=partition["prefix"] + "test/" + rel)["Body"].read(), int(label))
            for _, label, rel in picked]


def verify_and_smoke_test(decision: dict, deployment: dict, count: int = 20) -> dict:
    """The endpoint serves the new config, answers with one probability per class, and
    gets a sane share of known test images right."""
    s = load_settings()
    sm = _client(s, "sagemaker")
    endpoint = deployment["Endpoint"]["EndpointName"]
    described = sm.describe_endpoint(EndpointName=endpoint)
    wanted = deployment["EndpointConfig"]["EndpointConfigName"]
    if described["EndpointStatus"] != "InService" or described["EndpointConfigName"] != wanted:
        raise AirflowFailException(
            f"deployment of {wanted} to {endpoint} did not take: the endpoint is "
            f"{described['EndpointStatus']} on {described['EndpointConfigName']} "
            f"(FailureReason: {described.get('FailureReason', 'none given')}); "
            "it keeps serving the previous model")
    runtime = _client(s, "sagemaker-runtime")
    s3 = S3Hook(aws_conn_id=s.aws_conn_id).get_conn()
    partition = decision["partition"]
    images = _smoke_images(s3, partition, count)
    correct = 0
    for body, label in images:
        response = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="image/png",
                                           Body=body)
        probs = json.loads(response["Body"].read())
        if not (isinstance(probs, list) and len(probs) == partition["num_classes"]
                and abs(sum(probs) - 1.0) < 1e-3):
            raise AirflowFailException(f"endpoint {endpoint} answered {probs!r}: expected "
                                       f"{partition['num_classes']} probabilities summing to 1")
        correct += int(max(range(len(probs)), key=probs.__getitem__) == label)
    accuracy = correct / len(images)
    chance = 1.0 / partition["num_classes"]
    floor = max(chance + 0.1, decision["metrics"].get("validation:accuracy", 0) - 0.3)
    log.info("smoke test: %d/%d correct (%.2f; floor %.2f)", correct, len(images), accuracy,
             floor)
    if accuracy < floor:
        raise AirflowFailException(f"smoke test accuracy {accuracy:.2f} on {len(images)} test "
                                   f"images is below the sanity floor {floor:.2f}")
    return {"smoke_accuracy": accuracy, "smoke_images": len(images), "endpoint": endpoint}


def register_and_clean_up(decision: dict, deployment: dict, smoke: dict) -> dict:
    """Record the new serving model, then delete the model/config it replaced."""
    s = load_settings()
    s3 = S3Hook(aws_conn_id=s.aws_conn_id).get_conn()
    key = s3_layout.registry_key(s, decision["endpoint"])
    doc = registry.read(s3, s.bucket, key)
    previous = doc.get("serving")
    entry = {
        "training_job": decision["training_job"],
        "model_name": deployment["Model"]["ModelName"],
        "endpoint_config": deployment["EndpointConfig"]["EndpointConfigName"],
        "model_data_url": decision["model_data_url"],
        "metrics": decision["metrics"], "smoke": smoke,
        "dataset": f"s3://{decision['partition']['bucket']}/{decision['partition']['prefix']}",
        "classes": decision["partition"]["classes"],
        "deployed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    registry.write(s3, s.bucket, key, registry.record_deployment(doc, entry))
    removed = []
    if previous and previous.get("model_name") != entry["model_name"]:
        sm = _client(s, "sagemaker")
        for call, arg, name in (
                (sm.delete_endpoint_config, "EndpointConfigName", previous["endpoint_config"]),
                (sm.delete_model, "ModelName", previous["model_name"])):
            try:
                call(**{arg: name})
                removed.append(name)
            except sm.exceptions.ClientError as exc:
                log.warning("could not delete %s: %s", name, exc)
    log.info("registered %s as serving %s; removed %s", entry["training_job"],
             decision["endpoint"], removed or "nothing")
    return {"serving": entry["training_job"], "removed": removed}
