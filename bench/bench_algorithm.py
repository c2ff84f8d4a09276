"""Benchmark localaws' image-classification algorithm on the shared two-class archive.

Builds PNG + .lst channels from ``../shared/data/cifar-100-python-bicycle-motorcycle.tar.gz``
(train channel: the 1000 train rows; validation channel: the 200 test rows, as the reference
notebook does, so the validation accuracy a job reports is the test accuracy), trains with
only the notebook's hyperparameters (``image_shape=3,32,32``, ``num_classes``,
``num_training_samples``) plus ``seed`` for each seed, serves the first model and measures:

    train.test_accuracy       mean over seeds of the job's validation (= test) accuracy
    train.test_accuracy_std   population std over seeds
    train.seconds             mean wall time of one ``train`` process
    serve.model_p50_ms        median time of one image through the ONNX model (1 thread)
    serve.server_start_s      process start -> first ``/ping`` 200
    serve.rss_mb              server RSS after 200 requests
    serve.http_p50_ms         median ``POST /invocations`` round trip (one PNG, keep-alive)

Prints the JSON dict; ``--out FILE`` merges it (flat keys) into that JSON file.
``--compare-torch`` also measures serving the same model with torch eager (start-up, RSS,
p50) and prints that to stderr only. The machine may be shared: timings are noisy.

    .venv/bin/python bench/bench_algorithm.py [--seeds 0,1,2] [--out FILE] [--compare-torch]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import pickle
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar-100-python-bicycle-motorcycle.tar.gz"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
MODULE = "localaws.algorithms.image_classification"


def read_archive(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """``{"train": (pixels N,3,32,32, labels), "test": ...}`` with labels 0..k-1, names."""
    with tarfile.open(path) as tf:
        def load(name: str) -> dict:
            member = tf.extractfile(f"cifar-100-python/{name}")
            if member is None:
                raise SystemExit(f"{path} lacks cifar-100-python/{name}")
            return pickle.load(member, encoding="bytes")

        meta = load("meta")
        raw = {split: load(split) for split in ("train", "test")}
    fine_names = [n.decode() for n in meta[b"fine_label_names"]]
    present = sorted(set(raw["train"][b"fine_labels"]))
    splits = {}
    for split, d in raw.items():
        pixels = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray([present.index(f) for f in d[b"fine_labels"]], dtype=np.int64)
        splits[split] = (pixels, labels)
    return splits, [fine_names[f] for f in present]


def write_channels(data_root: Path, splits: dict, names: list[str]) -> None:
    for split, channel in (("train", "train"), ("test", "validation")):
        pixels, labels = splits[split]
        lines = []
        for i, (img, label) in enumerate(zip(pixels, labels, strict=True)):
            rel = f"{names[label]}/{split}_{i:05d}.png"
            out = data_root / channel / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0), "RGB").save(out)
            lines.append(f"{i}\t{label}\t{rel}")
        lst = data_root / f"{channel}_lst" / f"{channel}.lst"
        lst.parent.mkdir(parents=True, exist_ok=True)
        lst.write_text("\n".join(lines) + "\n")


def make_ml_root(root: Path, data_root: Path, hyperparameters: dict[str, str]) -> Path:
    shutil.copytree(data_root, root / "input" / "data")
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    channel = {"ContentType": "application/x-image", "TrainingInputMode": "File"}
    (config / "inputdataconfig.json").write_text(json.dumps(
        {c: channel for c in ("train", "validation", "train_lst", "validation_lst")}))
    return root


def train_once(root: Path) -> tuple[float, dict, str]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", MODULE, "train", "--ml-root", str(root)],
                          cwd=REPO, env=ENV, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                         f"{proc.stderr[-4000:]}")
    return seconds, json.loads((root / "output" / "metrics.json").read_text()), proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.transpose(1, 2, 0), "RGB").save(buf, "PNG")
    return buf.getvalue()


def measure_server(model_dir: Path, images: list[bytes], labels: np.ndarray) -> dict:
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", MODULE, "serve", "--model-dir",
                             str(model_dir), "--port", str(port)], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit(f"server exited: {proc.stderr.read().decode()}") from None
                time.sleep(0.01)
            finally:
                conn.close()
        start_s = time.monotonic() - started
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times, right = [], 0
        for data, label in zip(images, labels, strict=True):
            tick = time.perf_counter()
            conn.request("POST", "/invocations", body=data,
                         headers={"Content-Type": "image/png"})
            body = conn.getresponse().read()
            times.append(time.perf_counter() - tick)
            right += int(np.argmax(json.loads(body)) == label)
        conn.close()
        return {"serve.server_start_s": round(start_s, 3),
                "serve.rss_mb": round(rss_mb(proc.pid), 1),
                "serve.http_p50_ms": round(statistics.median(times) * 1000, 3),
                "http_accuracy": right / len(labels)}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def measure_model(model_dir: Path, pixels: np.ndarray, runs: int = 500) -> float:
    sys.path.insert(0, str(REPO))
    from localaws.algorithms.image_classification.serve import Model

    model = Model(model_dir, threads=1)
    x = pixels[:1]
    for _ in range(20):
        model.run(x)
    times = []
    for i in range(runs):
        x = pixels[i % len(pixels)][None]
        tick = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - tick)
    return statistics.median(times) * 1000


# One process per runtime: time from process start to the first answer, RSS, p50 (1 thread).
_PROBE = r"""
import json, sys, time, resource
t0 = float(sys.argv[3])
import numpy as np
runtime, model_dir = sys.argv[1], sys.argv[2]
x = np.load(model_dir + "/../probe.npy")
if runtime == "torch":
    import torch
    torch.set_num_threads(1)
    from localaws.algorithms.image_classification.hyperparameters import parse
    from localaws.algorithms.image_classification.model import Exported, build
    meta = json.load(open(model_dir + "/model.json"))
    hp = parse({"num_classes": str(meta["num_classes"]), "num_training_samples": "1",
                "image_shape": ",".join(map(str, meta["image_shape"])),
                **({"num_layers": str(meta["num_layers"])} if meta["num_layers"] else {})})
    net = build(hp)
    net.load_state_dict(torch.load(model_dir + "/model.pt", weights_only=True))
    model = Exported(net.eval(), meta["preprocessing"]["mean"], meta["preprocessing"]["std"])
    model.eval()
    def run(a):
        with torch.inference_mode():
            return model(torch.from_numpy(a)).numpy()
else:
    from localaws.algorithms.image_classification.serve import Model
    m = Model(model_dir, threads=1)
    run = m.run
run(x[:1].astype(np.float32))
ready = time.time() - t0
times = []
for i in range(300):
    a = x[i % len(x)][None].astype(np.float32)
    tick = time.perf_counter(); run(a); times.append(time.perf_counter() - tick)
times.sort()
rss = int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) / 1024
print(json.dumps({"ready_s": round(ready, 3), "rss_mb": round(rss, 1),
                  "p50_ms": round(times[len(times) // 2] * 1000, 3)}))
"""


def probe(runtime: str, model_dir: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, runtime, str(model_dir),
                           repr(time.time())], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, help="merge the results into this JSON file")
    parser.add_argument("--compare-torch", action="store_true",
                        help="also measure torch-eager serving (printed to stderr)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if not args.archive.exists():
        raise SystemExit(f"archive not found: {args.archive}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    splits, names = read_archive(args.archive)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ic-"))
    try:
        data_root = tmp / "data"
        write_channels(data_root, splits, names)
        n_train = len(splits["train"][1])
        accs, secs, model_dirs = [], [], []
        for seed in seeds:
            hp = {"image_shape": "3,32,32", "num_classes": str(len(names)),
                  "num_training_samples": str(n_train), "seed": str(seed)}
            root = make_ml_root(tmp / f"job-{seed}", data_root, hp)
            seconds, metrics, _ = train_once(root)
            accs.append(metrics["validation:accuracy"])
            secs.append(seconds)
            model_dirs.append(root / "model")
            print(f"seed {seed}: test accuracy {metrics['validation:accuracy']:.4f}, "
                  f"train {seconds:.1f} s", file=sys.stderr, flush=True)
        test_pixels, test_labels = splits["test"]
        results = {
            "train.test_accuracy": round(statistics.fmean(accs), 4),
            "train.test_accuracy_std": round(statistics.pstdev(accs), 4),
            "train.seconds": round(statistics.fmean(secs), 2),
            "serve.model_p50_ms": round(measure_model(model_dirs[0],
                                                      test_pixels.astype(np.float32)), 3),
        }
        served = measure_server(model_dirs[0], [png(p) for p in test_pixels], test_labels)
        http_accuracy = served.pop("http_accuracy")
        results.update(served)
        print(f"accuracies per seed {accs}; served model 0 over HTTP: {http_accuracy:.4f}",
              file=sys.stderr, flush=True)
        if args.compare_torch:
            np.save(model_dirs[0].parent / "probe.npy", test_pixels[:64])
            for runtime in ("onnxruntime", "torch"):
                print(f"probe {runtime}: {json.dumps(probe(runtime, model_dirs[0]))}",
                      file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(json.dumps(results, indent=2))
    if args.out:
        merged = json.loads(args.out.read_text()) if args.out.exists() else {}
        merged.update(results)
        args.out.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
