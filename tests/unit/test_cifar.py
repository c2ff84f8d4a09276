"""The CIFAR-100 format parser and the transform, on generated archives."""

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from ml_workflow import cifar
from tests.factories import make_cifar_archive

CLASSES = ["bicycle", "motorcycle", "pickup_truck"]


@pytest.fixture
def archive_path(tmp_path):
    return make_cifar_archive(tmp_path / "c.tar.gz",
                              train={"bicycle": 6, "motorcycle": 5, "pickup_truck": 4, "bus": 3},
                              test={"bicycle": 2, "motorcycle": 2, "pickup_truck": 2})


def test_selection_labels_in_requested_order_and_pngs_round_trip(archive_path, tmp_path):
    archive = cifar.read_archive(archive_path)
    selection = cifar.select_classes(archive, ["pickup_truck", "bicycle", "motorcycle"])
    assert selection.counts() == {"train": {"pickup_truck": 4, "bicycle": 6, "motorcycle": 5},
                                  "test": {"pickup_truck": 2, "bicycle": 2, "motorcycle": 2}}
    manifest = cifar.write_partition(selection, tmp_path / "out", source={"x": 1})
    out = tmp_path / "out"
    lines = [ln.split("\t") for ln in (out / "train.lst").read_text().splitlines()]
    assert len(lines) == 15 == manifest["num_training_samples"]
    assert len({int(i) for i, _, _ in lines}) == 15  # unique indices
    split = archive.splits["train"]
    for index, label, rel in lines:
        row = int(index)
        assert split.filenames[row] == rel  # named like the original
        fine = int(split.fine_labels[row])
        assert selection.classes[int(label)] == archive.fine_label_names[fine]
        png = Image.open(out / "train" / rel)
        assert png.size == (32, 32) and png.mode == "RGB"
        assert np.array_equal(np.asarray(png).transpose(2, 0, 1), split.data[row])
    assert manifest["classes"] == ["pickup_truck", "bicycle", "motorcycle"]
    assert (out / "labels.json").exists() and set(manifest["files"]) >= {"labels.json",
                                                                          "test.lst"}


def test_real_shared_archive_if_present():
    from tests.factories import SHARED_ARCHIVE
    if not SHARED_ARCHIVE.exists():
        pytest.skip("shared archive not present")
    archive = cifar.read_archive(SHARED_ARCHIVE)
    sel = cifar.select_classes(archive, ["bicycle", "motorcycle"])
    assert {s: len(v) for s, v in sel.images.items()} == {"train": 1000, "test": 200}
    with pytest.raises(cifar.ClassSelectionError, match="pickup_truck.*no images"):
        cifar.select_classes(archive, CLASSES)


def test_unknown_class_is_named(archive_path):
    with pytest.raises(cifar.ClassSelectionError, match="unknown CIFAR-100 class.*'bicycel'"):
        cifar.select_classes(cifar.read_archive(archive_path), ["bicycel", "motorcycle"])


def test_class_without_images_is_named(tmp_path):
    path = make_cifar_archive(tmp_path / "c.tar.gz", train={"bicycle": 3, "motorcycle": 3},
                              test={"bicycle": 1, "motorcycle": 1})
    with pytest.raises(cifar.ClassSelectionError, match=r"\['pickup_truck'\] have no images"):
        cifar.select_classes(cifar.read_archive(path), CLASSES)


def test_truncated_archive(archive_path, tmp_path):
    blob = archive_path.read_bytes()
    bad = tmp_path / "trunc.tar.gz"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(cifar.CifarFormatError, match="corrupt or truncated"):
        cifar.read_archive(bad)


def test_not_gzip_at_all(tmp_path):
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(cifar.CifarFormatError, match="corrupt or truncated"):
        cifar.read_archive(bad)


def test_archive_of_something_else(tmp_path):
    bad = tmp_path / "other.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(cifar.CifarFormatError, match="not a CIFAR-100 python archive"):
        cifar.read_archive(bad)


def test_cifar10_style_pickle_is_rejected(tmp_path):
    blob = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0],
                         b"filenames": [b"a.png"]}, protocol=2)
    path = make_cifar_archive(tmp_path / "c.tar.gz", train={"bicycle": 1}, test={"bicycle": 1},
                              members={"train": blob})
    with pytest.raises(cifar.CifarFormatError, match="fine_labels"):
        cifar.read_archive(path)


def test_malicious_pickle_is_refused_not_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = make_cifar_archive(tmp_path / "c.tar.gz", train={"bicycle": 1}, test={"bicycle": 1},
                              members={"meta": pickle.dumps(Evil(), protocol=2)})
    refused = r"refusing to unpickle (__builtin__|builtins)\.print"
    with pytest.raises(cifar.CifarFormatError, match=refused):
        cifar.read_archive(path)


def test_holdout_is_stratified_and_deterministic(archive_path):
    sel = cifar.select_classes(cifar.read_archive(archive_path), CLASSES)
    a = cifar.holdout_split(sel, 0.34)
    b = cifar.holdout_split(sel, 0.34)
    assert [im.index for im in a.images["test"]] == [im.index for im in b.images["test"]]
    assert a.counts()["test"] == {"bicycle": 2, "motorcycle": 2, "pickup_truck": 1}
    train_idx = {im.index for im in a.images["train"]}
    assert train_idx.isdisjoint({im.index for im in a.images["test"]})
    assert len(train_idx) + len(a.images["test"]) == 15


def test_gzip_of_garbage_tar(tmp_path):
    bad = tmp_path / "g.tar.gz"
    bad.write_bytes(gzip.compress(b"\x00garbage" * 100))
    with pytest.raises(cifar.CifarFormatError):
        cifar.read_archive(bad)
