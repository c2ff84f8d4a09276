"""Starts moto's server with localaws' service extensions installed, on one host/port.

The WSGI app is moto's ``DomainDispatcherApplication`` wrapped by a tiny router that answers
``/_localaws/*`` (status and health) itself. SIGTERM/SIGINT run every shutdown hook (flush
Data Capture, stop endpoints, training jobs and Lambda workers) before the process exits.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import threading
from pathlib import Path

from localaws.runtime import Runtime

log = logging.getLogger("localaws")

# Order matters: persistence first (so restored state exists before anything reads it).
SERVICE_MODULES = (
    "localaws.services.s3_persistence",
    "localaws.services.s3_policy",
    "localaws.services.lambda_compute",
    "localaws.services.stepfunctions",
    "localaws.services.sns_mail",
    "localaws.services.cloudformation",
    "localaws.services.sagemaker_training",
    "localaws.services.sagemaker_hosting",
)

STATUS_PATH = "/_localaws/status"


def _configure_moto(runtime: Runtime) -> None:
    # Must happen before any backend is touched: the Step Functions flag selects the
    # backend store, and moto's Step Functions interpreter calls Lambda/SNS on MOTO_PORT.
    os.environ["MOTO_PORT"] = str(runtime.port)
    os.environ.setdefault("AWS_DEFAULT_REGION", runtime.region)
    from moto.core.config import default_user_config

    default_user_config["stepfunctions"]["execute_state_machine"] = True


class _Router:
    """WSGI app: ``/_localaws/status`` is ours, everything else goes to moto."""

    def __init__(self, runtime: Runtime, moto_app) -> None:
        self.runtime = runtime
        self.moto_app = moto_app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == STATUS_PATH:
            body = json.dumps(self.runtime.status(), default=str).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        return self.moto_app(environ, start_response)


def build_runtime(host: str, port: int, data_dir: Path) -> Runtime:
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(data_dir=data_dir, host=host, port=port)
    _configure_moto(runtime)
    for name in SERVICE_MODULES:
        importlib.import_module(name).install(runtime)
    return runtime


def serve(host: str, port: int, data_dir: Path, verbose: bool = False) -> int:
    """Run localaws in the foreground until SIGTERM/SIGINT."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s localaws %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.INFO if verbose else logging.ERROR)

    runtime = build_runtime(host, port, data_dir)
    app = _Router(runtime, DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    stopping = threading.Event()

    def _stop(signum, _frame):
        if not stopping.is_set():
            stopping.set()
            log.info("signal %s: shutting down", signum)
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("localaws serving on %s (data dir %s)", runtime.endpoint_url, runtime.data_dir)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        runtime.shutdown()
        log.info("localaws stopped")
    return 0
