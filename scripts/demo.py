"""``make demo``: the whole pipeline on localaws, driven through Airflow's REST API the way
a user drives the UI: infra_setup → cifar_etl (its Asset triggers train_deploy) →
inference_workflow on the test images → model_monitor. Starts everything it needs, stops
everything it started, exits non-zero on any failure, and ends with one line
``DEMO SUMMARY {json}``.

Data: ``CIFAR100_SOURCE`` / ``CIFAR100_MD5`` / ``ML_WORKFLOW_CLASSES`` as usual. When
``CIFAR100_SOURCE`` is not set and the shared two-class archive sits in ``../shared/data``,
the demo runs offline on it (classes bicycle, motorcycle).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from airflow_api import AirflowAPI  # noqa: E402
from stack import Stack  # noqa: E402

SHARED_ARCHIVE = REPO.parent / "shared" / "data" / "cifar-100-python-bicycle-motorcycle.tar.gz"
DAGS = ("infra_setup", "cifar_etl", "train_deploy", "inference_workflow", "model_monitor")


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def data_settings(environ: dict[str, str]) -> dict[str, str]:
    """The ETL's source, checksum and classes: the user's, else the shared archive."""
    if environ.get("CIFAR100_SOURCE"):
        return {k: environ[k] for k in ("CIFAR100_SOURCE", "CIFAR100_MD5",
                                        "ML_WORKFLOW_CLASSES") if environ.get(k)}
    if SHARED_ARCHIVE.exists():
        md5 = hashlib.md5(SHARED_ARCHIVE.read_bytes(), usedforsecurity=False).hexdigest()
        return {"CIFAR100_SOURCE": str(SHARED_ARCHIVE), "CIFAR100_MD5": md5,
                "ML_WORKFLOW_CLASSES": environ.get("ML_WORKFLOW_CLASSES",
                                                   "bicycle,motorcycle")}
    return {}  # the official archive and the default classes


def run_pipeline(api: AirflowAPI, stack: Stack, timeout_s: float = 1800) -> dict:
    """Drive the five DAGs; return the summary fields."""
    started = time.monotonic()
    for dag_id in DAGS:
        api.wait_for_dag(dag_id, timeout=180)
    say("all DAGs parsed")

    def run(dag_id: str, conf: dict | None = None, logical_date: str | None = None,
            timeout: float = 600) -> str:
        api.set_paused(dag_id, False)
        run_id = api.trigger(dag_id, conf, logical_date)
        say(f"triggered {dag_id} ({run_id})")
        return finish(dag_id, run_id, timeout)

    def finish(dag_id: str, run_id: str, timeout: float) -> str:
        result = api.wait_for_run(dag_id, run_id, timeout, progress=say)
        if result["state"] != "success":
            failed = [t["task_id"] for t in api.task_instances(dag_id, run_id)
                      if t["state"] in ("failed", "upstream_failed")]
            raise RuntimeError(f"{dag_id} run {run_id} {result['state']}: failed tasks "
                               f"{failed}; logs under {stack.home / 'logs'}")
        return run_id

    run("infra_setup")

    # train_deploy listens for the dataset Asset; unpausing cifar_etl makes the scheduler
    # start its daily run for the last complete interval, as it would in production.
    api.set_paused("train_deploy", False)
    known_train = {r["dag_run_id"] for r in api.runs("train_deploy")}
    known_etl = {r["dag_run_id"] for r in api.runs("cifar_etl")}
    api.set_paused("cifar_etl", False)
    etl_run = api.wait_for_new_run("cifar_etl", known_etl, timeout=120,
                                   run_type="scheduled")["dag_run_id"]
    say(f"scheduler started cifar_etl ({etl_run})")
    finish("cifar_etl", etl_run, 600)
    published = api.xcom("cifar_etl", etl_run, "load")

    train_run = api.wait_for_new_run("train_deploy", known_train, timeout=120,
                                     run_type="asset_triggered")["dag_run_id"]
    say(f"the dataset Asset triggered train_deploy ({train_run})")
    finish("train_deploy", train_run, 1200)
    decision = api.xcom("train_deploy", train_run, "evaluate")

    test_images = published["counts"]["test"]["total"]
    inference_started = datetime.now(UTC)
    inference_run = run("inference_workflow", {"count": test_images, "batch_size": 50},
                        timeout=900)
    inference = api.xcom("inference_workflow", inference_run, "summarise")

    # The hour(s) the inference traffic was captured in, as a user picks them in the form.
    hours = sorted({t.strftime("%Y-%m-%dT%H") for t in (inference_started, datetime.now(UTC))})
    monitors = []
    for hour in hours:
        monitor_run = run("model_monitor", {"hour": hour}, timeout=600)
        monitors.append(api.xcom("model_monitor", monitor_run, "analyse"))
    monitor = {**monitors[-1], "requests": sum(m["requests"] for m in monitors),
               "alert": {"raise": any(m["alert"]["raise"] for m in monitors)}}
    return {
        "published": published, "decision": decision, "inference": inference,
        "monitor_run": monitor_run, "monitor": monitor,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / ".demo")
    args = parser.parse_args()
    t0 = time.monotonic()
    shutil.rmtree(args.workdir, ignore_errors=True)  # every demo starts from nothing
    env = {"ML_WORKFLOW_POLL_INTERVAL_S": "2", **data_settings(dict(os.environ))}
    say(f"data: {env.get('CIFAR100_SOURCE', 'official CIFAR-100 archive')} classes "
        f"{env.get('ML_WORKFLOW_CLASSES', 'default')}")
    from localaws.testing import free_port

    stack = Stack(airflow_home=args.workdir / "airflow", localaws_dir=args.workdir / "localaws",
                  localaws_port=free_port(), api_port=free_port(), extra_env=env)
    try:
        say("starting localaws and Airflow (scheduler, dag-processor, API server, triggerer)")
        stack.up()
        say(f"Airflow UI at {stack.api_url}, localaws at {stack.aws_endpoint}")
        api = AirflowAPI(stack.api_url, "admin", stack.admin_password())
        result = run_pipeline(api, stack)
        report = fetch_report(stack, args.workdir, result["monitor"]["report_uri"])
        mails = sorted((stack.localaws_dir / "mail").glob("*.eml"))
    except Exception as exc:
        say(f"FAILED: {exc}")
        return 1
    finally:
        say("stopping everything the demo started")
        stack.down()
    decision, inference, published = result["decision"], result["inference"], \
        result["published"]
    summary = {
        "train_images": published["counts"]["train"]["total"],
        "test_images": published["counts"]["test"]["total"],
        "classes": published["classes"],
        "training_job": decision["training_job"],
        "validation_accuracy": decision["metrics"].get("validation:accuracy"),
        "deployed": decision["deploy"],
        "endpoint": decision["endpoint"],
        "executions_succeeded": inference["executions"],
        "images_classified": inference["images"],
        "inference_accuracy": inference["accuracy"],
        "low_confidence": inference["low_confidence"],
        "monitored_requests": result["monitor"]["requests"],
        "monitor_alert": result["monitor"]["alert"]["raise"],
        "emails_delivered": len(mails),
        "report": str(report),
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    print("DEMO SUMMARY " + json.dumps(summary), flush=True)
    return 0


def fetch_report(stack: Stack, workdir: Path, report_uri: str) -> Path:
    """Copy the monitoring report out of localaws' S3 to a local file."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.aws_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket, _, key = report_uri.removeprefix("s3://").partition("/")
    target = workdir / "report.html"
    s3.download_file(bucket, key, str(target))
    return target


if __name__ == "__main__":
    raise SystemExit(main())
