"""Small CIFAR-100-format archives generated for tests (the shared real archive is
optional: tests that must not depend on it use these)."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

FINE_NAMES = [f"class_{i:02d}" for i in range(100)]
for _i, _name in {8: "bicycle", 48: "motorcycle", 58: "pickup_truck", 13: "bus",
                  90: "train"}.items():
    FINE_NAMES[_i] = _name


def class_image(label_slot: int, rng: np.random.Generator) -> np.ndarray:
    """An easily learnt 3x32x32 image: each class has its own colour and stripe direction."""
    img = rng.integers(0, 60, size=(3, 32, 32), dtype=np.int16)
    channel = label_slot % 3
    img[channel] += 150
    stripes = np.zeros((32, 32), dtype=np.int16)
    if label_slot % 2:
        stripes[::4, :] = 40
    else:
        stripes[:, ::4] = 40
    img += stripes
    return np.clip(img, 0, 255).astype(np.uint8)


def _split(counts: dict[str, int], rng, offset: int) -> dict:
    data, labels, names = [], [], []
    for slot, (name, n) in enumerate(counts.items()):
        fine = FINE_NAMES.index(name)
        for i in range(n):
            data.append(class_image(slot, rng).reshape(-1))
            labels.append(fine)
            names.append(f"{name}_s_{offset + slot * 10000 + i:06d}.png".encode())
    order = rng.permutation(len(labels))
    return {
        b"data": np.stack(data)[order] if data else np.zeros((0, 3072), np.uint8),
        b"fine_labels": [labels[i] for i in order],
        b"coarse_labels": [0] * len(labels),
        b"filenames": [names[i] for i in order],
        b"batch_label": b"generated",
    }


def make_cifar_archive(path: Path, train: dict[str, int], test: dict[str, int],
                       seed: int = 0, members: dict[str, bytes] | None = None) -> Path:
    """Write a cifar-100-python.tar.gz; ``members`` overrides/adds raw members by leaf."""
    rng = np.random.default_rng(seed)
    raw = {
        "train": pickle.dumps(_split(train, rng, 0), protocol=2),
        "test": pickle.dumps(_split(test, rng, 500000), protocol=2),
        "meta": pickle.dumps({b"fine_label_names": [n.encode() for n in FINE_NAMES],
                              b"coarse_label_names": [b"x"] * 20}, protocol=2),
    }
    raw.update(members or {})
    path = Path(path)
    with tarfile.open(path, "w:gz") as tar:
        for leaf, blob in raw.items():
            info = tarfile.TarInfo(f"cifar-100-python/{leaf}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


SHARED_ARCHIVE = (Path(__file__).resolve().parents[2] / "shared" / "data"
                  / "cifar-100-python-bicycle-motorcycle.tar.gz")
