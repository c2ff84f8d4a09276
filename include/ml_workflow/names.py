"""Names of the AWS resources the project owns, derived from the settings in one place
(the inference workflow creates them, teardown deletes them)."""

from __future__ import annotations

from ml_workflow.settings import Settings

PROJECT = "ml-workflow"
LAMBDAS = ("serialize", "classify", "filter")


def lambda_function_name(s: Settings, role: str) -> str:
    if role not in LAMBDAS:
        raise ValueError(f"unknown Lambda {role!r}; the workflow has {LAMBDAS}")
    return f"{PROJECT}-{role}"


def lambda_function_names(s: Settings) -> dict[str, str]:
    return {role: lambda_function_name(s, role) for role in LAMBDAS}


def state_machine_name(s: Settings) -> str:
    return f"{PROJECT}-inference"
