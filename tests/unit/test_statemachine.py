"""The ASL definition: every placeholder filled, the seed's contract kept."""

import json

import pytest

from ml_workflow import statemachine

ARNS = {r: f"arn:aws:lambda:us-east-1:123456789012:function:ml-workflow-{r}"
        for r in ("serialize", "classify", "filter")}
TOPIC = "arn:aws:sns:us-east-1:123456789012:alerts"


def test_definition_is_filled_and_bounded():
    text = statemachine.definition(ARNS, TOPIC, max_concurrency=3, images_per_chunk=5)
    assert "${" not in text
    doc = json.loads(text)
    assert doc["States"]["Chunk"]["Parameters"]["chunks.$"] == \
        "States.ArrayPartition($.cases, 5)"
    mapped = doc["States"]["ClassifyEachImage"]
    assert mapped["Type"] == "Map" and mapped["ItemsPath"] == "$.chunks"
    assert mapped["MaxConcurrency"] == 3
    steps = mapped["ItemProcessor"]["States"]
    assert [steps[s]["Parameters"]["FunctionName"] for s in ("Serialize", "Classify", "Filter")] \
        == [ARNS["serialize"], ARNS["classify"], ARNS["filter"]]
    assert all(steps[s].get("Retry") for s in steps)
    assert mapped["Catch"][0]["Next"] == "NotifyFailure"
    assert doc["States"]["NotifyLowConfidence"]["Parameters"]["TopicArn"] == TOPIC


def test_missing_value_is_named():
    with pytest.raises(KeyError, match="ClassifyFunctionArn"):
        statemachine.substitute("${ClassifyFunctionArn}", {})
