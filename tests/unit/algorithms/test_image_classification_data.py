"""Image-classification: generated data (shared with the train/serve test files) and fast
unit tests of the hyperparameter, .lst and image-decoding code (no training here).

The data: coloured shapes, 3 classes, 32x32 PNG/JPEG files in an /opt/ml-style directory.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from localaws.algorithms.image_classification import preprocess
from localaws.algorithms.image_classification.data import read_lst
from localaws.algorithms.image_classification.errors import ClientError
from localaws.algorithms.image_classification.hyperparameters import parse

CLASSES = ("circle", "square", "triangle")
COLOURS = ((220, 40, 40), (40, 190, 60), (50, 70, 230))


def shape_image(label: int, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """Class = shape and colour, with a random position, size and noisy background."""
    background = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
    img = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(img)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
    colour = tuple(int(np.clip(c + rng.integers(-30, 30), 0, 255)) for c in COLOURS[label])
    if label == 0:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif label == 1:
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon(((cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)), fill=colour)
    return img


def write_channel(root: Path, name: str, per_class: int, seed: int, fmt: str = "png") -> int:
    """Write ``input/data/<name>`` images (in class subfolders) and ``<name>_lst/<name>.lst``."""
    rng = np.random.default_rng(seed)
    images = root / "input" / "data" / name
    lst_dir = root / "input" / "data" / f"{name}_lst"
    lst_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    index = 0
    for label, cls in enumerate(CLASSES):
        (images / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rel = f"{cls}/{name}_{i:03d}.{fmt}"
            shape_image(label, rng).save(images / rel)
            lines.append(f"{index}\t{label}\t{rel}")
            index += 1
    (lst_dir / f"{name}.lst").write_text("\n".join(lines) + "\n")
    return index


def make_ml_root(root: Path, hyperparameters: dict[str, str] | None = None,
                 per_class: int = 60, val_per_class: int = 15, fmt: str = "png") -> Path:
    """An /opt/ml-style directory; ``num_training_samples`` etc. filled in unless given."""
    n_train = write_channel(root, "train", per_class, seed=1, fmt=fmt)
    write_channel(root, "validation", val_per_class, seed=2, fmt=fmt)
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    hp = {"num_classes": str(len(CLASSES)), "num_training_samples": str(n_train),
          "image_shape": "3,32,32"}
    hp.update(hyperparameters or {})
    (config / "hyperparameters.json").write_text(json.dumps(hp))
    channel = {"ContentType": "application/x-image", "TrainingInputMode": "File",
               "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    (config / "inputdataconfig.json").write_text(json.dumps(
        {c: channel for c in ("train", "validation", "train_lst", "validation_lst")}))
    return root


# ------------------------------------------------------------------------------ unit tests

REQ = {"num_classes": "3", "num_training_samples": "10"}


def test_defaults_and_explicit_values():
    hp = parse(REQ)
    assert hp.architecture == "fastnet" and hp.image_shape == (3, 32, 32)
    assert hp.epochs == 40 and hp.mini_batch_size == 128 and hp.optimizer == "nag"
    hp = parse({**REQ, "image_shape": "3, 64, 48", "epochs": "7", "optimizer": "adam",
                "learning_rate": "0.001", "lr_scheduler_step": "2,5", "num_layers": "20",
                "top_k": "2", "early_stopping": "True", "seed": "9"})
    assert hp.image_shape == (3, 64, 48) and hp.epochs == 7 and hp.optimizer == "adam"
    assert hp.lr_scheduler_step == (2, 5) and hp.architecture == "cifar-resnet-20"
    assert hp.early_stopping is True and hp.top_k == 2 and hp.seed == 9
    assert parse({**REQ, "num_layers": "18"}).architecture == "resnet-18"


def test_accepted_without_effect_is_noted():
    hp = parse({**REQ, "kv_store": "dist_sync", "precision_dtype": "float16",
                "optimizer": "adam", "momentum": "0.5", "early_stopping_patience": "3"})
    text = "\n".join(hp.notes)
    for name in ("kv_store", "precision_dtype", "momentum", "early_stopping_patience"):
        assert f"accepted, no effect here: {name}=" in text


@pytest.mark.parametrize(("extra", "needle"), [
    ({"epochs": "abc"}, "'epochs': 'abc'"),
    ({"epochs": "0"}, "'epochs'"),
    ({"learning_rate": "1.5"}, "'learning_rate'"),
    ({"learning_rate": "nan"}, "'learning_rate'"),
    ({"optimizer": "adagrad"}, "'optimizer'"),
    ({"image_shape": "3,32"}, "'image_shape'"),
    ({"image_shape": "4,32,32"}, "'image_shape'"),
    ({"num_layers": "19"}, "'num_layers'"),
    ({"mini_batch_size": "-4"}, "'mini_batch_size'"),
    ({"augmentation_type": "flip"}, "'augmentation_type'"),
    ({"early_stopping": "maybe"}, "'early_stopping'"),
    ({"beta_1": "1"}, "'beta_1'"),
    ({"top_k": "1"}, "'top_k'"),
    ({"top_k": "4"}, "'top_k'"),
    ({"checkpoint_frequency": "50"}, "'checkpoint_frequency'"),
    ({"resize": "16"}, "'resize'"),
    ({"lr_scheduler_step": "10,5"}, "'lr_scheduler_step'"),
    ({"kv_store": "local"}, "'kv_store'"),
    ({"use_pretrained_model": "1"}, "'use_pretrained_model'"),
    ({"multi_label": "1"}, "'multi_label'"),
    ({"seed": "-1"}, "'seed'"),
    ({"epoch": "3"}, "Unknown hyperparameter 'epoch'; did you mean 'epochs'?"),
])
def test_bad_hyperparameters(extra, needle):
    with pytest.raises(ClientError) as err:
        parse({**REQ, **extra})
    assert needle in str(err.value)
    assert err.value.reason().startswith("ClientError: ")


def test_missing_required():
    with pytest.raises(ClientError, match="Missing required hyperparameter 'num_classes'"):
        parse({"num_training_samples": "3"})


@pytest.mark.parametrize(("text", "needle"), [
    ("0\t0\ta.png\n1\t3\tb.png\n", "label 3 is not below num_classes=3"),
    ("0\t-1\ta.png\n", "label -1 is negative"),
    ("0\t0\ta.png\n0\t1\tb.png\n", "duplicate index 0 (lines 1 and 2)"),
    ("0\t0.5\ta.png\n", "label '0.5' is not an integer"),
    ("x\t0\ta.png\n", "index 'x' is not an integer"),
    ("0 0 a.png\n", "expected index<TAB>label<TAB>path"),
    ("\n\n", "is empty"),
])
def test_bad_lst(tmp_path, text, needle):
    path = tmp_path / "x.lst"
    path.write_text(text)
    with pytest.raises(ClientError) as err:
        read_lst(path, "train_lst/x.lst", 3)
    assert needle in str(err.value) and "train_lst/x.lst" in str(err.value)


def test_lst_float_labels_and_blank_lines(tmp_path):
    path = tmp_path / "x.lst"
    path.write_text("5\t1.000000\tdir/a b.png\r\n\n7\t0\tc.jpg\n")
    entries = read_lst(path, "x", 2)
    assert [(e.index, e.label, e.path) for e in entries] == [(5, 1, "dir/a b.png"),
                                                             (7, 0, "c.jpg")]


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16", "LA", "CMYK"])
def test_preprocess_modes_and_sizes(mode):
    img = shape_image(1, np.random.default_rng(0)).resize((50, 70))
    img = img.convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(img.convert("L"), dtype=np.uint16) * 257)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    pixels = preprocess.load_pixels(_encode(img, fmt), (3, 32, 32))
    assert pixels.shape == (3, 32, 32) and pixels.dtype == np.uint8
    grey = preprocess.load_pixels(_encode(img, fmt), (1, 40, 24), resize=48)
    assert grey.shape == (1, 40, 24)


def test_preprocess_rejects_bad_bytes():
    good = _encode(shape_image(0, np.random.default_rng(0)), "PNG")
    for data, needle in [(b"", "empty"), (b"hello world", "not an image"),
                         (good[: len(good) // 2], "truncated")]:
        with pytest.raises(preprocess.BadImage, match=needle):
            preprocess.load_pixels(data, (3, 32, 32))
    big = _encode(Image.new("L", (6000, 5000)), "PNG")
    with pytest.raises(preprocess.ImageTooLarge):
        preprocess.load_pixels(big, (3, 32, 32))
