"""The inference state machine: load the Amazon States Language definition from
``include/statemachine/`` and fill in the ARNs (the same substitution CloudFormation's
``DefinitionSubstitutions`` performs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

DEFINITION = Path(__file__).resolve().parents[1] / "statemachine" / "inference.asl.json"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def substitute(node, values: dict[str, str]):
    if isinstance(node, str):
        def repl(m: re.Match) -> str:
            if m.group(1) not in values:
                raise KeyError(f"state machine definition needs a value for ${{{m.group(1)}}}")
            return values[m.group(1)]
        return _PLACEHOLDER.sub(repl, node)
    if isinstance(node, list):
        return [substitute(x, values) for x in node]
    if isinstance(node, dict):
        return {k: substitute(v, values) for k, v in node.items()}
    return node


def definition(function_arns: dict[str, str], topic_arn: str, max_concurrency: int = 4,
               images_per_chunk: int = 16, path: Path = DEFINITION) -> str:
    """The definition as a JSON string, ready for Create/UpdateStateMachine."""
    doc = json.loads(path.read_text())
    doc = substitute(doc, {
        "SerializeFunctionArn": function_arns["serialize"],
        "ClassifyFunctionArn": function_arns["classify"],
        "FilterFunctionArn": function_arns["filter"],
        "AlertTopicArn": topic_arn,
        "ImagesPerChunk": str(int(images_per_chunk)),
    })
    doc["States"]["ClassifyEachImage"]["MaxConcurrency"] = int(max_concurrency)
    return json.dumps(doc)
