"""A tiny stand-in algorithm for localaws' SageMaker plumbing tests (stdlib only).

Selected through ``LOCALAWS_EXTRA_ALGORITHMS`` by the image ``FAKE_IMAGE``; implements the
algorithm contract of ``localaws.algorithms``:

``train --ml-root DIR``: behaviour chosen by the hyperparameter ``fake_mode``:
  ``ok`` (default) writes ``model/model.json`` (the hyperparameters and every channel's files)
  and ``output/metrics.json``; ``fail`` writes ``output/failure`` and exits 2; ``crash`` exits 3
  with no failure file; ``sleep`` prints a line every 0.1 s for ``fake_seconds`` and, on
  SIGTERM, saves ``model/partial.json`` and exits. ``fake_delay`` sleeps before starting.
``serve --model-dir DIR --host H --port N``: answers ``/ping`` and ``/invocations`` with the
  ``probabilities`` of ``model.json``; 415 for content types other than images/JSON, 500 for the
  body ``boom``. ``model.json`` may ask for ``start_delay`` seconds or ``fail_start``.

Below ``main`` are helpers for the SageMaker tests and ``bench.bench_sagemaker`` (a localaws
server with this algorithm registered, boto3 clients, polling, a generated 3-class PNG
dataset for the real image-classification algorithm); they are never used when it runs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FAKE_IMAGE = "localaws.test/fake-algorithm:1"
ACCEPTED = {"application/x-image", "image/png", "image/jpeg", "application/json"}


def train(root: Path) -> int:
    hyper = json.loads((root / "input/config/hyperparameters.json").read_text())
    channels_config = json.loads((root / "input/config/inputdataconfig.json").read_text())
    mode = hyper.get("fake_mode", "ok")
    time.sleep(float(hyper.get("fake_delay", "0")))
    print(f"fake: starting, mode={mode}, channels={sorted(channels_config)}", flush=True)
    if mode == "fail":
        (root / "output/failure").write_text("ClientError: fake failure requested\n")
        print("fake: failing on purpose", flush=True)
        return 2
    if mode == "crash":
        print("fake: boom", flush=True)
        return 3
    if mode == "sleep":
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        end = time.monotonic() + float(hyper.get("fake_seconds", "60"))
        epoch = 0
        while time.monotonic() < end and not stop:
            print(f"fake: epoch {epoch}", flush=True)
            epoch += 1
            time.sleep(0.1)
        (root / "model/partial.json").write_text(json.dumps({"epochs": epoch}))
        print("fake: stopped by SIGTERM" if stop else "fake: done", flush=True)
        return 0
    data = root / "input/data"
    channels = {
        c.name: sorted(str(p.relative_to(c)) for p in c.rglob("*") if p.is_file())
        for c in sorted(data.iterdir())
    }
    for name, files in channels.items():
        print(f"fake: channel {name}: {len(files)} files", flush=True)
    model = {"hyperparameters": hyper, "channels": channels,
             "probabilities": json.loads(hyper.get("probabilities", "[0.1, 0.2, 0.7]"))}
    (root / "model/model.json").write_text(json.dumps(model))
    (root / "output/metrics.json").write_text(
        json.dumps({"validation:accuracy": 0.9, "train:accuracy": 0.95}))
    print("fake: done", flush=True)
    return 0


def serve(model_dir: Path, host: str, port: int) -> int:
    model = json.loads((model_dir / "model.json").read_text())
    time.sleep(float(model.get("start_delay", 0)))
    if model.get("fail_start"):
        print("fake: cannot load this model", flush=True)
        return 1
    answer = json.dumps(model.get("probabilities", [0.1, 0.2, 0.7])).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/ping":
                self._send(200, b"", "text/plain")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype not in ACCEPTED:
                self._send(415, f"content-type {ctype} not supported".encode(), "text/plain")
            elif body == b"boom":
                self._send(500, b"internal failure", "text/plain")
            else:
                self._send(200, answer, "application/json")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"fake: serving on {host}:{port}", flush=True)
    server.serve_forever()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--ml-root", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--model-dir", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    if args.command == "train":
        return train(Path(args.ml_root))
    return serve(Path(args.model_dir), args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())


# -- helpers for the tests that use this algorithm (not used when it runs) -------------------

HERE = Path(__file__).resolve().parent


def extra_algorithms_env() -> dict[str, str]:
    """Environment that makes a localaws server map FAKE_IMAGE to this module."""
    from localaws.algorithms.registry import EXTRA_ALGORITHMS_ENV

    spec = {FAKE_IMAGE: {"module": Path(__file__).stem, "path": str(HERE)}}
    return {EXTRA_ALGORITHMS_ENV: json.dumps(spec)}


def start_localaws(data_dir: Path, **env: str):
    """A LocalAWSProcess started with FAKE_IMAGE registered (and any extra env)."""
    import pytest

    from localaws.testing import LocalAWSProcess

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**extra_algorithms_env(), **env}.items():
            mp.setenv(key, value)
        return LocalAWSProcess(data_dir).start()


def clients(server, *services: str):
    import boto3

    from localaws.testing import TEST_CREDENTIALS

    session = boto3.session.Session(
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=TEST_CREDENTIALS["AWS_DEFAULT_REGION"])
    return [session.client(s, endpoint_url=server.endpoint_url) for s in services]


def wait_for(fn, done, timeout: float = 60.0, interval: float = 0.1):
    """Call fn until done(result) or the deadline; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(interval)


REAL_IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def colour_png(label: int, seed: int) -> bytes:
    """A 32x32 image of one class: a flat colour with random speckles."""
    import random

    from PIL import Image

    rnd = random.Random(seed)
    img = Image.new("RGB", (32, 32), COLORS[label])
    pixels = img.load()
    for _ in range(60):
        pixels[rnd.randrange(32), rnd.randrange(32)] = tuple(rnd.randrange(256) for _ in "rgb")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def upload_colour_dataset(s3, bucket: str, prefix: str, sizes=(("train", 30),
                                                               ("validation", 15))) -> None:
    for split, count in sizes:
        lines = []
        for i in range(count):
            label = i % 3
            rel = f"class{label}/img{i}.png"
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{split}/{rel}",
                          Body=colour_png(label, i + 1000 * (split == "validation")))
            lines.append(f"{i}\t{label}\t{rel}")
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{split}.lst",
                      Body=("\n".join(lines) + "\n").encode())


def real_algorithm_installed() -> bool:
    from localaws.algorithms import registry

    return registry.resolve(REAL_IMAGE).installed() and Path(
        registry.__file__).with_name("image_classification").joinpath("serve.py").is_file()
