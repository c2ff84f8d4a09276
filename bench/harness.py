"""What the end-to-end benchmarks share: a localaws of their own with boto3 in this process
pointed at it, a throw-away migrated AIRFLOW_HOME whose ``aws_default`` reaches it (for
``dag.test()``), IAM roles, the shared two-class archive published as a partition, and a
model trained on it behind an endpoint.

Airflow reads AIRFLOW_HOME when first imported: a benchmark calls ``LocalStack.start()``
(with ``airflow=True``) before anything imports airflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3

from localaws.testing import LocalAWSProcess

REPO = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = REPO.parent / "shared" / "data" / "cifar-100-python-bicycle-motorcycle.tar.gz"
SHARED_CLASSES = ["bicycle", "motorcycle"]
DATASET = "cifar100-vehicles"
DS = "2026-11-27"
ROLES = {"lambda": "lambda.amazonaws.com", "stepfunctions": "states.amazonaws.com",
         "sagemaker": "sagemaker.amazonaws.com"}


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def archive_md5() -> str:
    if not SHARED_ARCHIVE.exists():
        raise SystemExit(f"the shared archive is missing: {SHARED_ARCHIVE}")
    return hashlib.md5(SHARED_ARCHIVE.read_bytes(), usedforsecurity=False).hexdigest()


def wait_for(describe: Callable[[], dict], done: Callable[[dict], bool], timeout: float,
             interval: float = 0.5, what: str = "resource") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = describe()
        if done(state):
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done after {timeout:.0f}s: {state}")
        time.sleep(interval)


class LocalStack:
    """localaws (+ optionally a migrated Airflow home) for one benchmark process.

    Sets the process environment for boto3 and ``dag.test()``; ``stop()`` stops the
    server, restores the environment and deletes the temporary directories.
    """

    def __init__(self, airflow: bool = False, extra_env: dict[str, str] | None = None) -> None:
        self.airflow = airflow
        self.extra_env = extra_env or {}
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-stack-"))
        self.server = LocalAWSProcess(self.tmp / "localaws")
        self._saved: dict[str, str | None] = {}
        self.bucket = f"bench-{uuid.uuid4().hex[:10]}"

    def _setenv(self, values: dict[str, str]) -> None:
        for k, v in values.items():
            self._saved.setdefault(k, os.environ.get(k))
            os.environ[k] = v

    def start(self) -> LocalStack:
        try:
            self.server.start()
            self._setenv(self.server.client_env())
            self._setenv({"ML_WORKFLOW_BUCKET": self.bucket, **self.extra_env})
            boto3.client("s3").create_bucket(Bucket=self.bucket)
            self._setenv(self._roles())
            if self.airflow:
                self._airflow_home()
        except BaseException:
            self.stop()
            raise
        return self

    def _roles(self) -> dict[str, str]:
        iam = boto3.client("iam")
        env = {}
        for kind, service in ROLES.items():
            trust = {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": service},
                "Action": "sts:AssumeRole"}]}
            arn = iam.create_role(RoleName=f"bench-{kind}",
                                  AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
            env[f"ML_WORKFLOW_{kind.upper()}_ROLE_ARN"] = arn
        return env

    def _airflow_home(self) -> None:
        if "airflow" in sys.modules:
            raise RuntimeError("airflow was imported before its AIRFLOW_HOME was set")
        sys.path.insert(0, str(REPO / "scripts"))
        from airflow_home import write_home

        home = self.tmp / "airflow"
        write_home(home, self.server.endpoint_url)
        self._setenv({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                      "AIRFLOW__CORE__UNIT_TEST_MODE": "False"})
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                       capture_output=True, env=os.environ.copy(), cwd=REPO)
        say(f"migrated a throw-away AIRFLOW_HOME in {time.monotonic() - started:.1f} s")
        self._setenv({"AIRFLOW_CONN_AWS_DEFAULT": json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"region_name": "us-east-1", "endpoint_url": self.server.endpoint_url}})})

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            for k, v in self._saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self._saved.clear()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def load_dag(file_name: str, dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / file_name))
    if bag.import_errors:
        raise RuntimeError(f"{file_name} does not import: {bag.import_errors}")
    return bag.dags[dag_id]


def task_states(run) -> dict:
    return {(ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): ti.state
            for ti in run.get_task_instances()}


def publish_shared_archive(bucket: str, work: Path) -> str:
    """The shared archive published as ``datasets/<dataset>/<DS>/`` by ml_workflow.etl (as
    cifar_etl does); returns the partition prefix."""
    from ml_workflow import etl

    s3 = boto3.client("s3")
    prefix = f"datasets/{DATASET}/{DS}/"
    work.mkdir(parents=True, exist_ok=True)
    raw = etl.extract(s3, str(SHARED_ARCHIVE), archive_md5(), bucket,
                      f"raw/cifar-100/{DS}/cifar-100-python.tar.gz", work)
    etl.transform(s3, bucket, raw["key"], SHARED_CLASSES, "staging/bench.tar", work)
    etl.load(s3, bucket, "staging/bench.tar", prefix, work)
    return prefix


def train_and_deploy(bucket: str, prefix: str, endpoint: str,
                     overrides: dict | None = None) -> dict:
    """Train the image-classification algorithm on a published partition and serve it from
    a Data Capture endpoint, with boto3 (what train_deploy does through its operators)."""
    from ml_workflow import etl
    from ml_workflow import sagemaker_requests as req

    sm = boto3.client("sagemaker")
    role = os.environ["ML_WORKFLOW_SAGEMAKER_ROLE_ARN"]
    image = req.training_image("us-east-1")
    manifest = etl.read_manifest(boto3.client("s3"), bucket, prefix)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    sm.create_training_job(**req.training_job(
        name=name, image=image, role_arn=role, bucket=bucket, prefix=prefix,
        output_uri=f"s3://{bucket}/models/", manifest=manifest, instance_type="ml.m5.xlarge",
        overrides=overrides or {}))
    job = wait_for(lambda: sm.describe_training_job(TrainingJobName=name),
                   lambda d: d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"),
                   timeout=900, interval=1.0, what=f"training job {name}")
    if job["TrainingJobStatus"] != "Completed":
        raise RuntimeError(f"training job {name} {job['TrainingJobStatus']}: "
                           f"{job.get('FailureReason')}")
    trained_s = time.monotonic() - started
    sm.create_model(**req.model(name=name, image=image, role_arn=role,
                                model_data_url=job["ModelArtifacts"]["S3ModelArtifacts"]))
    sm.create_endpoint_config(**req.endpoint_config(
        name=name, model_name=name, instance_type="ml.m5.xlarge",
        capture_uri=f"s3://{bucket}/data_capture"))
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=name)
    state = wait_for(lambda: sm.describe_endpoint(EndpointName=endpoint),
                     lambda d: d["EndpointStatus"] != "Creating", timeout=300,
                     what=f"endpoint {endpoint}")
    if state["EndpointStatus"] != "InService":
        raise RuntimeError(f"endpoint {endpoint} {state['EndpointStatus']}: "
                           f"{state.get('FailureReason')}")
    metrics = req.final_metrics(job)
    say(f"trained {name} in {trained_s:.1f} s (validation accuracy "
        f"{metrics.get('validation:accuracy')}); endpoint {endpoint} InService")
    return {"training_job": name, "model_data_url": job["ModelArtifacts"]["S3ModelArtifacts"],
            "image": image, "metrics": metrics, "train_s": trained_s}
