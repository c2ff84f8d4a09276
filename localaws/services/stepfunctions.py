"""Step Functions: makes moto's Amazon States Language interpreter behave like the service.

server.py switches moto to the executing backend (executions run in threads of the server and
call Lambda/SNS over HTTP). This module fixes what that interpreter gets wrong:
- ``StartExecution`` without a name is named ``None`` and the second one collides: use a UUID;
- execution input over 256 KB is rejected (state results over 256 KB already fail the
  execution with ``States.DataLimitExceeded``);
- ``StopExecution`` is ABORTED at once with the caller's error/cause, history ends there;
- a ``States.*`` error inside a Map iteration/Parallel branch turned into States.Runtime;
- definite JSONPaths through an array index (``$.a[0].b``) returned a list;
- the interpreter's errors reached clients with an empty error code;
- service tasks built a new boto3 client per call aimed at ``localhost``: reuse one per
  service, aimed at this server's address.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading
import uuid
from datetime import UTC, datetime

log = logging.getLogger("localaws.stepfunctions")

MAX_PAYLOAD_BYTES = 256 * 1024
# Wildcards, recursive descent, filters, slices and unions select a list of values.
_INDEFINITE_PATH = re.compile(r"\*|\.\.|\[\s*\?|\[[^\]]*[:,][^\]]*\]")


def _patch_execution_names() -> None:
    from moto.stepfunctions.models import StepFunctionBackend
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    for backend in (StepFunctionBackend, StepFunctionsParserBackend):
        original = backend.start_execution

        def start_execution(self, state_machine_arn, name=None, execution_input=None,
                            *args, _original=original, **kwargs):
            if not name:
                name = str(uuid.uuid4())
            _check_input_size(execution_input)
            return _original(self, state_machine_arn, name, execution_input, *args, **kwargs)

        backend.start_execution = start_execution


def _check_input_size(execution_input) -> None:
    if execution_input is None:
        return
    size = len(execution_input.encode("utf-8")) if isinstance(execution_input, str) else 0
    if size > MAX_PAYLOAD_BYTES:
        from moto.stepfunctions.parser.api import ValidationException

        raise ValidationException(
            "1 validation error detected: Value at 'input' failed to satisfy constraint: "
            f"Member must have length less than or equal to {MAX_PAYLOAD_BYTES}")


def _patch_service_clients(runtime) -> None:
    """One boto3 client per (region, service), pointed at this server's address."""
    import boto3
    from botocore.config import Config
    from moto.stepfunctions.parser.asl.utils import boto_client

    clients: dict[tuple[str, str], object] = {}
    lock = threading.Lock()
    # Long enough for the slowest Lambda (15 min) plus its cold start.
    config = Config(parameter_validation=False, connect_timeout=10, read_timeout=960,
                    retries={"max_attempts": 0, "total_max_attempts": 1},
                    max_pool_connections=64)

    def boto_client_for(region, service, state_credentials=None):
        key = (region, service)
        client = clients.get(key)
        if client is None:
            with lock:
                client = clients.get(key)
                if client is None:
                    client = boto3.session.Session().client(
                        service, region_name=region, endpoint_url=runtime.endpoint_url,
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=config)
                    clients[key] = client
        return client

    boto_client.boto_client_for = boto_client_for
    _rebind("moto.stepfunctions.parser", "boto_client_for", boto_client_for, boto_client)


def _patch_error_codes() -> None:
    """The interpreter's exceptions carry their code in ``code`` where moto's serializer reads
    ``TYPE`` (clients saw an empty error code), and several take no message (a TypeError)."""
    from moto.core.exceptions import AWSError
    from moto.stepfunctions.parser import api

    def __init__(self, message="", exception_type=None, status=None):
        AWSError.__init__(self, message or self.TYPE, exception_type, status)

    for value in list(vars(api).values()):
        if (isinstance(value, type) and issubclass(value, AWSError) and value.TYPE is None
                and isinstance(value.__dict__.get("code"), str)):
            value.TYPE = value.__dict__["code"]
            value.STATUS = int(value.__dict__.get("status_code", 400))
            value.__init__ = __init__


def _close_history(event_manager, error, cause) -> None:
    from moto.stepfunctions.parser.api import ExecutionAbortedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.eval.event.event_manager import EventHistoryContext

    details = ExecutionAbortedEventDetails()
    if error:
        details["error"] = error
    if cause:
        details["cause"] = cause
    event_manager.add_event(
        context=EventHistoryContext.of_program_start(),
        event_type=HistoryEventType.ExecutionAborted,
        event_details=EventDetails(executionAbortedEventDetails=details),
    )
    event_manager._localaws_closed = True


def _patch_stop_execution() -> None:
    """StopExecution: ABORTED at once with the caller's error and cause, as on AWS (moto kept
    RUNNING until the running state returned and dropped error/cause)."""
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    def stop_execution(self, execution_arn, error=None, cause=None):
        execution = self.describe_execution(execution_arn)
        if execution.exec_status == ExecutionStatus.RUNNING:
            now = datetime.now(UTC)
            execution.exec_status = ExecutionStatus.ABORTED
            execution.stop_date = now
            execution.error = error or None
            execution.cause = cause or None
            worker = execution.exec_worker
            if worker is not None and worker.env is not None:
                worker.stop(stop_date=now, error=error, cause=cause)
                _close_history(worker.env.event_manager, error, cause)
        return execution

    original_reflect = BaseExecutionWorkerCommunication._reflect_execution_status

    def _reflect_execution_status(self):
        if self.execution.exec_status == ExecutionStatus.ABORTED:
            return  # stopped by StopExecution: keep its stop date, error and cause
        original_reflect(self)

    def stop_execution_response(self):
        from moto.core.responses import ActionResult

        execution = self.stepfunction_backend.stop_execution(
            self._get_param("executionArn"), self._get_param("error"), self._get_param("cause"))
        return ActionResult({"stopDate": execution.stop_date})

    original_add_event = EventManager.add_event

    def add_event(self, *args, **kwargs):
        if getattr(self, "_localaws_closed", False):
            return -1  # the execution was aborted: AWS records nothing after that
        return original_add_event(self, *args, **kwargs)

    EventManager.add_event = add_event
    StepFunctionsParserBackend.stop_execution = stop_execution
    BaseExecutionWorkerCommunication._reflect_execution_status = _reflect_execution_status
    StepFunctionResponse.stop_execution = stop_execution_response


def _rebind(module_prefix: str, name: str, value, origin) -> None:
    """Modules that did ``from x import name`` keep the old object: point them at ``value``."""
    for mod_name, module in list(sys.modules.items()):
        if (mod_name.startswith(module_prefix) and module is not origin
                and getattr(module, name, None) is not None):
            setattr(module, name, value)


def _patch_json_path() -> None:
    """A definite path such as ``$.results[0].confident`` selects one value, as on AWS; moto
    returned ``[value]`` whenever the parent step was an array index (so Choice rules on
    such paths never matched). Parsed paths are cached: the interpreter re-parses them for
    every state of every execution."""
    from jsonpath_ng.ext import parse
    from moto.stepfunctions.parser.asl.utils import json_path

    original = json_path.extract_json
    parse_cached = functools.lru_cache(maxsize=4096)(parse)

    def extract_json(path: str, data):
        if not _INDEFINITE_PATH.search(path):
            matches = parse_cached(path).find(data)
            if len(matches) == 1:
                return matches[0].value
        return original(path, data)

    json_path.parse = parse_cached
    json_path.extract_json = extract_json
    _rebind("moto.stepfunctions.parser", "extract_json", extract_json, json_path)


def _patch_states_error_propagation() -> None:
    """A ``States.*`` error inside a Map iteration or Parallel branch (e.g.
    States.DataLimitExceeded, States.Timeout) reached the parent as "Custom Error Names MUST
    NOT begin with the prefix 'States.'" (States.Runtime): keep the original error."""
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
        CustomErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.error_name import ErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )

    def __new__(cls, error_name=None):
        if isinstance(error_name, str) and error_name.startswith("States."):
            try:
                return StatesErrorName.from_name(error_name)
            except ValueError:
                pass
        return object.__new__(cls)

    def __init__(self, error_name):
        ErrorName.__init__(self, error_name=error_name)

    CustomErrorName.__new__ = __new__
    CustomErrorName.__init__ = __init__


def _patch_describe_and_threads() -> None:
    """DescribeExecution gives ``stopDate`` for TIMED_OUT too; the interpreter's global list of
    every thread it ever started is pruned so a long-running server does not grow."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.parser.utils import TMP_THREADS
    from moto.stepfunctions.responses import StepFunctionResponse

    original_describe = StepFunctionResponse.describe_execution

    def describe_execution(self):
        result = original_describe(self)
        body = result.result
        if isinstance(body, dict) and body.get("status") == "TIMED_OUT" and \
                "stopDate" not in body:
            execution = self.stepfunction_backend.describe_execution(body["executionArn"])
            if execution.stop_date is not None:
                body["stopDate"] = execution.stop_date
        return result

    original_start = StepFunctionsParserBackend.start_execution

    def start_execution(self, *args, **kwargs):
        if len(TMP_THREADS) > 256:
            TMP_THREADS[:] = [t for t in TMP_THREADS if t.is_alive()]
        return original_start(self, *args, **kwargs)

    StepFunctionResponse.describe_execution = describe_execution
    StepFunctionsParserBackend.start_execution = start_execution


def install(runtime) -> None:
    _patch_error_codes()
    _patch_execution_names()
    _patch_stop_execution()
    _patch_json_path()
    _patch_states_error_propagation()
    _patch_describe_and_threads()
    _patch_service_clients(runtime)
