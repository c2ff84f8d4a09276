"""The Python Lambda execution environment: one worker process runs one function's handler.

Started by ``lambda_compute`` as ``python -I -S lambda_worker.py <code_dir> <runtime_site>
<handler>``, so it sees only the standard library, the function's code and the runtime-site
directory (boto3 and its dependencies) - what the AWS Python runtime offers. It must not
import localaws or anything outside the standard library before the handler does.

Protocol on the inherited stdin/stdout (moved to private descriptors at start; the handler's
fd 0 becomes /dev/null and fd 1 the worker's log file): frames of a 4-byte big-endian length
and a JSON object. The worker first sends ``{"type": "ready", "init_ms", "error", "logs"}``,
then answers each ``{"request_id", "payload", "deadline_ms", ...}`` with ``{"type":
"result", "ok", "payload" | "error", "logs"}``. ``logs`` are ``[epoch_ms, text]`` events.
"""

import decimal
import importlib
import io
import json
import logging
import os
import struct
import sys
import threading
import time
import traceback

_HEADER = struct.Struct(">I")
_current_request_id = ""
_events = []
_events_lock = threading.Lock()


def _now_ms():
    return int(time.time() * 1000)


def _emit(text):
    with _events_lock:
        _events.append([_now_ms(), text])


def _take_events():
    global _events
    with _events_lock:
        out, _events = _events, []
    return out


class _LineCapture(io.TextIOBase):
    """sys.stdout/sys.stderr of the handler: each complete line becomes one log event."""

    def __init__(self, name):
        self.name = name
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        with self._lock:
            data = self._partial + s
            *lines, self._partial = data.split("\n")
        for line in lines:
            _emit(line)
        return len(s)

    def flush(self):
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            _emit(rest)

    def isatty(self):
        return False

    @property
    def encoding(self):
        return "utf-8"


class _LambdaLogHandler(logging.Handler):
    """The AWS runtime's text log format; one record (traceback included) is one event."""

    def emit(self, record):
        try:
            _emit(self.format(record))
        except Exception:
            self.handleError(record)


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _current_request_id
        return True


def _install_logging():
    handler = _LambdaLogHandler()
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    logging.getLogger().addHandler(handler)


class _Identity:
    cognito_identity_id = None
    cognito_identity_pool_id = None


class _ClientContext:
    def __init__(self, data):
        self.client = data.get("client")
        self.custom = data.get("custom")
        self.env = data.get("env")


class LambdaContext:
    """What the AWS Python runtime passes as the handler's second argument."""

    def __init__(self, request, env):
        self.aws_request_id = request["request_id"]
        self.invoked_function_arn = request.get("invoked_arn", "")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = _Identity()
        client_context = request.get("client_context")
        self.client_context = _ClientContext(client_context) if client_context else None
        self._deadline_ms = request["deadline_ms"]

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - _now_ms(), 0)

    def log(self, msg):
        sys.stdout.write(msg)


def _error(error_type, message, request_id="", stack=None):
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id,
            "stackTrace": stack or []}


def _user_stack(tb):
    """The traceback without the worker's own frames, as the AWS runtime prints it."""
    frames = [f for f in traceback.extract_tb(tb) if f.filename != __file__]
    return traceback.format_list(frames)


def _load_handler(spec):
    try:
        module_name, func_name = spec.rsplit(".", 1)
    except ValueError:
        return None, _error("Runtime.MalformedHandlerName",
                            f"Bad handler '{spec}': not enough values to unpack "
                            "(expected 2, got 1)")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        return None, _error("Runtime.ImportModuleError",
                            f"Unable to import module '{module_name}': {exc}")
    except SyntaxError as exc:
        return None, _error("Runtime.UserCodeSyntaxError",
                            f"Syntax error in module '{module_name}': {exc}",
                            stack=_user_stack(exc.__traceback__))
    except Exception as exc:
        return None, _error(type(exc).__name__, str(exc), stack=_user_stack(exc.__traceback__))
    func = getattr(module, func_name, None)
    if func is None:
        return None, _error("Runtime.HandlerNotFound",
                            f"Handler '{func_name}' missing on module '{module_name}'")
    return func, None


def _json_default(obj):
    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _log_error(err):
    text = f"[ERROR] {err['errorType']}: {err['errorMessage']}"
    if err["stackTrace"]:
        text += "\nTraceback (most recent call last):\n" + "".join(err["stackTrace"]).rstrip()
    _emit(text)


def _invoke(func, request):
    global _current_request_id
    _current_request_id = request["request_id"]
    raw = request.get("payload") or ""
    try:
        event = json.loads(raw) if raw.strip() else {}
        result = func(event, LambdaContext(request, os.environ))
    except Exception as exc:
        err = _error(type(exc).__name__, str(exc), request["request_id"],
                     _user_stack(exc.__traceback__))
        _log_error(err)
        return {"ok": False, "error": err}
    try:
        payload = json.dumps(result, default=_json_default)
    except (TypeError, ValueError) as exc:
        err = _error("Runtime.MarshalError", f"Unable to marshal response: {exc}",
                     request["request_id"])
        _log_error(err)
        return {"ok": False, "error": err}
    return {"ok": True, "payload": payload}


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _send(fd, message):
    data = json.dumps(message).encode()
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def main(argv):
    code_dir, runtime_site, handler_spec = argv[1:4]
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdout, sys.stderr = _LineCapture("<stdout>"), _LineCapture("<stderr>")
    sys.path[:] = [code_dir, *sys.path, runtime_site]
    os.chdir(code_dir)
    _install_logging()

    started = time.monotonic()
    func, init_error = _load_handler(handler_spec)
    sys.stdout.flush()
    sys.stderr.flush()
    if init_error:
        _log_error(init_error)
    _send(proto_out, {"type": "ready", "init_ms": (time.monotonic() - started) * 1000,
                      "error": init_error, "logs": _take_events()})
    if init_error:
        return 0
    while True:
        try:
            (size,) = _HEADER.unpack(_read_exact(proto_in, _HEADER.size))
            request = json.loads(_read_exact(proto_in, size))
        except EOFError:
            return 0
        outcome = _invoke(func, request)
        sys.stdout.flush()
        sys.stderr.flush()
        outcome["type"] = "result"
        outcome["logs"] = _take_events()
        _send(proto_out, outcome)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
