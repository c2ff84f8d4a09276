"""SageMaker training jobs that really train: localaws' replacement for moto's instant ones.

``CreateTrainingJob`` keeps moto's record of the job and runs it in a background thread:

* Starting -> Downloading: every channel's S3 prefix is copied (recursively, keys relative to
  the prefix's last ``/``) into ``<work>/input/data/<channel>/``, next to
  ``input/config/{hyperparameters,inputdataconfig,resourceconfig}.json`` (an ``/opt/ml`` tree
  under ``<data dir>/sagemaker/training/``);
* Training: the algorithm chosen by the training image (``localaws.algorithms.registry``) runs
  as ``python -m <module> train --ml-root <work>`` in a child process; its output goes line by
  line to CloudWatch Logs group ``/aws/sagemaker/TrainingJobs``, stream
  ``<job>/algo-1-<epoch seconds>``;
* Uploading: ``<work>/model/`` becomes ``<S3OutputPath>/<job>/output/model.tar.gz``
  (``output/data/`` becomes ``output.tar.gz``), ``output/metrics.json`` becomes
  ``FinalMetricDataList``;
* Completed, or Failed with the algorithm's ``output/failure`` line (or a localaws reason:
  unknown image, missing channel data, ...) as ``FailureReason``.

``StopTrainingJob`` (missing in moto) sends SIGTERM (Stopping -> Stopped, a model the
algorithm saved is still uploaded); ``StoppingCondition.MaxRuntimeInSeconds`` does the same and
ends the job ``Stopped`` with SecondaryStatus ``MaxRuntimeExceeded``, as SageMaker does.
SageMaker gives the algorithm 120 s between SIGTERM and SIGKILL; so does localaws, unless
``LOCALAWS_TRAINING_STOP_GRACE`` (seconds) says otherwise. Duplicate job names are refused with
``ResourceInUse``. Jobs do not survive a restart (their work directories are removed at
start-up); the copied input data is removed when a job ends.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

from localaws.algorithms import registry
from localaws.services.sagemaker_common import (
    LogStream,
    S3Error,
    add_status_section,
    join_s3,
    parse_s3_uri,
    s3_list,
    s3_put,
    utcnow,
)

log = logging.getLogger("localaws.sagemaker")

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
DEFAULT_MAX_RUNTIME = 86400
# SageMaker waits 120 s after SIGTERM before it kills the algorithm.
STOP_GRACE_SECONDS = float(os.environ.get("LOCALAWS_TRAINING_STOP_GRACE", "120"))

_MESSAGES = {
    "Starting": "Preparing the instances for training",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "Training job stopped",
    "MaxRuntimeExceeded": "Training job runtime exceeded MaxRuntimeInSeconds provided",
}

_runs: dict[tuple[str, str, str], _TrainingRun] = {}
_runs_lock = threading.Lock()
_shutting_down = threading.Event()


class _JobFailure(Exception):
    """Ends the job Failed; ``str()`` is the FailureReason."""


class _TrainingRun:
    """One training job's life, driven by a daemon thread."""

    def __init__(self, runtime, account_id: str, region: str, job) -> None:
        self.runtime = runtime
        self.account_id, self.region = account_id, region
        self.job = job
        self.name: str = job.training_job_name
        self.root = runtime.data_dir / "sagemaker" / "training" / account_id / region / self.name
        self.proc: subprocess.Popen | None = None
        self.stop_requested = threading.Event()
        self.started = time.monotonic()
        self.lock = threading.RLock()
        self.log_stream: LogStream | None = None
        self.thread = threading.Thread(target=self._run, name=f"training:{self.name}",
                                       daemon=True)

    # -- status -----------------------------------------------------------------------
    def transition(self, status: str, job_status: str | None = None,
                   message: str | None = None) -> None:
        with self.lock:
            now = utcnow()
            transitions = [dict(t) for t in (self.job.secondary_status_transitions or [])]
            if transitions and "EndTime" not in transitions[-1]:
                transitions[-1]["EndTime"] = now
            entry = {"Status": status, "StartTime": now,
                     "StatusMessage": message or _MESSAGES.get(status, status)}
            if status in ("Completed", "Failed", "Stopped", "MaxRuntimeExceeded"):
                entry["EndTime"] = now
            transitions.append(entry)
            # Replace, never mutate: describe calls serialise these objects concurrently.
            self.job.secondary_status_transitions = transitions
            self.job.secondary_status = status
            if job_status:
                self.job.training_job_status = job_status
            self.job.last_modified_time = now

    def _finish(self, job_status: str, secondary: str, reason: str | None = None) -> None:
        if _shutting_down.is_set():
            return
        with self.lock:
            self._finish_locked(job_status, secondary, reason)

    def _finish_locked(self, job_status: str, secondary: str, reason: str | None) -> None:
        now = utcnow()
        start = self.job.training_start_time or self.job.creation_time
        seconds = max(1, int((now - start).total_seconds()))
        self.job.training_end_time = now
        self.job.training_time_in_seconds = seconds
        self.job.billable_time_in_seconds = seconds
        if reason:
            self.job.failure_reason = reason
        message = f"{_MESSAGES['Failed']}. Reason: {reason}" if job_status == "Failed" else None
        self.transition(secondary, job_status, message)
        log.info("training job %s: %s%s", self.name, job_status, f" ({reason})" if reason else "")

    # -- the job ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._run_job()
        except _JobFailure as exc:
            self._finish("Failed", "Failed", str(exc))
        except Exception as exc:  # a localaws bug must still end the job
            log.exception("training job %s crashed", self.name)
            self._finish("Failed", "Failed", f"InternalServerError: localaws: {exc!r}")
        finally:
            if self.proc is not None:
                self.runtime.forget(self.proc)
            # like SageMaker's instance going away: the copied input data is not kept
            shutil.rmtree(self.root / "input" / "data", ignore_errors=True)

    def _run_job(self) -> None:
        spec = self.job.algorithm_specification or {}
        image = spec.get("TrainingImage") or spec.get("AlgorithmName")
        try:
            algorithm = registry.resolve(image)
        except registry.UnknownAlgorithm as exc:
            raise _JobFailure(f"ClientError: {exc}") from None
        if not algorithm.installed():
            raise _JobFailure(f"AlgorithmError: {image} maps to {algorithm.module}, which is "
                              "not installed in this localaws")
        if spec.get("TrainingInputMode", "File") == "Pipe":
            raise _JobFailure("ClientError: TrainingInputMode Pipe is not supported by localaws")

        self._prepare_dirs()
        self.job.training_start_time = utcnow()
        self.transition("Downloading")
        self._download_channels()
        if self.stop_requested.is_set():
            return self._finish("Stopped", "Stopped")

        self.transition("Training")
        returncode, why_stopped = self._train(algorithm)

        if why_stopped:
            if any((self.root / "model").iterdir()):
                self.transition("Uploading")
                self._upload_outputs()
            return self._finish("Stopped", why_stopped)
        if returncode != 0:
            raise _JobFailure(self._failure_reason(returncode))
        self.transition("Uploading")
        self._upload_outputs()
        self._read_metrics()
        self._finish("Completed", "Completed")

    def _prepare_dirs(self) -> None:
        if self.root.exists():  # a job of the same name from an earlier server run
            shutil.rmtree(self.root)
        config = self.root / "input" / "config"
        for d in (config, self.root / "input" / "data", self.root / "model",
                  self.root / "output" / "data"):
            d.mkdir(parents=True, exist_ok=True)
        hyper = {k: str(v) for k, v in (self.job.hyper_parameters or {}).items()}
        (config / "hyperparameters.json").write_text(json.dumps(hyper, indent=2))
        channels = {}
        for channel in self.job.input_data_config or []:
            channels[channel["ChannelName"]] = {
                "ContentType": channel.get("ContentType", ""),
                "TrainingInputMode": channel.get(
                    "InputMode", self.job.algorithm_specification.get("TrainingInputMode",
                                                                      "File")),
                "S3DistributionType": channel.get("DataSource", {}).get("S3DataSource", {}).get(
                    "S3DataDistributionType", "FullyReplicated"),
                "RecordWrapperType": channel.get("RecordWrapperType", "None"),
            }
        (config / "inputdataconfig.json").write_text(json.dumps(channels, indent=2))
        (config / "resourceconfig.json").write_text(json.dumps(
            {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}))

    def _download_channels(self) -> None:
        role = self.job.role_arn
        for channel in self.job.input_data_config or []:
            name = channel["ChannelName"]
            source = (channel.get("DataSource") or {}).get("S3DataSource")
            if not source:
                raise _JobFailure(f"ClientError: channel {name}: only S3DataSource is "
                                  "supported by localaws")
            if source.get("S3DataType", "S3Prefix") != "S3Prefix":
                raise _JobFailure(f"ClientError: channel {name}: S3DataType "
                                  f"{source.get('S3DataType')} is not supported by localaws")
            uri = source["S3Uri"]
            missing = (
                f'ClientError: No S3 objects found under S3 URL "{uri}" given in input data '
                f"source. Please ensure that the bucket exists in the selected region "
                f"({self.region}), that objects exist under that S3 prefix, and that the role "
                f'"{role}" has "s3:ListBucket" permissions on bucket "{{bucket}}".')
            try:
                bucket, prefix = parse_s3_uri(uri)
                keys = [k for k in s3_list(self.account_id, self.region, bucket, prefix)
                        if not k.name.endswith("/")]
            except S3Error:
                raise _JobFailure(missing.format(bucket=uri[5:].split("/")[0])) from None
            if not keys:
                raise _JobFailure(missing.format(bucket=bucket))
            base = prefix[: prefix.rfind("/") + 1]  # keys keep their path after the last "/"
            target = self.root / "input" / "data" / name
            for key in keys:
                if self.stop_requested.is_set():
                    return
                rel = Path(key.name[len(base):])
                if rel.is_absolute() or ".." in rel.parts:
                    continue
                dest = target / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(key.value)

    def _train(self, algorithm: registry.Algorithm) -> tuple[int, str | None]:
        """Run the algorithm; returns (exit code, None) or (code, Stopped|MaxRuntimeExceeded)."""
        stream = LogStream(self.account_id, self.region, LOG_GROUP,
                           f"{self.name}/algo-1-{int(time.time())}")
        self.log_stream = stream
        max_runtime = (self.job.stopping_condition or {}).get("MaxRuntimeInSeconds") \
            or DEFAULT_MAX_RUNTIME
        deadline = self.started + float(max_runtime)
        env = algorithm.env()
        env["SM_CURRENT_HOST"] = "algo-1"
        env["TRAINING_JOB_NAME"] = self.name
        with self.lock:
            if self.stop_requested.is_set():
                return 0, "Stopped"
            self.proc = self.runtime.popen(
                algorithm.train_command(self.root), cwd=str(self.root), env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                text=True, encoding="utf-8", errors="replace", bufsize=1)
        pump = stream.pump(self.proc.stdout)
        why_stopped = None
        kill_at = None
        while self.proc.poll() is None:
            if why_stopped is None:
                if self.stop_requested.is_set():
                    why_stopped = "Stopped"
                elif time.monotonic() >= deadline:
                    why_stopped = "MaxRuntimeExceeded"
                    log.info("training job %s exceeded MaxRuntimeInSeconds=%s", self.name,
                             max_runtime)
                    self.transition("Stopping", "Stopping")
                if why_stopped:
                    self._signal(signal.SIGTERM)
                    kill_at = time.monotonic() + STOP_GRACE_SECONDS
            elif kill_at is not None and time.monotonic() >= kill_at:
                self._signal(signal.SIGKILL)
                kill_at = None
            try:
                self.proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        if why_stopped is None and self.stop_requested.is_set():
            why_stopped = "Stopped"  # asked to stop, and it ended on its own meanwhile
        pump.join(timeout=10)  # every line reaches the logs before the status changes
        return self.proc.returncode, why_stopped

    def _signal(self, signum: int) -> None:
        try:
            self.proc.send_signal(signum)
        except ProcessLookupError:
            pass

    def _failure_reason(self, returncode: int) -> str:
        failure = self.root / "output" / "failure"
        if failure.is_file():
            text = " ".join(failure.read_text(errors="replace").split())
            if text:
                return text[:1024]
        last = self.log_stream.tail[-1] if self.log_stream and self.log_stream.tail else ""
        how = (f"killed by signal {-returncode}" if returncode < 0
               else f"exit code {returncode}")
        return f"AlgorithmError: the algorithm ended with {how}" + (
            f"; last output: {last[:512]}" if last else "")

    def _upload_outputs(self) -> None:
        out = self.job.output_data_config or {}
        base = join_s3(out["S3OutputPath"], self.name, "output")
        self._upload_tar(self.root / "model", join_s3(base, "model.tar.gz"))
        data_dir = self.root / "output" / "data"
        if data_dir.is_dir() and any(data_dir.iterdir()):
            self._upload_tar(data_dir, join_s3(base, "output.tar.gz"))
        self.job.model_artifacts = {"S3ModelArtifacts": join_s3(base, "model.tar.gz")}

    def _upload_tar(self, directory: Path, uri: str) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for path in sorted(directory.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
        try:
            bucket, key = parse_s3_uri(uri)
            s3_put(self.account_id, self.region, bucket, key, buf.getvalue(),
                   content_type="application/x-tar")
        except S3Error as exc:
            raise _JobFailure(f"ClientError: Data upload failed: {uri}: {exc}") from None

    def _read_metrics(self) -> None:
        path = self.root / "output" / "metrics.json"
        if not path.is_file():
            return
        try:
            metrics = json.loads(path.read_text())
        except ValueError:
            log.warning("training job %s: output/metrics.json is not JSON", self.name)
            return
        now = utcnow()
        self.job.final_metric_data_list = [
            {"MetricName": str(name), "Value": float(value), "Timestamp": now}
            for name, value in metrics.items() if isinstance(value, int | float)
        ]

    # -- control --------------------------------------------------------------------------
    def stop(self) -> bool:
        with self.lock:
            if self.job.training_job_status != "InProgress":
                return False
            self.stop_requested.set()
            self.transition("Stopping", "Stopping")
            return True

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.job.training_job_status,
            "secondary_status": self.job.secondary_status,
            "pid": self.proc.pid if self.proc and self.proc.poll() is None else None,
            "work_dir": str(self.root),
            "elapsed_s": round(time.monotonic() - self.started, 1),
        }


def _patch_backend(runtime) -> None:
    from moto.sagemaker.exceptions import (
        ResourceInUseException,
        ResourceNotFound,
        ValidationError,
    )
    from moto.sagemaker.models import FakeTrainingJob, SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    original_create = SageMakerModelBackend.create_training_job

    def create_training_job(self, training_job_name: str, *args, **kwargs):
        if training_job_name in self.training_jobs:
            arn = FakeTrainingJob.arn_formatter(training_job_name, self.account_id,
                                                self.region_name)
            raise ResourceInUseException(
                "Training job names must be unique within an AWS account and region, and a "
                f"training job with this name already exists ({arn})")
        spec = dict(kwargs.get("algorithm_specification") or {})
        kwargs["algorithm_specification"] = dict(spec)
        job = original_create(self, training_job_name, *args, **kwargs)
        job.algorithm_specification = spec  # moto adds a made-up MetricDefinitions entry
        now = utcnow()
        # Every attribute exists from the start: describe iterates the object's __dict__.
        job.training_job_status = "InProgress"
        job.secondary_status = "Starting"
        job.secondary_status_transitions = [
            {"Status": "Starting", "StartTime": now, "StatusMessage": _MESSAGES["Starting"]}]
        job.final_metric_data_list = None
        job.training_start_time = None
        job.training_end_time = None
        job.failure_reason = None
        job.training_time_in_seconds = None
        job.billable_time_in_seconds = None
        job.creation_time = job.last_modified_time = now
        run = _TrainingRun(runtime, self.account_id, self.region_name, job)
        with _runs_lock:
            _runs[(self.account_id, self.region_name, training_job_name)] = run
        run.thread.start()
        return job

    def stop_training_job(self, training_job_name: str) -> None:
        job = self.training_jobs.get(training_job_name)
        if job is None:
            arn = FakeTrainingJob.arn_formatter(training_job_name, self.account_id,
                                                self.region_name)
            raise ResourceNotFound(f"Could not find training job '{arn}'.")
        run = _runs.get((self.account_id, self.region_name, training_job_name))
        if run is None or not run.stop():
            raise ValidationError(
                "The request was rejected because the training job is in status "
                f"{job.training_job_status}.")

    def stop_training_job_response(self):
        from moto.core.responses import EmptyResult

        self.sagemaker_backend.stop_training_job(self._get_param("TrainingJobName"))
        return EmptyResult()

    SageMakerModelBackend.create_training_job = create_training_job
    SageMakerModelBackend.stop_training_job = stop_training_job
    SageMakerResponse.stop_training_job = stop_training_job_response


def _shutdown() -> None:
    _shutting_down.set()
    with _runs_lock:
        runs = list(_runs.values())
    for run in runs:
        if run.proc is not None and run.proc.poll() is None:
            run._signal(signal.SIGTERM)


def status() -> list[dict[str, Any]]:
    with _runs_lock:
        runs = list(_runs.values())
    return [run.status() for run in runs]


def install(runtime) -> None:
    # Jobs do not survive a restart: their work directories from an earlier run are orphans.
    shutil.rmtree(runtime.data_dir / "sagemaker" / "training", ignore_errors=True)
    _patch_backend(runtime)
    runtime.on_shutdown("sagemaker training jobs", _shutdown)
    add_status_section(runtime, "training_jobs", status)
