"""What S3 persistence costs: put+get latency of a 1 KiB object with and without it.

Two localaws servers run side by side (one with ``LOCALAWS_S3_PERSISTENCE=0``) and the
requests alternate between them, so both see the same machine load. Each round trip is a
PutObject of a new key followed by a GetObject of it. The overhead is mostly two fsyncs
(record file + directory), so the disk's own fsync latency is measured alongside; on a
shared disk it swings by an order of magnitude. Also: how long the persistent server takes
to restore what was written, on restart.

    .venv/bin/python -m bench.bench_s3_persistence [--iterations 400]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

from bench.results import merge_results
from localaws.testing import TEST_CREDENTIALS, LocalAWSProcess

PAYLOAD = os.urandom(1024)


def _client(server: LocalAWSProcess):
    return boto3.client(
        "s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1}))


def _round_trip(s3, key: str) -> float:
    start = time.perf_counter()
    s3.put_object(Bucket="bench", Key=key, Body=PAYLOAD)
    body = s3.get_object(Bucket="bench", Key=key)["Body"].read()
    elapsed = time.perf_counter() - start
    assert body == PAYLOAD
    return elapsed


def _start(data_dir: Path, persistence: bool) -> LocalAWSProcess:
    saved = os.environ.get("LOCALAWS_S3_PERSISTENCE")
    os.environ["LOCALAWS_S3_PERSISTENCE"] = "1" if persistence else "0"
    try:
        return LocalAWSProcess(data_dir).start()
    finally:
        if saved is None:
            os.environ.pop("LOCALAWS_S3_PERSISTENCE", None)
        else:
            os.environ["LOCALAWS_S3_PERSISTENCE"] = saved


def _fsync_pair_p50_ms(directory: Path, n: int = 50) -> float:
    """The disk's price of one durable small write: file fsync + rename + dir fsync."""
    directory.mkdir(parents=True, exist_ok=True)
    times = []
    for i in range(n):
        start = time.perf_counter()
        tmp = directory / f"f{i}.tmp"
        with open(tmp, "wb") as f:
            f.write(PAYLOAD)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / f"f{i}")
        fd = os.open(directory, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def run(iterations: int) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory(prefix="bench-s3p-") as tmp:
        on_dir, off_dir = Path(tmp, "on"), Path(tmp, "off")
        fsync_before = _fsync_pair_p50_ms(Path(tmp, "fsync"))
        servers = {"on": _start(on_dir, True), "off": _start(off_dir, False)}
        try:
            clients = {mode: _client(server) for mode, server in servers.items()}
            for s3 in clients.values():
                s3.create_bucket(Bucket="bench")
                for i in range(30):  # warm-up: connections, code paths
                    _round_trip(s3, f"warm/{i}")
            times: dict[str, list[float]] = {"on": [], "off": []}
            for i in range(iterations):
                order = ("on", "off") if i % 2 == 0 else ("off", "on")
                for mode in order:
                    times[mode].append(_round_trip(clients[mode], f"obj/{i:06d}"))
        finally:
            for server in servers.values():
                server.stop()
        fsync_after = _fsync_pair_p50_ms(Path(tmp, "fsync"))
        restarted = _start(on_dir, True)
        try:
            restore = restarted.status()["s3_persistence"]
        finally:
            restarted.stop()

    p50_on, p50_off = _pct(times["on"], 50), _pct(times["off"], 50)
    return {
        "s3_persist_put_get_1k_p50_ms_on": round(p50_on, 2),
        "s3_persist_put_get_1k_p50_ms_off": round(p50_off, 2),
        "s3_persist_put_get_1k_p50_overhead_ms": round(p50_on - p50_off, 2),
        "s3_persist_put_get_1k_p95_ms_on": round(_pct(times["on"], 95), 2),
        "s3_persist_put_get_1k_p95_ms_off": round(_pct(times["off"], 95), 2),
        "s3_persist_put_get_iterations": iterations,
        "s3_persist_fsync_pair_p50_ms": round((fsync_before + fsync_after) / 2, 2),
        "s3_persist_restore_objects": restore["restored_objects"],
        "s3_persist_restore_seconds": restore["restore_seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=400)
    args = parser.parse_args(argv)
    figures = run(max(20, min(args.iterations, 5000)))
    merge_results(figures)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
