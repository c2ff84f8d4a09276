"""SageMaker real-time endpoints that really serve, and ``sagemaker-runtime InvokeEndpoint``.

``CreateEndpoint`` keeps moto's record (status ``Creating``) and, in a background thread, for
each production variant of the endpoint config: downloads and extracts the model's
``ModelDataUrl``, picks the algorithm from the model's image (``localaws.algorithms.registry``),
starts ``python -m <module> serve --model-dir DIR --host 127.0.0.1 --port N`` (with the
container's ``Environment``) and waits for ``GET /ping`` (``LOCALAWS_ENDPOINT_READY_TIMEOUT``
seconds, default 180). Then the endpoint is ``InService``, or ``Failed`` with a
``FailureReason``.
The server's output goes to CloudWatch Logs group ``/aws/sagemaker/Endpoints/<endpoint>``.

``UpdateEndpoint`` (missing in moto) starts the new config's servers next to the old ones,
switches the route atomically once they answer ``/ping``, then drains and stops the old ones:
no request fails in between. If the new servers fail, the old ones keep serving and the
endpoint goes back to ``InService`` with the ``FailureReason`` set (SageMaker's rollback).
``DeleteEndpoint`` flushes Data Capture and stops the servers. Duplicate model, endpoint
config and endpoint names are refused with SageMaker's messages.

``InvokeEndpoint`` proxies the body to the variant's ``/invocations`` over a keep-alive
connection pool and returns the model's body and content type; model errors come back as
``ModelError`` (424, ``OriginalStatusCode``, ``OriginalMessage``) like SageMaker; bodies over
6 MB and unknown endpoints get SageMaker's errors. Successful invocations go to Data Capture
(``sagemaker_capture``). InvokeEndpoint requests are answered straight from the WSGI environ,
before moto's dispatcher (``_install_fast_path``); requests that path cannot read (unsigned,
no Content-Length) still reach the patched moto response method.

Endpoints survive a restart of localaws: models, endpoint configs and endpoints are saved in
``<data dir>/sagemaker/hosting/state.json`` with the extracted model directories, and come
back at start-up (``Creating``, then ``InService`` once their servers answer again).
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import queue
import random
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from localaws.algorithms import registry
from localaws.services.sagemaker_capture import CaptureWriter, flush_all, start_flusher
from localaws.services.sagemaker_common import (
    LogStream,
    S3Error,
    add_status_section,
    free_port,
    parse_s3_uri,
    s3_get,
    utcnow,
)

log = logging.getLogger("localaws.sagemaker")

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # sagemaker-runtime's limit on a request body
INVOKE_TIMEOUT_SECONDS = 60.0  # SageMaker gives a container 60 s to answer
READY_TIMEOUT_SECONDS = float(os.environ.get("LOCALAWS_ENDPOINT_READY_TIMEOUT", "180"))
DRAIN_TIMEOUT_SECONDS = 65.0
LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"

_endpoints: dict[tuple[str, str, str], _Endpoint] = {}
_endpoints_lock = threading.Lock()
_runtime = None
_store: _StateStore | None = None
_shutting_down = threading.Event()


class _DeployFailure(Exception):
    """A variant could not be brought up; ``str()`` is the endpoint's FailureReason."""


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class _Connection(http.client.HTTPConnection):
    """Keep-alive connection to a model server, tuned for small request/response pairs."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def quickack(self) -> None:
        # A server that writes headers and body in two sends (http.server does) has its body
        # held back by Nagle until our delayed ACK (~40 ms) on a reused connection: ACK now.
        if _QUICKACK is not None and self.sock is not None:
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass


class ModelServer:
    """One ``serve`` child process of an algorithm, and a keep-alive pool to it."""

    def __init__(self, runtime, algorithm: registry.Algorithm, model_dir: Path,
                 logs: LogStream, environment: dict[str, str] | None = None) -> None:
        self.runtime, self.algorithm = runtime, algorithm
        self.model_dir, self.logs = model_dir, logs
        self.environment = {str(k): str(v) for k, v in (environment or {}).items()}
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._pump: threading.Thread | None = None
        self._pool: queue.LifoQueue[_Connection] = queue.LifoQueue()
        self._cond = threading.Condition()
        self._inflight = 0
        self._closing = False

    def start(self) -> None:
        self.port = free_port(self.host)
        self.proc = self.runtime.popen(
            self.algorithm.serve_command(self.model_dir, self.host, self.port),
            cwd=str(self.model_dir), env={**self.algorithm.env(), **self.environment},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
            errors="replace", bufsize=1)
        self._pump = self.logs.pump(self.proc.stdout)

    def wait_ready(self, deadline: float, cancelled: threading.Event) -> str | None:
        """None once ``/ping`` answers 200, else why not."""
        while time.monotonic() < deadline and not cancelled.is_set():
            if self.proc.poll() is not None:
                self._pump.join(timeout=5)  # its last lines are the reason
                last = self.logs.tail[-1] if self.logs.tail else ""
                return (f"the model server exited with code {self.proc.returncode}"
                        + (f"; last output: {last[:400]}" if last else ""))
            conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
            try:
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    return None
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.05)
        return "the model server did not answer /ping in time"

    def acquire(self) -> bool:
        """Count a request in; False once the server is draining (pick another route)."""
        with self._cond:
            if self._closing:
                return False
            self._inflight += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._inflight -= 1
            if self._inflight <= 0:
                self._cond.notify_all()

    def invoke(self, body: bytes, headers: dict[str, str]
               ) -> tuple[int, str | None, bytes, str | None]:
        """(status, content type, body, custom attributes); raises OSError/TimeoutError."""
        for attempt in range(2):
            try:
                conn = self._pool.get_nowait()
                reused = True
            except queue.Empty:
                conn = _Connection(self.host, self.port, timeout=INVOKE_TIMEOUT_SECONDS)
                reused = False
            try:
                conn.request("POST", "/invocations", body=body, headers=headers)
                conn.quickack()
                resp = conn.getresponse()
                data = resp.read()
            except TimeoutError:
                conn.close()
                raise
            except (http.client.HTTPException, OSError):
                conn.close()
                if reused and attempt == 0:  # the server closed an idle keep-alive connection
                    continue
                raise
            if resp.will_close:
                conn.close()
            else:
                self._pool.put(conn)
            return (resp.status, resp.getheader("Content-Type"), data,
                    resp.getheader("X-Amzn-SageMaker-Custom-Attributes"))
        raise ConnectionError("unreachable")

    def stop(self, drain: bool = True) -> None:
        with self._cond:
            self._closing = True
            if drain:
                self._cond.wait_for(lambda: self._inflight <= 0, timeout=DRAIN_TIMEOUT_SECONDS)
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.runtime.forget(self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class _Variant:
    __slots__ = ("name", "weight", "server", "model_name", "model_dir", "image")

    def __init__(self, name: str, weight: float, server: ModelServer, model_name: str,
                 model_dir: Path, image: str) -> None:
        self.name, self.weight, self.server = name, weight, server
        self.model_name, self.model_dir, self.image = model_name, model_dir, image


class _Endpoint:
    """localaws' side of one endpoint: its live route, capture and deployment state."""

    def __init__(self, account_id: str, region: str, fake) -> None:
        self.account_id, self.region = account_id, region
        self.name: str = fake.endpoint_name
        self.fake = fake  # moto's FakeEndpoint: what Describe/ListEndpoints answer
        self.route: tuple[_Variant, ...] = ()  # replaced as a whole, never mutated
        self.capture: CaptureWriter | None = None
        self.lock = threading.Lock()
        self.generation = 0
        self.deleted = threading.Event()
        self.dir = (_runtime.data_dir / "sagemaker" / "endpoints" / account_id / region
                    / self.name)

    def pick(self, target: str | None) -> _Variant | None:
        route = self.route
        if not route:
            return None
        if target:
            return next((v for v in route if v.name == target), None)
        if len(route) == 1:
            return route[0]
        total = sum(v.weight for v in route)
        if total <= 0:
            return random.choice(route)
        point = random.uniform(0, total)
        for v in route:
            point -= v.weight
            if point <= 0:
                return v
        return route[-1]

    def set_status(self, status: str, reason: str | None = None,
                   keep_reason: bool = False) -> None:
        self.fake.endpoint_status = status
        if not keep_reason:
            self.fake.failure_reason = reason
        self.fake.last_modified_time = utcnow()


# -- deployment ----------------------------------------------------------------------------

def _sagemaker_backend(account_id: str, region: str):
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[account_id][region]


def _model_container(model) -> dict[str, Any]:
    if model.primary_container:
        return model.primary_container
    if model.containers:
        return model.containers[0]
    return {}


def _fetch_model(ep: _Endpoint, url: str | None, dest: Path) -> None:
    """Download and extract ``model.tar.gz`` into dest (empty dir when no ModelDataUrl)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if not url:
        return
    try:
        bucket, key = parse_s3_uri(url)
        data = s3_get(ep.account_id, ep.region, bucket, key)
    except S3Error:
        raise _DeployFailure(f"Could not find model data at {url}.") from None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError, ValueError):
        raise _DeployFailure(
            f'Failed to extract model data archive from URL "{url}". Please ensure that the '
            "object located at the URL is a valid tar.gz archive") from None


def _start_variants(ep: _Endpoint, config, generation: int,
                    cached: dict[str, dict[str, str]] | None, started: list[_Variant]) -> None:
    backend = _sagemaker_backend(ep.account_id, ep.region)
    for pv in config.production_variants:
        variant = pv["VariantName"]
        model = backend._models.get(pv["ModelName"])
        if model is None:
            raise _DeployFailure(f'Could not find model "{pv["ModelName"]}".')
        container = _model_container(model)
        image = container.get("Image", "")
        try:
            algorithm = registry.resolve(image)
        except registry.UnknownAlgorithm as exc:
            raise _DeployFailure(f"production variant {variant}: {exc}") from None
        if not algorithm.installed():
            raise _DeployFailure(f"production variant {variant}: {image} maps to "
                                 f"{algorithm.module}, which is not installed in this localaws")
        model_dir = Path((cached or {}).get(variant, {}).get("model_dir", ""))
        if not cached or not model_dir.is_dir():
            model_dir = ep.dir / f"{generation}-{variant}-{secrets.token_hex(3)}" / "model"
            try:
                _fetch_model(ep, container.get("ModelDataUrl"), model_dir)
            except _DeployFailure:
                shutil.rmtree(model_dir.parent, ignore_errors=True)
                raise
        logs = LogStream(ep.account_id, ep.region, LOG_GROUP_PREFIX + ep.name,
                         f"{variant}/i-{secrets.token_hex(8)}{generation:x}")
        server = ModelServer(_runtime, algorithm, model_dir, logs, container.get("Environment"))
        weight = float(pv.get("InitialVariantWeight", 1.0))
        started.append(_Variant(variant, weight, server, pv["ModelName"], model_dir, image))
        server.start()
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    for v in started:
        why = v.server.wait_ready(deadline, ep.deleted)
        if ep.deleted.is_set():
            return
        if why:
            raise _DeployFailure(
                f"The primary container for production variant {v.name} did not pass the ping "
                f"health check: {why}. Please check CloudWatch logs for this endpoint.")


def _deploy(ep: _Endpoint, config_name: str, generation: int, updating: bool,
            cached: dict[str, dict[str, str]] | None = None) -> None:
    started: list[_Variant] = []
    backend = _sagemaker_backend(ep.account_id, ep.region)
    try:
        config = backend.endpoint_configs.get(config_name)
        if config is None:
            raise _DeployFailure(f'Could not find endpoint configuration "{config_name}".')
        _start_variants(ep, config, generation, cached, started)
    except _DeployFailure as exc:
        _abandon(started, None if cached else ep)
        if ep.deleted.is_set() or _shutting_down.is_set():
            return
        with ep.lock:
            if updating:  # SageMaker rolls back: the old variants keep serving
                ep.set_status("InService", str(exc))
            else:
                ep.set_status("Failed", str(exc))
        log.info("endpoint %s: %s failed: %s", ep.name, "update" if updating else "create", exc)
        _save_state()
        return
    except Exception as exc:
        log.exception("endpoint %s: deployment crashed", ep.name)
        _abandon(started, None if cached else ep)
        with ep.lock:
            ep.set_status("InService" if updating else "Failed", f"localaws: {exc!r}")
        return

    with ep.lock:
        if ep.deleted.is_set() or ep.generation != generation or _shutting_down.is_set():
            stale = True
        else:
            stale = False
            old_route, old_capture = ep.route, ep.capture
            ep.capture = CaptureWriter(ep.account_id, ep.region, ep.name,
                                       config.data_capture_config)
            ep.route = tuple(started)  # the switch: new requests go to the new servers
            fake = ep.fake
            fake.endpoint_config_name = config_name
            fake.production_variants = fake._process_production_variants(
                config.production_variants)
            fake.data_capture_config = ep.capture.describe()
            ep.set_status("InService")
    if stale:
        _abandon(started, ep)
        return
    log.info("endpoint %s: InService (%s) on %s", ep.name, config_name,
             ", ".join(f"{v.name}:{v.server.port}" for v in started))
    _save_state()
    if old_capture is not None:
        old_capture.close()
    _retire(old_route, ep)


def _abandon(variants, ep: _Endpoint | None) -> None:
    """Stop servers that never served (and drop their model directories, if ep is given)."""
    for v in variants:
        v.server.stop(drain=False)
        if ep is not None and ep.dir in v.model_dir.parents:
            shutil.rmtree(v.model_dir.parent, ignore_errors=True)


def _retire(route, ep: _Endpoint | None) -> None:
    """Drain and stop old servers, then remove their model directories."""
    for v in route:
        v.server.stop(drain=True)
        if ep is not None and ep.dir in v.model_dir.parents:
            shutil.rmtree(v.model_dir.parent, ignore_errors=True)


def _start_deploy(ep: _Endpoint, config_name: str, updating: bool,
                  cached: dict[str, dict[str, str]] | None = None) -> None:
    with ep.lock:
        ep.generation += 1
        generation = ep.generation
    threading.Thread(target=_deploy, args=(ep, config_name, generation, updating, cached),
                     name=f"endpoint:{ep.name}", daemon=True).start()


def _delete(ep: _Endpoint) -> None:
    with ep.lock:
        ep.deleted.set()
        route, ep.route = ep.route, ()
        capture, ep.capture = ep.capture, None
    if capture is not None:
        capture.close()  # before DeleteEndpoint returns: the records are in S3
    threading.Thread(target=_retire_and_clean, args=(route, ep), daemon=True).start()


def _retire_and_clean(route, ep: _Endpoint) -> None:
    _retire(route, ep)
    shutil.rmtree(ep.dir, ignore_errors=True)


# -- sagemaker-runtime -----------------------------------------------------------------------

def _json_error(status: int, code: str | None, body: dict[str, Any]
                ) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "status": str(status)}
    if code:
        headers["x-amzn-ErrorType"] = code
    return status, headers, json.dumps(body).encode()


def _model_error(ep: _Endpoint, status: int, original: bytes) -> tuple[int, dict, bytes]:
    text = original.decode("utf-8", errors="replace")
    kind = "client" if 400 <= status < 500 else "server"
    group = LOG_GROUP_PREFIX + ep.name
    message = (
        f'Received {kind} error ({status}) from primary with message "{text}". See '
        f"https://{ep.region}.console.aws.amazon.com/cloudwatch/home?region={ep.region}"
        f"#logEventViewer:group={group} in account {ep.account_id} for more information.")
    return _json_error(424, "ModelError", {
        "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
        "LogStreamArn": f"arn:aws:logs:{ep.region}:{ep.account_id}:log-group:{group}",
        "Message": message,
        "OriginalMessage": text,
        "OriginalStatusCode": status,
    })


def invoke(account_id: str, region: str, name: str, body: bytes, headers
           ) -> tuple[int, dict[str, str], bytes]:
    """InvokeEndpoint: (HTTP status, headers, body) as sagemaker-runtime answers."""
    ep = _endpoints.get((account_id, region, name))
    if ep is None or not ep.route:
        return _json_error(400, "ValidationError", {
            "message": f"Endpoint {name} of account {account_id} not found."})
    if len(body) > MAX_PAYLOAD_BYTES:
        return _json_error(413, None, {
            "message": f"HTTP content length exceeded {MAX_PAYLOAD_BYTES} bytes."})
    target = headers.get("X-Amzn-SageMaker-Target-Variant")
    for _ in range(5):
        variant = ep.pick(target)
        if variant is None:
            if target and ep.route:
                return _json_error(400, "ValidationError", {
                    "message": f"Variant {target} not found for endpoint {name}."})
            return _json_error(400, "ValidationError", {
                "message": f"Endpoint {name} of account {account_id} not found."})
        capture = ep.capture  # the config that serves the request captures it
        if variant.server.acquire():
            break
        time.sleep(0.001)  # the route is being switched: take the new one
    else:
        return _json_error(503, "ServiceUnavailable", {"message": "The endpoint is updating."})

    content_type = headers.get("Content-Type")
    forward = {"Content-Type": content_type or "application/octet-stream"}
    for name_ in ("Accept", "X-Amzn-SageMaker-Custom-Attributes",
                  "X-Amzn-SageMaker-Inference-Id"):
        value = headers.get(name_)
        if value:
            forward[name_] = value
    try:
        status, out_type, out_body, custom = variant.server.invoke(body, forward)
    except TimeoutError:
        return _json_error(424, "ModelError", {
            "Message": "Your invocation timed out while waiting for a response from container "
                       "primary. Review the latency metrics for each container in Amazon "
                       "CloudWatch, resolve the issue, and try again.",
            "OriginalStatusCode": 0, "OriginalMessage": ""})
    except (OSError, http.client.HTTPException) as exc:
        return _json_error(503, "ServiceUnavailable", {
            "message": f"The model server of production variant {variant.name} is not "
                       f"answering ({exc.__class__.__name__})."})
    finally:
        variant.server.release()
    if not 200 <= status < 300:
        return _model_error(ep, status, out_body)
    if capture is not None:
        capture.record(variant.name, content_type, body, out_type, out_body,
                       headers.get("X-Amzn-SageMaker-Inference-Id"))
    out_headers = {"Content-Type": out_type or "application/octet-stream",
                   "x-Amzn-Invoked-Production-Variant": variant.name, "status": "200"}
    if custom:
        out_headers["X-Amzn-SageMaker-Custom-Attributes"] = custom
    return 200, out_headers, out_body


# -- persistence ---------------------------------------------------------------------------

class _StateStore:
    """models / endpoint configs / endpoints as they were created, in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.models: dict[str, dict] = {}
        self.configs: dict[str, dict] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                self.models = data.get("models", {})
                self.configs = data.get("endpoint_configs", {})
                self.endpoints_at_start = data.get("endpoints", {})
            except ValueError:
                log.warning("ignoring unreadable %s", path)
                self.endpoints_at_start = {}
        else:
            self.endpoints_at_start = {}

    @staticmethod
    def key(account_id: str, region: str, name: str) -> str:
        return f"{account_id}/{region}/{name}"

    def save(self) -> None:
        endpoints = {}
        with _endpoints_lock:
            eps = list(_endpoints.values())
        for ep in eps:
            fake = ep.fake
            endpoints[self.key(ep.account_id, ep.region, ep.name)] = {
                "config": fake.endpoint_config_name,
                "tags": fake.tags,
                "status": fake.endpoint_status,
                "failure_reason": fake.failure_reason,
                "variants": {v.name: {"model_dir": str(v.model_dir)} for v in ep.route},
            }
        data = {"models": self.models, "endpoint_configs": self.configs,
                "endpoints": endpoints}
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, default=str, indent=1))
            os.replace(tmp, self.path)


def _save_state() -> None:
    if _store is not None and not _shutting_down.is_set():
        try:
            _store.save()
        except Exception:
            log.exception("could not save SageMaker hosting state")


def _restore(originals: dict[str, Any]) -> None:
    """Recreate saved models, configs and endpoints; endpoints start serving again."""
    from moto.sagemaker.models import sagemaker_backends

    for key, kwargs in list(_store.models.items()):
        account_id, region, _ = key.split("/", 2)
        try:
            originals["create_model"](sagemaker_backends[account_id][region], **kwargs)
        except Exception:
            log.exception("could not restore model %s", key)
    for key, kwargs in list(_store.configs.items()):
        account_id, region, _ = key.split("/", 2)
        try:
            originals["create_endpoint_config"](sagemaker_backends[account_id][region],
                                                **kwargs)
        except Exception:
            log.exception("could not restore endpoint config %s", key)
    to_deploy = []
    for key, saved in _store.endpoints_at_start.items():
        account_id, region, name = key.split("/", 2)
        backend = sagemaker_backends[account_id][region]
        try:
            fake = originals["create_endpoint"](backend, endpoint_name=name,
                                                endpoint_config_name=saved["config"],
                                                tags=saved.get("tags"))
        except Exception:
            log.exception("could not restore endpoint %s", key)
            continue
        ep = _Endpoint(account_id, region, fake)
        fake.data_capture_config = None
        with _endpoints_lock:
            _endpoints[(account_id, region, name)] = ep
        if saved.get("status") == "Failed":
            ep.set_status("Failed", saved.get("failure_reason"))
        else:
            ep.set_status("Creating")
            to_deploy.append((ep, saved))
    for ep, saved in to_deploy:  # all registered first: a save never drops one
        log.info("endpoint %s: restoring (%s)", ep.name, saved["config"])
        _start_deploy(ep, saved["config"], updating=False, cached=saved.get("variants"))


# -- moto patches --------------------------------------------------------------------------

def _patch(runtime) -> dict[str, Any]:
    from moto.core.responses import ActionResult
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import (
        FakeEndpoint,
        FakeEndpointConfig,
        SageMakerModelBackend,
        arn_formatter,
    )
    from moto.sagemaker.responses import SageMakerResponse
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    originals = {
        "create_model": SageMakerModelBackend.create_model,
        "delete_model": SageMakerModelBackend.delete_model,
        "create_endpoint_config": SageMakerModelBackend.create_endpoint_config,
        "delete_endpoint_config": SageMakerModelBackend.delete_endpoint_config,
        "create_endpoint": SageMakerModelBackend.create_endpoint,
        "delete_endpoint": SageMakerModelBackend.delete_endpoint,
    }

    def create_model(self, model_name: str, **kwargs):
        if model_name in self._models:
            arn = arn_formatter("model", model_name, self.account_id, self.region_name)
            raise ValidationError(f'Cannot create already existing model "{arn}".')
        model = originals["create_model"](self, model_name=model_name, **kwargs)
        if _store is not None:
            _store.models[_store.key(self.account_id, self.region_name, model_name)] = {
                "model_name": model_name, **kwargs}
            _save_state()
        return model

    def delete_model(self, model_name: str) -> None:
        originals["delete_model"](self, model_name)
        if _store is not None:
            _store.models.pop(_store.key(self.account_id, self.region_name, model_name), None)
            _save_state()

    def create_endpoint_config(self, endpoint_config_name: str, **kwargs):
        if endpoint_config_name in self.endpoint_configs:
            arn = FakeEndpointConfig.arn_formatter(endpoint_config_name, self.account_id,
                                                   self.region_name)
            raise ValidationError(
                f'Cannot create already existing endpoint configuration "{arn}".')
        config = originals["create_endpoint_config"](
            self, endpoint_config_name=endpoint_config_name, **kwargs)
        if _store is not None:
            _store.configs[_store.key(self.account_id, self.region_name,
                                      endpoint_config_name)] = {
                "endpoint_config_name": endpoint_config_name, **kwargs}
            _save_state()
        return config

    def delete_endpoint_config(self, endpoint_config_name: str) -> None:
        originals["delete_endpoint_config"](self, endpoint_config_name)
        if _store is not None:
            _store.configs.pop(_store.key(self.account_id, self.region_name,
                                          endpoint_config_name), None)
            _save_state()

    def create_endpoint(self, endpoint_name: str, endpoint_config_name: str, tags=None):
        key = (self.account_id, self.region_name, endpoint_name)
        if endpoint_name in self.endpoints:
            arn = FakeEndpoint.arn_formatter(endpoint_name, self.account_id, self.region_name)
            raise ValidationError(f'Cannot create already existing endpoint "{arn}".')
        fake = originals["create_endpoint"](self, endpoint_name=endpoint_name,
                                            endpoint_config_name=endpoint_config_name,
                                            tags=tags)
        ep = _Endpoint(self.account_id, self.region_name, fake)
        ep.set_status("Creating")
        fake.data_capture_config = None
        with _endpoints_lock:
            _endpoints[key] = ep
        _start_deploy(ep, endpoint_config_name, updating=False)
        return fake

    def delete_endpoint(self, endpoint_name: str) -> None:
        originals["delete_endpoint"](self, endpoint_name)
        with _endpoints_lock:
            ep = _endpoints.pop((self.account_id, self.region_name, endpoint_name), None)
        if ep is not None:
            _delete(ep)
        _save_state()

    def update_endpoint(self, endpoint_name: str, endpoint_config_name: str):
        fake = self.endpoints.get(endpoint_name)
        ep = _endpoints.get((self.account_id, self.region_name, endpoint_name))
        arn = FakeEndpoint.arn_formatter(endpoint_name, self.account_id, self.region_name)
        if fake is None or ep is None:
            raise ValidationError(f'Could not find endpoint "{arn}".')
        self.describe_endpoint_config(endpoint_config_name)  # ValidationException if missing
        with ep.lock:
            if fake.endpoint_status == "Failed":
                raise ValidationError(f'Cannot update failed endpoint "{arn}".')
            if fake.endpoint_status != "InService":
                raise ValidationError(f'Cannot update in-progress endpoint "{arn}".')
            ep.set_status("Updating", keep_reason=True)
        _start_deploy(ep, endpoint_config_name, updating=True)
        return fake

    def update_endpoint_response(self):
        fake = self.sagemaker_backend.update_endpoint(
            endpoint_name=self._get_param("EndpointName"),
            endpoint_config_name=self._get_param("EndpointConfigName"))
        return ActionResult({"EndpointArn": fake.arn})

    def invoke_endpoint_response(self):
        name = unquote(self.path.split("/")[2])
        body = self.raw_body if isinstance(self.raw_body, bytes) else (self.raw_body or b"")
        if isinstance(body, str):
            body = body.encode("utf-8")
        try:
            status, headers, out = invoke(self.current_account, self.region, name, body,
                                          self.headers)
        except Exception as exc:  # never let werkzeug swallow it: answer something
            log.exception("InvokeEndpoint %s failed", name)
            status, headers, out = _json_error(500, "InternalFailure",
                                               {"message": f"localaws: {exc!r}"})
        return status, headers, out

    SageMakerModelBackend.create_model = create_model
    SageMakerModelBackend.delete_model = delete_model
    SageMakerModelBackend.create_endpoint_config = create_endpoint_config
    SageMakerModelBackend.delete_endpoint_config = delete_endpoint_config
    SageMakerModelBackend.create_endpoint = create_endpoint
    SageMakerModelBackend.delete_endpoint = delete_endpoint
    SageMakerModelBackend.update_endpoint = update_endpoint
    SageMakerResponse.update_endpoint = update_endpoint_response
    SageMakerRuntimeResponse.invoke_endpoint = invoke_endpoint_response
    SageMakerRuntimeResponse.use_raw_body = True  # image bodies are not UTF-8
    return originals


_AUTH_SCOPE = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/aws4_request")


def _fast_invoke(environ) -> tuple[int, dict[str, str], bytes] | None:
    """InvokeEndpoint straight from the WSGI environ, or None to leave it to moto."""
    match = _AUTH_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    length = environ.get("CONTENT_LENGTH")
    if not match or match[3] != "sagemaker" or not length:
        return None
    access_key, region = match[1], match[2]
    account_id = os.environ.get("MOTO_ACCOUNT_ID") or environ.get("HTTP_X_MOTO_ACCOUNT_ID")
    if not account_id:
        from moto.iam.models import get_account_id_from

        account_id = get_account_id_from(access_key)
    name = unquote(environ["PATH_INFO"].split("/")[2])
    body = environ["wsgi.input"].read(int(length)) if int(length) else b""
    headers = _EnvironHeaders(environ)
    try:
        return invoke(account_id, region, name, body, headers)
    except Exception as exc:  # never let werkzeug swallow it: answer something
        log.exception("InvokeEndpoint %s failed", name)
        return _json_error(500, "InternalFailure", {"message": f"localaws: {exc!r}"})


class _EnvironHeaders:
    """The few request headers ``invoke`` reads, straight from a WSGI environ."""

    __slots__ = ("environ",)

    def __init__(self, environ) -> None:
        self.environ = environ

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        return self.environ.get(key) or default


def _install_fast_path() -> None:
    """sagemaker-runtime requests skip moto's dispatch (service inference, Flask routing,
    request parsing): the proxy adds about a millisecond instead of several."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    moto_call = DomainDispatcherApplication.__call__

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if (environ.get("REQUEST_METHOD") == "POST" and path.startswith("/endpoints/")
                and path.endswith("/invocations") and path.count("/") == 3):
            result = _fast_invoke(environ)
            if result is not None:
                status, headers, body = result
                headers.pop("status", None)
                headers["x-amzn-RequestId"] = str(uuid.uuid4())
                headers["Content-Length"] = str(len(body))
                start_response(f"{status} {_reason(status)}", list(headers.items()))
                return [body]
        return moto_call(self, environ, start_response)

    DomainDispatcherApplication.__call__ = __call__


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _shutdown() -> None:
    _shutting_down.set()
    flush_all()
    with _endpoints_lock:
        eps = list(_endpoints.values())
    for ep in eps:
        if ep.capture is not None:
            ep.capture.close()
        for v in ep.route:
            v.server.stop(drain=False)


def status() -> list[dict[str, Any]]:
    with _endpoints_lock:
        eps = list(_endpoints.values())
    out = []
    for ep in eps:
        out.append({
            "name": ep.name,
            "status": ep.fake.endpoint_status,
            "config": ep.fake.endpoint_config_name,
            "failure_reason": ep.fake.failure_reason,
            "variants": [{"name": v.name, "port": v.server.port,
                          "pid": v.server.proc.pid if v.server.alive() else None,
                          "model_dir": str(v.model_dir)} for v in ep.route],
            "data_capture": ep.capture.describe() if ep.capture else None,
        })
    return out


def install(runtime) -> None:
    global _runtime, _store
    _runtime = runtime
    _store = _StateStore(runtime.data_dir / "sagemaker" / "hosting" / "state.json")
    originals = _patch(runtime)
    _install_fast_path()
    start_flusher()
    runtime.on_shutdown("sagemaker endpoints", _shutdown)
    add_status_section(runtime, "endpoints", status)
    _restore(originals)
