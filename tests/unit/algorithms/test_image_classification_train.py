"""Image-classification training: the container contract on small generated data."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_image_classification_data import make_ml_root, shape_image

from localaws.algorithms.image_classification import train as ic_train
from localaws.algorithms.image_classification.data import load_data
from localaws.algorithms.image_classification.hyperparameters import parse
from localaws.algorithms.image_classification.model import Exported, build

REPO = Path(__file__).resolve().parents[3]
FAST = {"epochs": "6", "mini_batch_size": "32", "seed": "7"}


def run_cli(ml_root: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "localaws.algorithms.image_classification", "train",
         "--ml-root", str(ml_root)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_ml_root(tmp_path_factory.mktemp("ic-train"), FAST)
    proc = run_cli(root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, proc.stdout


def test_cli_writes_metrics_model_and_logs(trained):
    root, stdout = trained
    metrics = json.loads((root / "output" / "metrics.json").read_text())
    assert set(metrics) >= {"train:accuracy", "validation:accuracy", "validation:loss"}
    assert metrics["validation:accuracy"] >= 0.8  # chance is 1/3 on these easy shapes
    assert not (root / "output" / "failure").exists()
    for epoch in range(6):
        for name in ("Train-accuracy", "Validation-accuracy", "Time cost"):
            assert re.search(rf"Epoch\[{epoch}\] {name}=\d+\.\d+", stdout), (epoch, name)
    assert "Training complete: 6 epochs" in stdout
    assert "Channel train: 180 images" in stdout
    meta = json.loads((root / "model" / "model.json").read_text())
    assert meta["format_version"] == 1 and meta["architecture"] == "fastnet"
    assert meta["image_shape"] == [3, 32, 32] and meta["num_classes"] == 3
    assert meta["seed"] == 7 and meta["epochs_run"] == 6
    assert meta["metrics"] == metrics
    assert len(meta["preprocessing"]["mean"]) == 3
    assert (root / "model" / "model.onnx").is_file() and (root / "model" / "model.pt").is_file()


def test_onnx_matches_torch_with_dynamic_batch(trained):
    root, _ = trained
    meta = json.loads((root / "model" / "model.json").read_text())
    assert meta["architecture"] == "fastnet"
    hp = parse({"num_classes": "3", "num_training_samples": "180"})
    net = build(hp)
    net.load_state_dict(torch.load(root / "model" / "model.pt", weights_only=True))
    wrapper = Exported(net.eval(), meta["preprocessing"]["mean"],
                       meta["preprocessing"]["std"]).eval()
    rng = np.random.default_rng(5)
    pixels = np.stack([np.asarray(shape_image(i % 3, rng)).transpose(2, 0, 1)
                       for i in range(7)]).astype(np.float32)
    session = ort.InferenceSession(str(root / "model" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = wrapper(torch.from_numpy(pixels)).numpy()
    for batch in (1, 7):
        got = session.run(None, {"data": pixels[:batch]})[0]
        assert got.shape == (batch, 3)
        np.testing.assert_allclose(got, want[:batch], atol=1e-5)
    np.testing.assert_allclose(want.sum(1), 1, atol=1e-5)
    assert (want.argmax(1) == np.arange(7) % 3).mean() >= 0.7


def _fit(root: Path, **extra: str):
    hp = parse({"num_classes": "3", "num_training_samples": "180", **FAST, **extra})
    train, val = load_data(root, hp, lambda _: None)
    return ic_train.fit(hp, train, val, log=lambda _: None)


def test_same_seed_same_metrics_other_seed_differs(trained):
    root, _ = trained
    a = _fit(root, epochs="2", seed="3")
    b = _fit(root, epochs="2", seed="3")
    c = _fit(root, epochs="2", seed="4")
    assert a.history == b.history
    assert a.history != c.history


@pytest.mark.parametrize("extra", [
    {"num_layers": "20", "optimizer": "sgd", "learning_rate": "0.05",
     "lr_scheduler_step": "1", "lr_scheduler_factor": "0.5"},
    {"num_layers": "18", "optimizer": "adam", "learning_rate": "0.001"},
    {"augmentation_type": "crop_color_transform", "optimizer": "rmsprop",
     "learning_rate": "0.001", "top_k": "2"},
    {"augmentation_type": "crop_color", "image_shape": "3,64,64", "resize": "72"},
    {"image_shape": "1,24,24"},
])
def test_other_architectures_optimizers_and_shapes_train(trained, extra):
    root, _ = trained
    result = _fit(root, epochs="1", **extra)
    assert result.epochs_run == 1 and 0 <= result.metrics["validation:accuracy"] <= 1
    if "top_k" in extra:
        assert "validation:top_k_accuracy_2" in result.metrics


def test_early_stopping_and_checkpoints(trained, tmp_path):
    root, _ = trained
    hp = parse({"num_classes": "3", "num_training_samples": "180", **FAST, "epochs": "30",
                "learning_rate": "0.0", "early_stopping": "True",
                "early_stopping_min_epochs": "2", "early_stopping_patience": "1",
                "checkpoint_frequency": "2"})
    train, val = load_data(root, hp, lambda _: None)
    lines: list[str] = []
    result = ic_train.fit(hp, train, val, log=lines.append, checkpoint_dir=tmp_path)
    assert result.stopped_early and result.epochs_run < 30
    assert any(line.startswith("Early stopping after epoch") for line in lines)
    assert (tmp_path / "checkpoint-epoch-0002.pt").is_file()


def _bad_root(tmp_path: Path, hyperparameters: dict[str, str] | None = None) -> Path:
    return make_ml_root(tmp_path / "ml", hyperparameters, per_class=2, val_per_class=1)


def _lst(root: Path, channel: str = "train") -> Path:
    return root / "input" / "data" / f"{channel}_lst" / f"{channel}.lst"


def _mutate_lst(root: Path, fn) -> None:
    path = _lst(root)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


def _set_label(lines, label):
    i, _, p = lines[0].split("\t")
    return [f"{i}\t{label}\t{p}", *lines[1:]]


def _dup_index(lines):
    _, label, p = lines[1].split("\t")
    return [lines[0], f"{lines[0].split(chr(9))[0]}\t{label}\t{p}", *lines[2:]]


def _missing_file(root):
    (root / "input" / "data" / "train" / "circle" / "train_000.png").unlink()


def _unreadable(root):
    (root / "input" / "data" / "train" / "square" / "train_001.png").write_bytes(b"not a png")


def _no_channel(root):
    shutil.rmtree(root / "input" / "data" / "validation_lst")
    cfg = root / "input" / "config" / "inputdataconfig.json"
    config = json.loads(cfg.read_text())
    del config["validation_lst"]
    cfg.write_text(json.dumps(config))


def _empty_lst(root):
    _lst(root, "validation").write_text("")


def _two_lst(root):
    shutil.copy(_lst(root), _lst(root).with_name("other.lst"))


def _recordio(root):
    cfg = root / "input" / "config" / "inputdataconfig.json"
    config = json.loads(cfg.read_text())
    config["train"]["ContentType"] = "application/x-recordio"
    cfg.write_text(json.dumps(config))


def _escape(root):
    _mutate_lst(root, lambda lines: ["0\t0\t../../config/hyperparameters.json", *lines[1:]])


@pytest.mark.parametrize(("hyper", "mutate", "needle"), [
    ({"epochs": "abc"}, None,
     "ClientError: Invalid value for hyperparameter 'epochs': 'abc' (must be a positive "
     "integer)"),
    ({"bogus": "1"}, None, "ClientError: Unknown hyperparameter 'bogus'"),
    ({"num_training_samples": "7"}, None,
     "ClientError: num_training_samples=7 but the train channel lists 6 images"),
    ({}, lambda r: _mutate_lst(r, lambda ls: _set_label(ls, 3)),
     "label 3 is not below num_classes=3"),
    ({}, lambda r: _mutate_lst(r, lambda ls: _set_label(ls, -2)), "label -2 is negative"),
    ({}, lambda r: _mutate_lst(r, _dup_index), "duplicate index 0"),
    ({}, _missing_file, "file 'circle/train_000.png' is missing"),
    ({}, _unreadable, "cannot read image 'square/train_001.png'"),
    ({}, _no_channel, "Channel 'validation_lst' is required"),
    ({}, _empty_lst, "validation_lst/validation.lst is empty"),
    ({}, _two_lst, "holds 2 .lst files"),
    ({}, _recordio, "ContentType 'application/x-recordio' of channel 'train'"),
    ({}, _escape, "is outside the image channel"),
])
def test_bad_input_fails_with_reason(tmp_path, capsys, hyper, mutate, needle):
    root = _bad_root(tmp_path, hyper)
    if mutate:
        mutate(root)
    assert ic_train.main(root) == 1
    failure = (root / "output" / "failure").read_text()
    assert needle in failure, failure
    assert failure.count("\n") == 1 and failure.startswith("ClientError: ")
    assert needle.split(": ", 1)[-1][:30] in capsys.readouterr().out
    assert not (root / "output" / "metrics.json").exists()


def test_cli_failure_exit_code(tmp_path):
    root = _bad_root(tmp_path, {"optimizer": "adagrad"})
    proc = run_cli(root)
    assert proc.returncode != 0
    assert "ClientError: Invalid value for hyperparameter 'optimizer'" in \
        (root / "output" / "failure").read_text()


def test_sigterm_stops_promptly(tmp_path):
    root = make_ml_root(tmp_path / "ml", {"epochs": "500", "mini_batch_size": "16"},
                        per_class=20, val_per_class=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "localaws.algorithms.image_classification", "train",
         "--ml-root", str(root)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            if "Epoch[0] Time cost" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        rest, _ = proc.communicate(timeout=15)
        assert time.monotonic() - sent < 5
        assert proc.returncode == 128 + signal.SIGTERM
        assert "Received SIGTERM" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
