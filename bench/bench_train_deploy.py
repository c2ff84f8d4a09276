"""train_deploy end to end on the shared two-class archive (issue "train_deploy"), against a
localaws of its own, then an in-place endpoint update under live traffic:

    .venv/bin/python -m bench.bench_train_deploy

The archive is published as a partition (``ml_workflow.etl``, as cifar_etl does), then one
``train_deploy`` run with ``dag.test()``: only the notebook's three hyperparameters (none
passed), ``min_accuracy`` 0.6 so a sane model is always deployed and the whole DAG is timed.
Then UpdateEndpoint to a new endpoint config (the same artifact under a new model name, in a
variant named ``Updated`` so every answer says which model gave it) while a client thread
invokes the endpoint without pause.

Figures merged into bench/results.json:
- train_deploy.run_s: wall time of the dag.test() run (training included; goal <= 180 s);
- train_deploy.train_s: the training job's own time (DescribeTrainingJob start -> end);
- train_deploy.validation_accuracy: what the job reported (validation = the 200 test images);
- train_deploy.update_to_new_model_s: UpdateEndpoint call -> DescribeEndpoint InService on
  the new config -> first InvokeEndpoint answered by the new variant;
- train_deploy.update_failed_requests: failed invocations of the client thread from just
  before the update until after it (must be 0); train_deploy.update_requests: their number.
The machine is shared and has 2 cores: the figures are noisy.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime

import boto3
from botocore.config import Config

from bench.harness import DS, LocalStack, load_dag, publish_shared_archive, say, task_states
from bench.results import merge_results

ENDPOINT = "bench-classifier"
NEW_VARIANT = "Updated"


class Traffic(threading.Thread):
    """Invokes the endpoint without pause; counts answers per variant and failures."""

    def __init__(self, endpoint: str, body: bytes) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.body = endpoint, body
        self.stopping = threading.Event()
        self.ok: dict[str, int] = {}
        self.failures: list[str] = []
        self.first_new_at: float | None = None
        self.runtime = boto3.client("sagemaker-runtime",
                                    config=Config(retries={"max_attempts": 1}))

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                r = self.runtime.invoke_endpoint(EndpointName=self.endpoint, Body=self.body,
                                                 ContentType="image/png")
                probs = json.loads(r["Body"].read())
                if not (isinstance(probs, list) and abs(sum(probs) - 1) < 1e-3):
                    raise ValueError(f"not probabilities: {probs!r}")
                variant = r.get("InvokedProductionVariant", "?")
                self.ok[variant] = self.ok.get(variant, 0) + 1
                if variant == NEW_VARIANT and self.first_new_at is None:
                    self.first_new_at = time.perf_counter()
            except Exception as exc:  # every failure counts, whatever it is
                self.failures.append(repr(exc)[:300])

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=60)


def _update_under_traffic(bucket: str, prefix: str) -> dict[str, float | int]:
    from ml_workflow import registry, s3_layout
    from ml_workflow import sagemaker_requests as req
    from ml_workflow.settings import settings_from_env

    sm = boto3.client("sagemaker")
    s3 = boto3.client("s3")
    runtime = boto3.client("sagemaker-runtime")
    s = settings_from_env()
    serving = registry.read(s3, bucket, s3_layout.registry_key(s, ENDPOINT))["serving"]
    before = sm.describe_endpoint(EndpointName=ENDPOINT)
    name = "bench-update-" + time.strftime("%H%M%S")
    model = sm.describe_model(ModelName=serving["model_name"])
    sm.create_model(**req.model(name=name, image=model["PrimaryContainer"]["Image"],
                                model_data_url=serving["model_data_url"],
                                role_arn=s.sagemaker_role_arn))
    config = req.endpoint_config(name=name, model_name=name, instance_type="ml.m5.xlarge",
                                 capture_uri=s3_layout.data_capture_uri(s))
    config["ProductionVariants"][0]["VariantName"] = NEW_VARIANT
    sm.create_endpoint_config(**config)

    lst = s3.get_object(Bucket=bucket, Key=prefix + "test.lst")["Body"].read().decode()
    first = lst.splitlines()[0].split("\t")[2]
    body = s3.get_object(Bucket=bucket, Key=prefix + "test/" + first)["Body"].read()
    traffic = Traffic(ENDPOINT, body)
    traffic.start()
    try:
        time.sleep(1.0)  # traffic flows before the update starts
        started = time.perf_counter()
        sm.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName=name)
        deadline = time.monotonic() + 300
        while True:
            d = sm.describe_endpoint(EndpointName=ENDPOINT)
            if d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == name:
                break
            if d["EndpointStatus"] == "Failed" or time.monotonic() > deadline:
                raise RuntimeError(f"update did not take: {d['EndpointStatus']} on "
                                   f"{d['EndpointConfigName']} ({d.get('FailureReason')})")
            time.sleep(0.05)
        in_service_s = time.perf_counter() - started
        while True:
            r = runtime.invoke_endpoint(EndpointName=ENDPOINT, Body=body,
                                        ContentType="image/png")
            r["Body"].read()
            if r.get("InvokedProductionVariant") == NEW_VARIANT:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the endpoint never answered from the new variant")
        update_s = time.perf_counter() - started
        time.sleep(2.0)  # and keeps flowing after it
    finally:
        traffic.stop()
    first_new = (traffic.first_new_at - started) if traffic.first_new_at else None
    say(f"update: InService on the new config after {in_service_s:.2f} s, answered by it "
        f"after {update_s:.2f} s (the traffic thread saw it first after "
        f"{first_new if first_new is None else round(first_new, 2)} s); requests per "
        f"variant {traffic.ok}, failures {len(traffic.failures)} {traffic.failures[:3]}")
    if before["EndpointArn"] != sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointArn"]:
        raise RuntimeError("the endpoint was replaced, not updated in place")
    return {
        "train_deploy.update_to_new_model_s": round(update_s, 2),
        "train_deploy.update_failed_requests": len(traffic.failures),
        "train_deploy.update_requests": sum(traffic.ok.values()) + len(traffic.failures),
    }


def run() -> dict[str, float | int]:
    env = {"ML_WORKFLOW_POLL_INTERVAL_S": "1", "ML_WORKFLOW_RETRY_DELAY_S": "1",
           "ML_WORKFLOW_ENDPOINT_NAME": ENDPOINT}
    with LocalStack(airflow=True, extra_env=env) as stack:
        prefix = publish_shared_archive(stack.bucket, stack.tmp / "publish")
        say(f"published s3://{stack.bucket}/{prefix}")
        dag = load_dag("train_deploy.py", "train_deploy")
        started = time.perf_counter()
        dag_run = dag.test(logical_date=datetime(2026, 11, 28, 1, 1, tzinfo=UTC),
                           run_conf={"partition": DS, "min_accuracy": 0.6})
        run_s = time.perf_counter() - started
        states = task_states(dag_run)
        if dag_run.state != "success" or states.get("register") != "success":
            raise RuntimeError(f"train_deploy run {dag_run.state}: {states}")
        say(f"train_deploy ran in {run_s:.1f} s: {states}")
        sm = boto3.client("sagemaker")
        jobs = sm.list_training_jobs()["TrainingJobSummaries"]
        job = sm.describe_training_job(TrainingJobName=jobs[0]["TrainingJobName"])
        accuracy = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}[
            "validation:accuracy"]
        train_s = (job["TrainingEndTime"] - job["TrainingStartTime"]).total_seconds()
        figures = {"train_deploy.run_s": round(run_s, 1),
                   "train_deploy.train_s": round(train_s, 1),
                   "train_deploy.validation_accuracy": round(float(accuracy), 4)}
        figures.update(_update_under_traffic(stack.bucket, prefix))
    return figures


def main(argv: list[str] | None = None) -> int:
    figures = run()
    merge_results(figures)
    for key, value in figures.items():
        print(f"{key}: {value}")
    if figures["train_deploy.update_failed_requests"]:
        print("requests failed during the endpoint update", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
