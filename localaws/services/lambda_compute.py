"""Lambda compute: ``Invoke`` runs the function's real Python handler in warm worker processes.

Every invocation path of moto (the Invoke API, Step Functions, SNS, event sources) goes through
``moto.awslambda.models.LambdaFunction.invoke``; this module replaces it. Each function version
(ARN) with one code hash and configuration gets a bounded pool of ``lambda_worker`` processes
that stay warm between invocations; changing the code or configuration, deleting the function
or shutting down stops them. Handlers see what the AWS Python runtime offers (stdlib + boto3 and
its dependencies, linked into ``<data-dir>/lambda/runtime-site``), the function's environment,
``AWS_ENDPOINT_URL`` pointing back at this server and dummy credentials. Logs go to CloudWatch
Logs ``/aws/lambda/<name>`` (one stream per worker, as per execution environment on AWS).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import os
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("localaws.lambda")

WORKER_SCRIPT = Path(__file__).with_name("lambda_worker.py")
# What the AWS Python runtime ships besides the standard library.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
RUNTIME_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "jmespath", "python_dateutil",
                         "urllib3", "six")

MAX_WORKERS_PER_FUNCTION = int(os.environ.get("LOCALAWS_LAMBDA_MAX_WORKERS", "4"))
MAX_WORKERS_TOTAL = int(os.environ.get("LOCALAWS_LAMBDA_MAX_TOTAL_WORKERS", "16"))
IDLE_SECONDS = float(os.environ.get("LOCALAWS_LAMBDA_IDLE_SECONDS", "600"))
INIT_TIMEOUT = 10.0  # AWS's limit for the init phase; we add the function timeout on top
EVENT_THREADS = 4
TAIL_BYTES = 4096
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024

_HEADER = struct.Struct(">I")
_manager: WorkerManager | None = None


class WorkerDied(Exception):
    pass


def _header(headers, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    if value is None and isinstance(headers, dict):
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _error_payload(error_type: str, message: str, request_id: str = "") -> dict:
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id,
            "stackTrace": []}


class Worker:
    """One execution environment: a child process running ``lambda_worker.py``."""

    def __init__(self, proc: subprocess.Popen, log_stream: str) -> None:
        self.proc = proc
        self.log_stream = log_stream
        self.init_ms = 0.0
        self.init_error: dict | None = None
        self.init_logs: list = []
        self.fresh = True
        self.last_used = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        poller = select.poll()  # not select.select: the server may hold fds above 1024
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        chunks = []
        while n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                raise TimeoutError
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                raise WorkerDied
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def receive(self, deadline: float) -> dict:
        (size,) = _HEADER.unpack(self._read_exact(_HEADER.size, deadline))
        return json.loads(self._read_exact(size, deadline))

    def send(self, message: dict) -> None:
        data = json.dumps(message).encode()
        view = memoryview(_HEADER.pack(len(data)) + data)
        fd = self.proc.stdin.fileno()
        try:
            while view:
                view = view[os.write(fd, view):]
        except (BrokenPipeError, OSError) as exc:
            raise WorkerDied from exc

    def max_memory_mb(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) // 1024
        except OSError:
            pass
        return 0

    def stop(self, runtime, kill: bool = False) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        runtime.forget(self.proc)


class Pool:
    """The warm workers of one function ARN with one code hash and configuration."""

    def __init__(self, key: str, fingerprint: tuple, limit: int) -> None:
        self.key = key
        self.fingerprint = fingerprint
        self.limit = limit
        self.idle: list[Worker] = []
        self.size = 0  # idle + busy + being started
        self.retired = False


def _fingerprint(fn) -> tuple:
    return (getattr(fn, "code_digest", ""), fn.handler, fn.run_time,
            json.dumps(fn.environment_vars or {}, sort_keys=True), fn.timeout,
            fn.memory_size, fn.package_type)


class WorkerManager:
    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.root = runtime.path("lambda")
        self.code_root = runtime.path("lambda", "code")
        self.site_dir = self._build_runtime_site()
        self.worker_log = self.root / "workers.log"
        self.pools: dict[str, Pool] = {}
        self.total = 0
        self.cond = threading.Condition()
        self.logs_lock = threading.Lock()
        self.extract_lock = threading.Lock()
        self.events = ThreadPoolExecutor(EVENT_THREADS, thread_name_prefix="lambda-event")
        self.invocations = 0
        self.cold_starts = 0
        self.closed = False
        self._reaper = threading.Thread(target=self._reap_idle, name="lambda-reaper",
                                        daemon=True)
        self._reaper.start()

    # -- environment ------------------------------------------------------------------------

    def _build_runtime_site(self) -> Path:
        site = self.runtime.data_dir / "lambda" / "runtime-site"
        tmp = self.runtime.data_dir / "lambda" / f"runtime-site.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in RUNTIME_PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is None:
                log.warning("lambda runtime: package %s not found; handlers cannot import it",
                            name)
                continue
            src = Path(next(iter(spec.submodule_search_locations or []), spec.origin or ""))
            (tmp / src.name).symlink_to(src)
            for dist in src.parent.glob("*.dist-info"):
                dist_name = dist.name.split("-", 1)[0].lower()
                if dist_name in RUNTIME_DISTRIBUTIONS and not (tmp / dist.name).exists():
                    (tmp / dist.name).symlink_to(dist)
        shutil.rmtree(site, ignore_errors=True)
        tmp.rename(site)
        return site

    def _code_dir(self, fn) -> Path:
        digest = getattr(fn, "code_digest", "") or ""
        code = getattr(fn, "code_bytes", b"") or b""
        if not digest or not code:
            raise ValueError("the function has no code package")
        target = self.code_root / digest
        if target.is_dir():
            return target
        with self.extract_lock:
            if not target.is_dir():
                tmp = self.code_root / f".{digest}.{uuid.uuid4().hex}"
                with zipfile.ZipFile(io.BytesIO(code)) as zf:
                    zf.extractall(tmp)
                tmp.rename(target)
        return target

    def _environment(self, fn, log_stream: str, code_dir: Path) -> dict[str, str]:
        version = "$LATEST" if str(fn.version) in ("$LATEST", "") else str(fn.version)
        env = {str(k): str(v) for k, v in (fn.environment_vars or {}).items()}
        reserved = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": fn.region,
            "AWS_DEFAULT_REGION": fn.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.run_time}",
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(fn.timeout),
            "AWS_LAMBDA_LOG_GROUP_NAME": fn.logs_group_name,
            "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "LAMBDA_TASK_ROOT": str(code_dir),
            "LAMBDA_RUNTIME_DIR": str(self.site_dir),
            "_HANDLER": fn.handler or "",
            "TZ": ":UTC",
        }
        base = {
            "AWS_ENDPOINT_URL": self.runtime.endpoint_url,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "HOME": os.environ.get("HOME", "/tmp"),
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        }
        return {**base, **env, **reserved}

    # -- workers ----------------------------------------------------------------------------

    def _spawn(self, fn) -> Worker:
        now = datetime.now(UTC)
        version = "$LATEST" if str(fn.version) in ("$LATEST", "") else str(fn.version)
        log_stream = f"{now:%Y/%m/%d}/[{version}]{uuid.uuid4().hex}"
        code_dir = self._code_dir(fn)
        args = [sys.executable, "-I", "-S", str(WORKER_SCRIPT), str(code_dir),
                str(self.site_dir), fn.handler or ""]
        env = self._environment(fn, log_stream, code_dir)

        with open(self.worker_log, "ab") as errlog:
            proc = self.runtime.popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog,
                env=env, cwd=code_dir, bufsize=0, close_fds=True)
        worker = Worker(proc, log_stream)
        self._ensure_stream(fn, log_stream)
        self.cold_starts += 1
        deadline = time.monotonic() + INIT_TIMEOUT + float(fn.timeout or 3)
        try:
            ready = worker.receive(deadline)
        except TimeoutError:
            worker.stop(self.runtime, kill=True)
            worker.init_error = _error_payload(
                "Sandbox.Timedout", f"Init phase timed out after {INIT_TIMEOUT:.2f} seconds")
            return worker
        except WorkerDied:
            rc = proc.wait()
            worker.stop(self.runtime)
            worker.init_error = _error_payload(
                "Runtime.ExitError", f"Runtime exited with error: exit status {rc}")
            return worker
        worker.init_ms = float(ready.get("init_ms") or 0.0)
        worker.init_error = ready.get("error")
        worker.init_logs = ready.get("logs") or []
        return worker

    def _acquire(self, fn) -> tuple[Pool, Worker]:
        key = fn.function_arn
        fingerprint = _fingerprint(fn)
        limit = MAX_WORKERS_PER_FUNCTION
        if fn.reserved_concurrency:
            limit = max(1, min(limit, int(fn.reserved_concurrency)))
        deadline = time.monotonic() + max(60.0, 4 * float(fn.timeout or 3))
        to_stop: list[Worker] = []
        with self.cond:
            while True:
                if self.closed:
                    raise RuntimeError("localaws is shutting down")
                pool = self.pools.get(key)
                if pool is None or pool.fingerprint != fingerprint:
                    if pool is not None:
                        to_stop += self._retire_locked(pool)
                    pool = self.pools[key] = Pool(key, fingerprint, limit)
                while pool.idle:
                    worker = pool.idle.pop()
                    if worker.alive:
                        break
                    pool.size -= 1
                    self.total -= 1
                    to_stop.append(worker)
                else:
                    worker = None
                if worker is not None:
                    break
                if pool.size < pool.limit:
                    if self.total >= MAX_WORKERS_TOTAL:
                        victim = self._evict_locked(pool)
                        if victim is not None:
                            to_stop.append(victim)
                    if self.total < MAX_WORKERS_TOTAL:
                        pool.size += 1
                        self.total += 1
                        break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    from moto.awslambda.exceptions import LambdaClientError

                    error = LambdaClientError("TooManyRequestsException", "Rate Exceeded.")
                    error.code = 429
                    raise error
                self.cond.wait(min(remaining, 1.0))
        for old in to_stop:
            old.stop(self.runtime)
        if worker is not None:
            return pool, worker
        try:
            return pool, self._spawn(fn)
        except BaseException:
            with self.cond:
                pool.size -= 1
                self.total -= 1
                self.cond.notify_all()
            raise

    def _release(self, pool: Pool, worker: Worker, reusable: bool) -> None:
        with self.cond:
            keep = (reusable and worker.alive and not pool.retired and not self.closed
                    and self.pools.get(pool.key) is pool)
            if keep:
                worker.last_used = time.monotonic()
                pool.idle.append(worker)
            else:
                pool.size -= 1
                self.total -= 1
            self.cond.notify_all()
        if not keep:
            worker.stop(self.runtime)

    def _retire_locked(self, pool: Pool) -> list[Worker]:
        pool.retired = True
        if self.pools.get(pool.key) is pool:
            del self.pools[pool.key]
        idle, pool.idle = pool.idle, []
        pool.size -= len(idle)
        self.total -= len(idle)
        self.cond.notify_all()
        return idle

    def _evict_locked(self, keep: Pool) -> Worker | None:
        candidates = [(w.last_used, p, w) for p in self.pools.values() if p is not keep
                      for w in p.idle]
        if not candidates:
            return None
        _, pool, worker = min(candidates, key=lambda c: c[0])
        pool.idle.remove(worker)
        pool.size -= 1
        self.total -= 1
        return worker

    def retire(self, predicate) -> None:
        """Stop the workers of every pool whose ARN matches (busy ones when they finish)."""
        to_stop: list[Worker] = []
        with self.cond:
            for pool in [p for k, p in self.pools.items() if predicate(k)]:
                to_stop += self._retire_locked(pool)
        for worker in to_stop:
            worker.stop(self.runtime)

    def _reap_idle(self) -> None:
        while not self.closed:
            time.sleep(min(30.0, IDLE_SECONDS))
            cutoff = time.monotonic() - IDLE_SECONDS
            to_stop: list[Worker] = []
            with self.cond:
                for pool in self.pools.values():
                    old = [w for w in pool.idle if w.last_used < cutoff]
                    for w in old:
                        pool.idle.remove(w)
                        pool.size -= 1
                        self.total -= 1
                    to_stop += old
            for worker in to_stop:
                worker.stop(self.runtime)

    def shutdown(self) -> None:
        with self.cond:
            self.closed = True
            workers = [w for p in self.pools.values() for w in p.idle]
            for pool in list(self.pools.values()):
                pool.retired = True
            self.pools.clear()
            self.cond.notify_all()
        self.events.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.stop(self.runtime)

    def status(self) -> dict:
        with self.cond:
            pools = {k: {"workers": p.size, "idle": len(p.idle)} for k, p in self.pools.items()}
        return {"workers": self.total, "invocations": self.invocations,
                "cold_starts": self.cold_starts, "functions": pools}

    # -- logs -------------------------------------------------------------------------------

    def _ensure_stream(self, fn, stream: str) -> None:
        backend = fn.logs_backend
        with self.logs_lock:
            backend.ensure_log_group(fn.logs_group_name)
            backend.ensure_log_stream(fn.logs_group_name, stream)

    def _write_logs(self, fn, stream: str, events: list[list]) -> None:
        if not events:
            return
        backend = fn.logs_backend
        last = 0
        batch = []
        for ts, message in events:
            last = max(int(ts), last)
            batch.append({"timestamp": last, "message": message})
        with self.logs_lock:
            try:
                backend.ensure_log_group(fn.logs_group_name)
                backend.ensure_log_stream(fn.logs_group_name, stream)
                backend.put_log_events(fn.logs_group_name, stream, batch)
            except Exception:
                log.exception("lambda %s: could not write logs", fn.function_name)

    # -- invocation -------------------------------------------------------------------------

    def run(self, fn, payload: str, client_context: dict | None = None
            ) -> tuple[bytes, bool, str]:
        """Run one invocation; returns (response payload, errored, log text)."""
        request_id = str(uuid.uuid4())
        self.invocations += 1
        pool, worker = self._acquire(fn)
        now_ms = lambda: int(time.time() * 1000)  # noqa: E731
        version = "$LATEST" if str(fn.version) in ("$LATEST", "") else str(fn.version)
        events: list[list] = []
        init_ms = None
        if worker.fresh:
            events += [[ts, f"{text}\n"] for ts, text in worker.init_logs]
            init_ms = worker.init_ms
            worker.fresh = False
        events.append([now_ms(), f"START RequestId: {request_id} Version: {version}\n"])
        started = time.monotonic()
        timeout = float(fn.timeout or 3)
        reusable = False
        max_memory = None
        status = None
        error: dict | None = None
        body = b""
        if worker.init_error:
            error = {**worker.init_error, "requestId": request_id}
            status = "error"
        else:
            request = {"request_id": request_id, "payload": payload,
                       "deadline_ms": now_ms() + int(timeout * 1000),
                       "invoked_arn": fn.function_arn, "client_context": client_context}
            try:
                worker.send(request)
                result = worker.receive(time.monotonic() + timeout)
                events += [[ts, f"{text}\n"] for ts, text in result.get("logs") or []]
                if result.get("ok"):
                    body = result["payload"].encode()
                else:
                    error = result["error"]
                reusable = True
            except TimeoutError:
                max_memory = worker.max_memory_mb()
                worker.stop(self.runtime, kill=True)
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
                events.append([now_ms(), f"{stamp}Z {request_id} Task timed out after "
                                         f"{timeout:.2f} seconds\n"])
                error = _error_payload(
                    "Sandbox.Timedout",
                    f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds",
                    request_id)
                status = "timeout"
            except WorkerDied:
                rc = worker.proc.wait()
                error = _error_payload(
                    "Runtime.ExitError",
                    f"RequestId: {request_id} Error: Runtime exited with error: exit status {rc}",
                    request_id)
                events.append([now_ms(), f"{error['errorMessage']}\n"])
                status = "error"
        duration = (time.monotonic() - started) * 1000
        report = (f"REPORT RequestId: {request_id}\tDuration: {duration:.2f} ms\t"
                  f"Billed Duration: {max(1, int(duration + 0.999))} ms\t"
                  f"Memory Size: {fn.memory_size} MB\t"
                  f"Max Memory Used: {max_memory or worker.max_memory_mb()} MB")
        if init_ms is not None:
            report += f"\tInit Duration: {init_ms:.2f} ms"
        if status:
            report += f"\tStatus: {status}"
        events.append([now_ms(), f"END RequestId: {request_id}\n"])
        events.append([now_ms(), report + "\t\n"])
        self._release(pool, worker, reusable)
        self._write_logs(fn, worker.log_stream, events)
        if error is not None:
            body = json.dumps(error).encode()
        return body, error is not None, "".join(text for _, text in events)

    def invoke(self, fn, body, request_headers, response_headers) -> bytes:
        from moto.awslambda.exceptions import LambdaClientError

        if isinstance(body, bytes):
            body = body.decode("utf-8")
        payload = body or ""
        if len(payload) > MAX_SYNC_PAYLOAD:
            error = LambdaClientError(
                "RequestTooLargeException",
                f"Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the InvokeFunction "
                "operation")
            error.code = 413
            raise error
        if payload.strip():
            try:
                json.loads(payload)
            except ValueError as exc:
                raise LambdaClientError(
                    "InvalidRequestContentException",
                    f"Could not parse request body into json: {exc}") from None
        if fn.package_type != "Zip" or not str(fn.run_time or "python").startswith("python"):
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(_error_payload(
                "Runtime.InvalidRuntime",
                f"localaws runs Python zip functions only (got {fn.package_type} "
                f"{fn.run_time})")).encode()
        client_context = None
        raw_context = _header(request_headers, "x-amz-client-context")
        if raw_context:
            try:
                client_context = json.loads(base64.b64decode(raw_context))
            except ValueError:
                client_context = None
        response_headers["x-amz-executed-version"] = str(fn.version)
        invocation_type = _header(request_headers, "x-amz-invocation-type") or "RequestResponse"
        if invocation_type == "DryRun":
            return b""
        if invocation_type == "Event":
            self.events.submit(self._run_event, fn, payload, client_context)
            return b""
        result, errored, logs = self.run(fn, payload, client_context)
        if errored:
            response_headers["x-amz-function-error"] = "Unhandled"
        tail = logs.encode()[-TAIL_BYTES:]
        response_headers["x-amz-log-result"] = base64.b64encode(tail).decode()
        return result

    def _run_event(self, fn, payload: str, client_context) -> None:
        try:
            self.run(fn, payload, client_context)
        except Exception:
            log.exception("lambda %s: asynchronous invocation failed", fn.function_name)

    def submit(self, func, *args, **kwargs) -> None:
        """Run an asynchronous invocation path (SNS, S3 notifications) off the request."""
        def call():
            try:
                func(*args, **kwargs)
            except Exception:
                log.exception("lambda: asynchronous invocation failed")

        if not self.closed:
            self.events.submit(call)


def _patched_invoke(self, body, request_headers, response_headers):
    try:
        return _manager.invoke(self, body, request_headers, response_headers)
    except Exception as exc:
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            raise
        log.exception("lambda %s: invocation failed", self.function_name)
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(_error_payload("Runtime.Unknown", f"localaws: {exc!r}")).encode()


def install(runtime) -> None:
    global _manager
    from moto.awslambda import models

    _manager = WorkerManager(runtime)
    runtime.on_shutdown("lambda workers", _manager.shutdown)
    runtime.add_status("lambda", _manager.status)

    models.LambdaFunction.invoke = _patched_invoke

    from moto.awslambda.responses import LambdaResponse

    original_invoke_response = LambdaResponse.invoke

    def invoke_response(self):
        # moto reads "qualifier" (lower case) and, failing that, from the event payload;
        # boto3 sends ?Qualifier=...
        self.querystring["qualifier"] = [self.querystring.get("Qualifier", [None])[0]]
        return original_invoke_response(self)

    LambdaResponse.invoke = invoke_response

    original_update_code = models.LambdaFunction.update_function_code
    original_update_config = models.LambdaFunction.update_configuration
    original_delete = models.LambdaBackend.delete_function

    def update_function_code(self, updated_spec):
        result = original_update_code(self, updated_spec)
        arn = self.function_arn
        _manager.retire(lambda key: key == arn)
        return result

    def update_configuration(self, config_updates):
        result = original_update_config(self, config_updates)
        arn = self.function_arn
        _manager.retire(lambda key: key == arn)
        return result

    def delete_function(self, function_name, qualifier=None):
        fn = self.get_function(function_name, qualifier)
        base = models.make_function_arn(fn.region, fn.account_id, fn.function_name)
        original_delete(self, function_name, qualifier)
        if qualifier or ":" in function_name.split(":function:")[-1]:
            arn = fn.function_arn
            _manager.retire(lambda key: key == arn)
        else:
            _manager.retire(lambda key: key == base or key.startswith(base + ":"))

    # SNS and S3 invoke functions asynchronously on AWS; moto ran the handler inside the
    # Publish/PutObject request.
    from moto.s3 import notifications as s3_notifications

    original_sns = models.LambdaBackend.send_sns_message
    original_s3 = s3_notifications._invoke_awslambda

    def send_sns_message(self, *args, **kwargs):
        _manager.submit(original_sns, self, *args, **kwargs)

    def invoke_from_s3(*args, **kwargs):
        _manager.submit(original_s3, *args, **kwargs)

    models.LambdaBackend.send_sns_message = send_sns_message
    s3_notifications._invoke_awslambda = invoke_from_s3
    models.LambdaFunction.update_function_code = update_function_code
    models.LambdaFunction.update_configuration = update_configuration
    models.LambdaBackend.delete_function = delete_function
