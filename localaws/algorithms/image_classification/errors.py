"""Failure types, named after the prefixes SageMaker puts in a job's FailureReason."""

from __future__ import annotations


class AlgorithmFailure(Exception):
    """Base: ``str(exc)`` is the one-line reason written to ``output/failure``."""

    prefix = "AlgorithmError"

    def reason(self) -> str:
        text = " ".join(str(self).split())  # one line, whatever the message held
        return f"{self.prefix}: {text}"


class ClientError(AlgorithmFailure):
    """The caller's fault: a hyperparameter, a channel or the data is wrong."""

    prefix = "ClientError"


class AlgorithmError(AlgorithmFailure):
    """Our fault, or something we could not foresee (e.g. the ONNX check failed)."""

    prefix = "AlgorithmError"


class Stopped(BaseException):
    """Raised from the SIGTERM/SIGINT handler to unwind the training loop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
