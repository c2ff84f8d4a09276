"""Image-classification serving: the built-in container's HTTP contract, bad input included."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_image_classification_data import make_ml_root, shape_image

from localaws.algorithms.image_classification import train as ic_train
from localaws.algorithms.image_classification.data import load_data
from localaws.algorithms.image_classification.hyperparameters import parse

REPO = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = make_ml_root(tmp_path_factory.mktemp("ic-serve"))
    hp = parse({"num_classes": "3", "num_training_samples": "180", "epochs": "4",
                "mini_batch_size": "32", "seed": "1"})
    train, val = load_data(root, hp, lambda _: None)
    result = ic_train.fit(hp, train, val, log=lambda _: None)
    out = root / "model"
    ic_train.write_model(result, hp, out, val, lambda _: None)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(model_dir):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "localaws.algorithms.image_classification", "serve",
         "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _ping(port) == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "server did not answer /ping"
            time.sleep(0.05)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def sample(label: int = 0, seed: int = 11) -> Image.Image:
    return shape_image(label, np.random.default_rng(seed))


@pytest.mark.parametrize(("make", "fmt", "ctype"), [
    (lambda: sample(0), "PNG", "image/png"),
    (lambda: sample(1), "JPEG", "image/jpeg"),
    (lambda: sample(2), "PNG", "application/x-image"),
    (lambda: sample(0).convert("L"), "PNG", "application/x-image"),
    (lambda: sample(1).convert("RGBA"), "PNG", "image/png"),
    (lambda: sample(2).convert("P"), "PNG", "image/png"),
    (lambda: sample(0).resize((97, 61)), "JPEG", "image/jpeg; charset=binary"),
    (lambda: sample(1).resize((8, 8)), "PNG", "IMAGE/PNG"),
])
def test_invocations_return_probabilities(server, make, fmt, ctype):
    port, _ = server
    status, content_type, body = request(port, "POST", "/invocations", encode(make(), fmt),
                                         {"Content-Type": ctype})
    assert status == 200, body
    assert content_type == "application/json"
    probs = json.loads(body)
    assert isinstance(probs, list) and len(probs) == 3
    assert abs(sum(probs) - 1) < 1e-4 and all(0 <= p <= 1 for p in probs)


def test_predictions_are_mostly_right(server):
    port, _ = server
    right = 0
    for i in range(12):
        data = encode(sample(i % 3, seed=100 + i))
        _, _, body = request(port, "POST", "/invocations", data, {"Content-Type": "image/png"})
        right += int(np.argmax(json.loads(body)) == i % 3)
    assert right >= 9


def _bad_cases():
    good = encode(sample(0))
    huge_pixels = encode(Image.new("L", (6000, 5000)))
    return [
        ("not an image", "POST", "/invocations", b"hello, not an image",
         {"Content-Type": "image/png"}, 400, "not an image"),
        ("truncated", "POST", "/invocations", good[: len(good) // 2],
         {"Content-Type": "image/png"}, 400, "truncated"),
        ("wrong type", "POST", "/invocations", good, {"Content-Type": "text/csv"}, 415,
         "Content-Type 'text/csv' is not supported"),
        ("no type", "POST", "/invocations", good, {"Content-Type": ""}, 415,
         "Content-Type header is missing"),
        ("empty", "POST", "/invocations", b"", {"Content-Type": "image/png"}, 400,
         "request body is empty"),
        ("oversized", "POST", "/invocations", b"\0" * (6 * 1024 * 1024 + 1),
         {"Content-Type": "image/png"}, 413, "exceeds the limit"),
        ("too many pixels", "POST", "/invocations", huge_pixels,
         {"Content-Type": "image/png"}, 413, "larger than the limit"),
        ("get invocations", "GET", "/invocations", None, {}, 405, "use POST"),
        ("unknown path", "GET", "/nope", None, {}, 404, "no such path"),
        ("post ping", "POST", "/ping", b"x", {"Content-Type": "image/png"}, 405, "no POST"),
        ("put", "PUT", "/invocations", b"x", {}, 405, "not supported"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_requests_get_4xx_and_server_survives(server, case):
    port, proc = server
    _, method, path, body, headers, want, needle = case
    status, content_type, text = request(port, method, path, body, headers)
    assert status == want, text
    assert content_type == "application/json"
    payload = json.loads(text)
    assert needle in payload["error"] and payload["status"] == want
    assert proc.poll() is None and _ping(port) == 200


def test_missing_content_length_and_chunked(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\r\n")
        assert b" 411 " in s.recv(4096).split(b"\r\n")[0]
    data = encode(sample(1))
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 500]), data[i:i + 500])
                      for i in range(0, len(data), 500)) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    assert len(json.loads(body)) == 3


def test_keep_alive_and_concurrent_clients(server):
    port, _ = server
    data = encode(sample(2))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(3):  # one connection, several requests (HTTP/1.1 keep-alive)
            conn.request("POST", "/invocations", body=data, headers={"Content-Type": "image/png"})
            resp = conn.getresponse()
            assert resp.status == 200 and len(json.loads(resp.read())) == 3
    finally:
        conn.close()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: request(port, "POST", "/invocations", data,
                                                  {"Content-Type": "image/png"})[0], range(16)))
    assert results == [200] * 16


def test_execution_parameters(server):
    port, _ = server
    status, _, body = request(port, "GET", "/execution-parameters")
    assert status == 200 and json.loads(body)["MaxPayloadInMB"] == 6


def test_server_does_not_import_torch(model_dir):
    code = ("import sys\n"
            "from localaws.algorithms.image_classification.serve import Model\n"
            f"m = Model({str(model_dir)!r})\n"
            "assert 'torch' not in sys.modules, 'serve imported torch'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_bad_model_dir_fails_at_start(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "localaws.algorithms.image_classification", "serve",
         "--model-dir", str(tmp_path), "--port", str(_free_port())],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "model.json is missing" in proc.stderr
