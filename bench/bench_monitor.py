"""How long model_monitor takes to analyse 10,000 capture records (goal: <= 10 s on 2 cores).

    .venv/bin/python -m bench.bench_monitor [--records 10000] [--repeat 3] [--no-s3]

The records are generated (``tests.capture_factory``: 32x32 PNGs base64-encoded in, JSON or
base64 JSON probabilities out, 25 records per file) and analysed the way the DAG does.
Figures merged into bench/results.json (medians over ``--repeat`` runs):
- monitor.analyse_10k_s: parse every line, decode every image, histograms, metrics and drift,
  from files already in memory;
- monitor.records_per_s: records / monitor.analyse_10k_s;
- monitor.charts_report_10k_s: the four PNG charts and report.html for those records;
- monitor.read_analyse_10k_from_s3_s: listing + downloading the files from a local localaws
  (loopback) and analysing them, as the ``analyse`` task reads them (skipped by --no-s3).
The machine is shared and has 2 cores: the figures are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime

import numpy as np

from bench.results import merge_results
from ml_workflow import monitoring, monitoring_charts, s3_layout
from ml_workflow.settings import Settings
from tests import capture_factory as cf
from tests.factories import class_image

CLASSES = ["bicycle", "motorcycle", "pickup_truck"]
START = datetime(2026, 11, 28, 7, tzinfo=UTC)
END = datetime(2026, 11, 28, 8, tzinfo=UTC)
THRESHOLDS = monitoring.Thresholds(confidence=0.8, low_confidence_share=0.2, drift=0.2,
                                   drift_min_requests=50)


def _baseline() -> dict:
    from ml_workflow.cifar import png_bytes

    rng = np.random.default_rng(0)
    lst = "".join(f"{i}\t{i % 3}\ti{i}.png\n" for i in range(300))
    return monitoring.build_baseline(
        dataset_uri="s3://bench/datasets/d/x/", classes=CLASSES, lst_text=lst,
        images=[png_bytes(class_image(i % 3, rng)) for i in range(300)], images_total=300,
        manifest={"published_at": "x", "files": {}})


def _analyse(files: dict[str, bytes], baseline: dict):
    obs = monitoring.analyse_files(files.items(), len(CLASSES))
    metrics = monitoring.compute_metrics(obs, classes=CLASSES, thresholds=THRESHOLDS,
                                         baseline=baseline, start=START, end=END,
                                         context={"endpoint": "bench"})
    return obs, metrics


def _from_s3(files: dict[str, bytes], records: int, baseline: dict, s: Settings,
             repeat: int) -> list[float]:
    import boto3

    from localaws.testing import TEST_CREDENTIALS, LocalAWSProcess
    from ml_workflow.monitor_tasks import read_capture

    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp, \
            LocalAWSProcess(tmp) as server:
        s3 = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        s3.create_bucket(Bucket=s.bucket)
        cf.put_files(s3, s.bucket, files)
        prefixes = [s3_layout.data_capture_hour_prefix(s, "bench", "AllTraffic", START)]
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            obs = read_capture(s3, s.bucket, prefixes, len(CLASSES))
            monitoring.compute_metrics(obs, classes=CLASSES, thresholds=THRESHOLDS,
                                       baseline=baseline, start=START, end=END)
            times.append(time.perf_counter() - started)
            assert obs.files == len(files) and obs.requests == records
        return times


def run(records: int, repeat: int, with_s3: bool) -> dict[str, float | int]:
    s = Settings(bucket="bench")
    files = cf.capture_files(s, "bench", cf.traffic(records, START, seed=1))
    baseline = _baseline()
    analyse_times, chart_times = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        obs, metrics = _analyse(files, baseline)
        analyse_times.append(time.perf_counter() - started)
        assert obs.requests == records and not obs.malformed
        started = time.perf_counter()
        monitoring_charts.report_html(metrics, monitoring_charts.render_charts(obs, metrics))
        chart_times.append(time.perf_counter() - started)
    analyse_s = statistics.median(analyse_times)
    scale = 10_000 / records
    figures: dict[str, float | int] = {
        "monitor.analyse_10k_s": round(analyse_s * scale, 3),
        "monitor.records_per_s": round(records / analyse_s),
        "monitor.charts_report_10k_s": round(statistics.median(chart_times), 3),
        "monitor.bench_records": records,
    }
    if with_s3:
        figures["monitor.read_analyse_10k_from_s3_s"] = round(
            statistics.median(_from_s3(files, records, baseline, s, repeat)) * scale, 3)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true", help="skip the localaws read")
    args = parser.parse_args(argv)
    figures = run(max(100, args.records), max(1, args.repeat), not args.no_s3)
    merge_results(figures)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
