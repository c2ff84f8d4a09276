"""The CIFAR-100 python format: read the archive safely, pick classes by name, and turn
the chosen rows into 32x32 RGB PNGs plus SageMaker ``.lst`` manifests.

The archive is ``cifar-100-python/{train,test,meta}``: pickles of dicts with byte-string
keys (``data`` N x 3072 uint8 in channel-major order, ``fine_labels``, ``filenames``;
``meta`` holds ``fine_label_names``). Pickles can run code when loaded, so they are read
with an unpickler that allows only the numpy names a CIFAR pickle needs.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = "cifar-100-python"
SPLITS = ("train", "test")
IMAGE_SIDE = 32
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in a protocol-2 pickle
}


class CifarFormatError(ValueError):
    """The archive is not a usable CIFAR-100 python archive; the message says why."""


class ClassSelectionError(ValueError):
    """The requested classes cannot be taken from this archive; the message says why."""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise CifarFormatError(
            f"refusing to unpickle {module}.{name}: a CIFAR-100 pickle holds only numpy arrays")


def _unpickle(raw: bytes, member: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except CifarFormatError:
        raise
    except Exception as exc:
        raise CifarFormatError(f"member {member!r} is not a readable pickle: {exc}") from None
    if not isinstance(obj, dict):
        raise CifarFormatError(f"member {member!r} holds a {type(obj).__name__}, not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


@dataclass
class Split:
    name: str
    data: np.ndarray  # (N, 3, 32, 32) uint8
    fine_labels: np.ndarray  # (N,) int
    filenames: list[str]

    def __len__(self) -> int:
        return len(self.fine_labels)


@dataclass
class CifarArchive:
    fine_label_names: list[str]
    splits: dict[str, Split]

    def class_counts(self, split: str) -> Counter:
        names = self.fine_label_names
        return Counter(names[i] for i in self.splits[split].fine_labels.tolist())


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _split(raw: dict, name: str) -> Split:
    missing = [k for k in ("data", "fine_labels", "filenames") if k not in raw]
    if missing:
        raise CifarFormatError(f"split {name!r} lacks the keys {missing}: not CIFAR-100 format "
                               "(a CIFAR-10 archive has 'labels' instead of 'fine_labels')")
    data = np.asarray(raw["data"])
    labels = np.asarray(raw["fine_labels"], dtype=np.int64)
    filenames = _text(raw["filenames"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIDE**2:
        raise CifarFormatError(f"split {name!r}: data has shape {data.shape} {data.dtype}, "
                               f"expected (N, {3 * IMAGE_SIDE**2}) uint8")
    if not len(data) == len(labels) == len(filenames):
        raise CifarFormatError(f"split {name!r}: {len(data)} images, {len(labels)} labels and "
                               f"{len(filenames)} file names do not match")
    return Split(name, data.reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE), labels, filenames)


def read_archive(path: Path) -> CifarArchive:
    """Parse a ``cifar-100-python.tar.gz``; any defect raises CifarFormatError."""
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.startswith(ROOT + "/"):
                    leaf = member.name[len(ROOT) + 1:]
                    if leaf in ("meta", *SPLITS):
                        members[leaf] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise CifarFormatError(
            f"archive {Path(path).name} is corrupt or truncated: {exc}") from None
    missing = [m for m in ("meta", *SPLITS) if m not in members]
    if missing:
        raise CifarFormatError(
            f"archive {Path(path).name} is not a CIFAR-100 python archive: no "
            + ", ".join(f"{ROOT}/{m}" for m in missing))
    meta = _unpickle(members["meta"], "meta")
    if "fine_label_names" not in meta:
        raise CifarFormatError("meta lacks 'fine_label_names': not CIFAR-100 format")
    names = _text(meta["fine_label_names"])
    splits = {s: _split(_unpickle(members[s], s), s) for s in SPLITS}
    for split in splits.values():
        if len(split) and (split.fine_labels.min() < 0 or split.fine_labels.max() >= len(names)):
            raise CifarFormatError(f"split {split.name!r} has labels outside 0..{len(names) - 1}")
    return CifarArchive(names, splits)


@dataclass
class LabelledImage:
    index: int  # the CIFAR row index in its split: unique, stable across runs
    label: int  # 0..n-1 in the order the classes were asked for
    filename: str
    pixels: np.ndarray  # (3, 32, 32) uint8


@dataclass
class Selection:
    classes: list[str]
    fine_indices: list[int]
    images: dict[str, list[LabelledImage]] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        return {split: dict(Counter(self.classes[im.label] for im in imgs))
                for split, imgs in self.images.items()}

    def labels_document(self) -> list[dict]:
        return [{"label": i, "class_name": c, "cifar_fine_label": f}
                for i, (c, f) in enumerate(zip(self.classes, self.fine_indices, strict=True))]


def select_classes(archive: CifarArchive, classes: list[str]) -> Selection:
    """Keep the named fine classes, labelled 0..n-1 in the order given."""
    if len(classes) < 2:
        raise ClassSelectionError(f"need at least two classes to classify, got {classes}")
    dupes = sorted(c for c, n in Counter(classes).items() if n > 1)
    if dupes:
        raise ClassSelectionError(f"classes listed twice: {dupes}")
    unknown = [c for c in classes if c not in archive.fine_label_names]
    if unknown:
        raise ClassSelectionError(
            f"unknown CIFAR-100 class name(s) {unknown}; valid names include "
            f"{', '.join(sorted(archive.fine_label_names)[:12])}, ... "
            f"({len(archive.fine_label_names)} in all)")
    fine = [archive.fine_label_names.index(c) for c in classes]
    selection = Selection(list(classes), fine)
    to_label = {f: i for i, f in enumerate(fine)}
    for split_name, split in archive.splits.items():
        rows = np.flatnonzero(np.isin(split.fine_labels, fine))
        present = set(split.fine_labels[rows].tolist())
        empty = [c for c, f in zip(classes, fine, strict=True) if f not in present]
        if empty:
            raise ClassSelectionError(
                f"class(es) {empty} have no images in the archive's {split_name} split "
                f"(it holds {', '.join(sorted(archive.class_counts(split_name)))})")
        selection.images[split_name] = [
            LabelledImage(int(r), to_label[int(split.fine_labels[r])], split.filenames[r],
                          split.data[r]) for r in rows]
    return selection


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "RGB").save(
        buf, format="PNG", optimize=False)
    return buf.getvalue()


def lst_lines(images: list[LabelledImage]) -> str:
    """SageMaker image-classification manifest: ``index<TAB>label<TAB>relative path``."""
    return "".join(f"{im.index}\t{im.label}\t{im.filename}\n" for im in images)


def write_partition(selection: Selection, out_dir: Path, source: dict) -> dict:
    """Write ``{train/, test/, train.lst, test.lst, labels.json}`` to out_dir; return the
    manifest (counts, per-file checksums, source, classes) — not written here, because the
    manifest is what publishes a partition and only the loader may write it, last."""
    out_dir = Path(out_dir)
    files: dict[str, str] = {}
    for split, images in selection.images.items():
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        names = [im.filename for im in images]
        if len(set(names)) != len(names):
            raise CifarFormatError(f"split {split!r} has duplicate file names")
        for im in images:
            data = png_bytes(im.pixels)
            (out_dir / split / im.filename).write_bytes(data)
            files[f"{split}/{im.filename}"] = hashlib.md5(data, usedforsecurity=False).hexdigest()
        lst = lst_lines(images).encode()
        (out_dir / f"{split}.lst").write_bytes(lst)
        files[f"{split}.lst"] = hashlib.md5(lst, usedforsecurity=False).hexdigest()
    labels = json.dumps(selection.labels_document(), indent=2).encode()
    (out_dir / "labels.json").write_bytes(labels)
    files["labels.json"] = hashlib.md5(labels, usedforsecurity=False).hexdigest()
    counts = selection.counts()
    return {
        "format_version": 1,
        "classes": selection.classes,
        "num_classes": len(selection.classes),
        "counts": {s: {"total": len(selection.images[s]), "per_class": counts[s]}
                   for s in selection.images},
        "num_training_samples": len(selection.images["train"]),
        "image_shape": f"3,{IMAGE_SIDE},{IMAGE_SIDE}",
        "source": source,
        "files": files,
    }


def holdout_split(selection: Selection, fraction: float) -> Selection:
    """Replace the archive's test split by a stratified, deterministic ``fraction`` of the
    train rows (the same rows every run); the remaining train rows stay for training."""
    if not 0.0 < fraction < 1.0:
        raise ClassSelectionError(f"holdout fraction must be between 0 and 1, got {fraction}")
    train: list[LabelledImage] = []
    test: list[LabelledImage] = []
    for label in range(len(selection.classes)):
        rows = sorted((im for im in selection.images["train"] if im.label == label),
                      key=lambda im: hashlib.sha256(str(im.index).encode()).hexdigest())
        n_test = max(1, round(len(rows) * fraction))
        if n_test >= len(rows):
            raise ClassSelectionError(f"class {selection.classes[label]!r} has {len(rows)} "
                                      "train images: too few to hold some out")
        test += rows[:n_test]
        train += rows[n_test:]
    out = Selection(selection.classes, selection.fine_indices)
    out.images = {"train": sorted(train, key=lambda im: im.index),
                  "test": sorted(test, key=lambda im: im.index)}
    return out
