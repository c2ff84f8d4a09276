"""One real stack (localaws + Airflow standalone on free ports) shared by the end-to-end
tests, fed a small generated 3-class archive; stopped, with every child, at the end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ml_workflow import cifar
from tests.factories import make_cifar_archive

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from stack import Stack  # noqa: E402

CLASSES = ("bicycle", "motorcycle", "pickup_truck")
TRAIN_PER_CLASS, TEST_PER_CLASS = 40, 8


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    from localaws.testing import free_port

    work = tmp_path_factory.mktemp("e2e")
    archive = make_cifar_archive(work / "cifar.tar.gz",
                                 train={c: TRAIN_PER_CLASS for c in CLASSES},
                                 test={c: TEST_PER_CLASS for c in CLASSES})
    env = {"CIFAR100_SOURCE": str(archive), "CIFAR100_MD5": cifar.md5_of(archive),
           "ML_WORKFLOW_CLASSES": ",".join(CLASSES), "ML_WORKFLOW_POLL_INTERVAL_S": "1",
           "ML_WORKFLOW_RETRY_DELAY_S": "2", "ML_WORKFLOW_MIN_ACCURACY": "0.5"}
    s = Stack(airflow_home=work / "airflow", localaws_dir=work / "localaws",
              localaws_port=free_port(), api_port=free_port(), extra_env=env)
    s.up()
    try:
        yield s
    finally:
        s.down()
    assert not any(s._running(name) for name in ("airflow", "localaws"))
