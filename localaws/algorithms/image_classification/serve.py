"""Serving: ``python -m localaws.algorithms.image_classification serve --model-dir DIR ...``.

The built-in container's contract on one threaded HTTP server (stdlib), running the
exported ``model.onnx`` with onnxruntime + numpy + Pillow; torch is never imported:

- ``GET /ping``: 200 once the model is loaded (the port is bound only then).
- ``POST /invocations`` with ``Content-Type`` ``application/x-image``, ``image/png`` or
  ``image/jpeg`` and one encoded image as the body: 200 ``application/json``, the list of
  ``num_classes`` class probabilities in label order. The image is converted to RGB (or grey)
  and resized as in training (see ``preprocess``). The ``Accept`` header is not needed: the
  answer is always JSON.
- ``GET /execution-parameters``: batch transform hints (one record per request, 6 MB).

Bad requests get a 4xx with a JSON body ``{"error": "...", "status": N}`` naming the problem,
and the server carries on: a missing or other content type (415), an empty body (400), a body
over 6 MiB (413), a missing length (411), bytes that are not an image or are truncated (400),
an image over ``preprocess.MAX_PIXELS`` pixels (413), an unknown path (404) or method (405).
No line is logged per request.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import FORMAT_VERSION
from .preprocess import BadImage, ImageTooLarge, load_pixels

MAX_BODY = 6 * 1024 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024  # larger bodies are not read: the connection is closed
CONTENT_TYPES = ("application/x-image", "image/png", "image/jpeg")


class ModelError(RuntimeError):
    """The model directory is unusable."""


class Model:
    """``model.json`` + ``model.onnx`` from an extracted model.tar.gz."""

    def __init__(self, model_dir: Path | str, threads: int = 1) -> None:
        model_dir = Path(model_dir)
        meta_path = model_dir / "model.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise ModelError(f"{meta_path} is missing: not an image-classification model "
                             "directory") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {meta_path}: {exc}") from None
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelError(f"model.json format_version {version!r} is not supported (this "
                             f"server reads up to {FORMAT_VERSION})")
        try:
            onnx_meta = meta["onnx"]
            self.image_shape = tuple(int(v) for v in meta["image_shape"])
            self.num_classes = int(meta["num_classes"])
            self.resize = meta.get("preprocessing", {}).get("resize")
            onnx_path = model_dir / onnx_meta["file"]
            self.input_name = onnx_meta["input"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model.json lacks a valid field: {exc}") from None
        if len(self.image_shape) != 3:
            raise ModelError(f"model.json image_shape {self.image_shape} is not C,H,W")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if threads > 1:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(onnx_path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load {onnx_path}: {exc}") from None
        self.meta = meta

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8`` or float pixels ``(N, C, H, W)`` -> probabilities ``(N, num_classes)``."""
        data = np.ascontiguousarray(pixels, dtype=np.float32)
        return self.session.run(None, {self.input_name: data})[0]

    def predict(self, body: bytes) -> list[float]:
        pixels = load_pixels(body, self.image_shape, self.resize)  # type: ignore[arg-type]
        return [float(p) for p in self.run(pixels[None])[0]]


class _Reject(Exception):
    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


class Handler(BaseHTTPRequestHandler):
    server_version = "localaws-image-classification/1"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers + body as two writes wait ~40 ms (Nagle)
    model: Model  # set on the subclass made by make_server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        return  # no per-request logging

    # -- responses
    def _send(self, status: int, body: bytes, content_type: str, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: object, close: bool = False) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", close)

    def _error(self, status: int, message: str, close: bool = False) -> None:
        self._json(status, {"error": message, "status": status}, close)

    # -- body
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise _Reject(HTTPStatus.LENGTH_REQUIRED, "Content-Length header is required",
                          close=True)
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            raise _Reject(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {length_text!r}",
                          close=True) from None
        if length > MAX_BODY:
            # Read and drop the body (up to a bound) so that the client, still sending,
            # sees the 413 instead of a reset connection.
            close = length > DRAIN_LIMIT or not self._discard(length)
            raise _Reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                          f"request body of {length} bytes exceeds the limit of {MAX_BODY} "
                          "bytes (6 MB)", close=close)
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise _Reject(HTTPStatus.BAD_REQUEST, f"request body ended after {len(body)} of "
                          f"{length} bytes", close=True)
        return body

    def _discard(self, length: int) -> bool:
        left = length
        while left > 0:
            got = self.rfile.read(min(left, 1 << 16))
            if not got:
                return False
            left -= len(got)
        return True

    def _discard_declared_body(self) -> bool:
        """Drop a small declared body before an early error; False: close instead."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return False
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return False
        return 0 <= length <= DRAIN_LIMIT and self._discard(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _Reject(HTTPStatus.BAD_REQUEST, "malformed chunked body",
                              close=True) from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise _Reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"request body exceeds the limit of {MAX_BODY} bytes (6 MB)",
                              close=True)
            parts.append(self.rfile.read(size))
            self.rfile.readline(16)

    # -- routes
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path = self.path.split("?")[0]
        if path == "/ping":
            self._send(HTTPStatus.OK, b"", "text/plain")
        elif path == "/execution-parameters":
            self._json(HTTPStatus.OK, {"MaxConcurrentTransforms": max(1, os.cpu_count() or 1),
                                       "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6})
        elif path == "/invocations":
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST for /invocations")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such path: {path}")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        try:
            if path != "/invocations":
                status = HTTPStatus.METHOD_NOT_ALLOWED if path in (
                    "/ping", "/execution-parameters") else HTTPStatus.NOT_FOUND
                raise _Reject(status, f"no POST handler for {path} (use POST /invocations)",
                              close=not self._discard_declared_body())
            raw_type = self.headers.get("Content-Type")
            body = self._read_body()
            if raw_type is None or not raw_type.strip():
                raise _Reject(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                              "Content-Type header is missing (use one of "
                              + ", ".join(CONTENT_TYPES) + ")")
            content_type = raw_type.split(";")[0].strip().lower()
            if content_type not in CONTENT_TYPES:
                raise _Reject(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                              f"Content-Type {raw_type!r} is not supported (use one of "
                              + ", ".join(CONTENT_TYPES) + ")")
            if not body:
                raise _Reject(HTTPStatus.BAD_REQUEST, "request body is empty: send one image")
            try:
                probabilities = self.model.predict(body)
            except ImageTooLarge as exc:
                raise _Reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc)) from None
            except BadImage as exc:
                raise _Reject(HTTPStatus.BAD_REQUEST, f"invalid image: {exc}") from None
        except _Reject as reject:
            self._error(reject.status, reject.message, reject.close)
            return
        except Exception as exc:  # keep serving whatever happened
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"inference failed: {type(exc).__name__}: {exc}", close=True)
            return
        self._json(HTTPStatus.OK, probabilities)

    def _not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} is not supported",
                    close=not self._discard_declared_body())

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def make_server(model: Model, host: str, port: int) -> Server:
    handler = type("BoundHandler", (Handler,), {"model": model})
    return Server((host, port), handler)


def _threads(value: int | None) -> int:
    if value is not None:
        return max(1, value)
    env = os.environ.get("LOCALAWS_IC_SERVE_THREADS", "")
    return max(1, int(env)) if env.isdigit() else 1


def main(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8080,
         threads: int | None = None) -> int:
    started = time.monotonic()
    try:
        model = Model(model_dir, _threads(threads))
        server = make_server(model, host, port)
    except ModelError as exc:
        print(f"ModelError: {exc}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc}", file=sys.stderr, flush=True)
        return 1

    def stop(signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever to return: call it off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    bound_host, bound_port = server.server_address[:2]
    print(f"Serving {model.meta.get('architecture', 'model')} ({model.num_classes} classes, "
          f"image_shape {','.join(map(str, model.image_shape))}) on http://{bound_host}:"
          f"{bound_port} (ready in {time.monotonic() - started:.2f} s)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    print("Server stopped", flush=True)
    return 0
