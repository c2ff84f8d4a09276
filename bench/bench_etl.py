"""ETL throughput on the shared two-class archive (issue "cifar_etl"), against a localaws of
its own:

    .venv/bin/python -m bench.bench_etl [--repeat 3]

Figures merged into bench/results.json:
- etl.images_per_s: images (1000 train + 200 test) / seconds of ``ml_workflow.etl.transform``
  + ``load`` (archive already in the raw zone, as on a re-run), median over ``--repeat``;
- etl.transform_s / etl.load_s: the two parts of that median run;
- etl.dag_run_s: wall time of one full ``cifar_etl`` run with ``dag.test()`` (plan, extract
  incl. the MD5 check and upload of the 3.3 MB archive, transform, load; goal <= 30 s).
The machine is shared and has 2 cores: the figures are noisy.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import boto3

from bench.harness import (
    SHARED_ARCHIVE,
    SHARED_CLASSES,
    LocalStack,
    archive_md5,
    load_dag,
    say,
    task_states,
)
from bench.results import merge_results

RAW_KEY = "raw/bench/cifar-100-python.tar.gz"


def _transform_load(bucket: str, work: Path, i: int) -> tuple[float, float, int]:
    from ml_workflow import etl

    s3 = boto3.client("s3")
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("t", "l"):
        (work / sub).mkdir(parents=True)
    staging = f"staging/bench-{i}.tar"
    started = time.perf_counter()
    manifest = etl.transform(s3, bucket, RAW_KEY, SHARED_CLASSES, staging, work / "t")
    transformed = time.perf_counter()
    etl.load(s3, bucket, staging, f"datasets/bench/run-{i}/", work / "l")
    loaded = time.perf_counter()
    images = sum(c["total"] for c in manifest["counts"].values())
    return transformed - started, loaded - transformed, images


def run(repeat: int) -> dict[str, float | int]:
    from ml_workflow import etl

    md5 = archive_md5()
    with LocalStack(airflow=True) as stack, \
            tempfile.TemporaryDirectory(prefix="bench-etl-") as tmp:
        work = Path(tmp)
        (work / "x").mkdir()
        etl.extract(boto3.client("s3"), str(SHARED_ARCHIVE), md5, stack.bucket, RAW_KEY,
                    work / "x")
        runs = []
        for i in range(repeat):
            t, lo, images = _transform_load(stack.bucket, work / f"r{i}", i)
            say(f"transform {t:.2f} s + load {lo:.2f} s for {images} images")
            runs.append((t + lo, t, lo, images))
        total, t, lo, images = sorted(runs)[len(runs) // 2]
        if images != 1200:
            raise RuntimeError(f"expected 1200 images from the shared archive, got {images}")

        dag = load_dag("cifar_etl.py", "cifar_etl")
        conf = {"classes": SHARED_CLASSES, "source": str(SHARED_ARCHIVE), "md5": md5,
                "dataset_name": "bench-dag"}
        started = time.perf_counter()
        dag_run = dag.test(logical_date=datetime(2026, 11, 27, tzinfo=UTC), run_conf=conf)
        dag_s = time.perf_counter() - started
        if dag_run.state != "success":
            raise RuntimeError(f"cifar_etl run {dag_run.state}: {task_states(dag_run)}")
        pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(
            Bucket=stack.bucket, Prefix="datasets/bench-dag/")
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        manifests = [k for k in keys if k.endswith("/_MANIFEST.json")]
        if len(manifests) != 1 or len(keys) < 1200:
            raise RuntimeError(f"cifar_etl reported success but published {manifests} "
                               f"({len(keys)} objects)")

    return {
        "etl.images_per_s": round(images / total, 1),
        "etl.transform_s": round(t, 2),
        "etl.load_s": round(lo, 2),
        "etl.dag_run_s": round(dag_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    figures = run(max(1, args.repeat))
    merge_results(figures)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
