"""Training data: channels, ``.lst`` manifests and images (numpy + Pillow, no torch).

Layout (SageMaker's File mode, ``application/x-image`` content type)::

    input/data/train/           images, possibly in subfolders
    input/data/train_lst/       exactly one .lst file: index<TAB>label<TAB>relative/path
    input/data/validation/      images
    input/data/validation_lst/  exactly one .lst file

Paths in a ``.lst`` are relative to the image channel's root. Every inconsistency fails with
a ``ClientError`` naming the file and line: a missing or extra channel, an unsupported
content type, no or several ``.lst`` files, an empty ``.lst``, a malformed line, a duplicate
index, a label outside ``[0, num_classes)``, a listed file that is missing or not an image, a
path leaving the channel, and a train count different from ``num_training_samples``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ClientError
from .hyperparameters import Hyperparameters
from .preprocess import BadImage, decode, to_pixels

IMAGE_CHANNELS = ("train", "validation")
LST_CHANNELS = {"train": "train_lst", "validation": "validation_lst"}
CHANNELS = ("train", "validation", "train_lst", "validation_lst")
CONTENT_TYPES = ("application/x-image", "image/png", "image/jpeg", "image/jpg")


@dataclass(frozen=True)
class Entry:
    index: int
    label: int
    path: str
    line: int


@dataclass
class Split:
    pixels: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    paths: list[str]


def check_channels(ml_root: Path) -> dict[str, Path]:
    """Check ``inputdataconfig.json`` and the channel folders; return channel -> folder."""
    config_path = ml_root / "input" / "config" / "inputdataconfig.json"
    data_root = ml_root / "input" / "data"
    config: dict[str, dict] | None = None
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise ClientError(f"Cannot read inputdataconfig.json: {exc}") from None
        if not isinstance(config, dict):
            raise ClientError("inputdataconfig.json must hold a JSON object of channels")
        for name, spec in config.items():
            if name == "model":
                raise ClientError("Channel 'model' (incremental training) is not supported by "
                                  "localaws' image-classification")
            if name not in CHANNELS:
                raise ClientError(f"Unknown channel '{name}' (expected {', '.join(CHANNELS)})")
            content_type = (spec or {}).get("ContentType")
            if content_type is None:
                continue
            base = str(content_type).split(";")[0].strip().lower()
            if base in ("application/x-recordio", "application/x-recordio-protobuf"):
                raise ClientError(f"ContentType '{content_type}' of channel '{name}' is not "
                                  "supported here: use application/x-image with .lst files")
            if base not in CONTENT_TYPES:
                raise ClientError(f"ContentType '{content_type}' of channel '{name}' is not "
                                  "supported (use application/x-image)")
    channels: dict[str, Path] = {}
    for name in CHANNELS:
        folder = data_root / name
        if config is not None and name not in config:
            raise ClientError(f"Channel '{name}' is required (the image format needs "
                              f"{', '.join(CHANNELS)})")
        if not folder.is_dir():
            raise ClientError(f"Channel '{name}' is missing: no data in {folder}")
        channels[name] = folder
    return channels


def find_lst(folder: Path, channel: str) -> Path:
    found = sorted(p for p in folder.rglob("*.lst") if p.is_file())
    if not found:
        raise ClientError(f"Channel '{channel}' holds no .lst file")
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in found[:5])
        raise ClientError(f"Channel '{channel}' holds {len(found)} .lst files ({names}); "
                          "expected exactly one")
    return found[0]


def read_lst(path: Path, where: str, num_classes: int) -> list[Entry]:
    """Parse and check one ``.lst`` file. ``where`` names it in messages."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"Cannot read {where}: {exc}") from None
    entries: list[Entry] = []
    seen: dict[int, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            raise ClientError(f"{where} line {number}: expected index<TAB>label<TAB>path, got "
                              f"{line[:80]!r}")
        if len(fields) > 3:
            raise ClientError(f"{where} line {number}: {len(fields) - 2} label columns; only "
                              "one label per image is supported (multi_label=0)")
        idx_text, label_text, rel = (f.strip() for f in fields)
        try:
            index = int(idx_text)
        except ValueError:
            raise ClientError(f"{where} line {number}: index {idx_text!r} is not an "
                              "integer") from None
        try:
            label_value = float(label_text)
        except ValueError:
            label_value = float("nan")
        if not label_value == label_value or not float(label_value).is_integer():
            raise ClientError(f"{where} line {number}: label {label_text!r} is not an integer")
        label = int(label_value)
        if label < 0:
            raise ClientError(f"{where} line {number}: label {label} is negative (labels start "
                              "at 0)")
        if label >= num_classes:
            raise ClientError(f"{where} line {number}: label {label} is not below "
                              f"num_classes={num_classes}")
        if index in seen:
            raise ClientError(f"{where}: duplicate index {index} (lines {seen[index]} and "
                              f"{number})")
        seen[index] = number
        if not rel:
            raise ClientError(f"{where} line {number}: empty image path")
        entries.append(Entry(index, label, rel, number))
    if not entries:
        raise ClientError(f"{where} is empty: it lists no images")
    return entries


def _resolve(root: Path, entry: Entry, where: str) -> Path:
    rel = entry.path.replace("\\", "/")
    candidate = (root / rel).resolve()
    if os.path.isabs(rel) or not candidate.is_relative_to(root.resolve()):
        raise ClientError(f"{where} line {entry.line}: path {entry.path!r} is outside the "
                          "image channel")
    if not candidate.is_file():
        raise ClientError(f"{where} line {entry.line}: file {entry.path!r} is missing from "
                          "the image channel")
    return candidate


def load_split(channel: str, image_root: Path, lst_path: Path, lst_channel: str,
               hp: Hyperparameters, workers: int = 2) -> Split:
    where = f"{lst_channel}/{lst_path.name}"
    entries = read_lst(lst_path, where, hp.num_classes)
    files = [_resolve(image_root, e, where) for e in entries]

    def load(i: int) -> np.ndarray:
        entry = entries[i]
        try:
            data = files[i].read_bytes()
            return to_pixels(decode(data), hp.image_shape, hp.resize)
        except (BadImage, OSError) as exc:
            raise ClientError(f"{where} line {entry.line}: cannot read image {entry.path!r} in "
                              f"channel '{channel}': {exc}") from None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = list(pool.map(load, range(len(entries))))
    pixels = np.stack(arrays)
    labels = np.asarray([e.label for e in entries], dtype=np.int64)
    return Split(pixels, labels, [e.path for e in entries])


def load_data(ml_root: Path, hp: Hyperparameters,
              log: Callable[[str], None]) -> tuple[Split, Split]:
    channels = check_channels(ml_root)
    splits = {}
    for channel in IMAGE_CHANNELS:
        lst_channel = LST_CHANNELS[channel]
        lst_path = find_lst(channels[lst_channel], lst_channel)
        split = load_split(channel, channels[channel], lst_path, lst_channel, hp,
                           workers=os.cpu_count() or 1)
        counts = np.bincount(split.labels, minlength=hp.num_classes)
        log(f"Channel {channel}: {len(split.labels)} images listed in {lst_channel}/"
            f"{lst_path.name}; images per class: {counts.tolist()}")
        splits[channel] = split
    train = splits["train"]
    if len(train.labels) != hp.num_training_samples:
        raise ClientError(f"num_training_samples={hp.num_training_samples} but the train "
                          f"channel lists {len(train.labels)} images")
    return train, splits["validation"]
