"""seed_design: the reference ("seed") design the inference workflow is benchmarked against
(bench/bench_workflow.py); not deployed by any DAG.

One handler for three steps, chosen by the ``STEP`` environment variable, chained by a plain
three-state Task machine in ONE execution. Each step loops over ALL images of the batch and
the whole batch, base64 images included, travels in the state from step to step:

- ``serialize``: ``{"cases": [{"s3_bucket", "s3_key"}, ...]}`` →
  ``{"images": [{"s3_bucket", "s3_key", "image_data", "content_type", "inferences": []}]}``;
- ``classify``: sends every image to the endpoint ``ENDPOINT_NAME`` and fills ``inferences``
  (``image_data`` stays in the state, as in the seed);
- ``filter``: adds ``predicted_label``, ``confidence``, ``threshold`` (``THRESHOLD``, default
  0.8) and ``confident`` to every image.

Standard library + boto3 only.
"""

import base64
import json
import os

import boto3

_clients = {}


class InvalidEvent(ValueError):
    """The event is not what the previous step returns."""


def _client(service):
    if service not in _clients:
        _clients[service] = boto3.client(service)
    return _clients[service]


def _images(event):
    images = event.get("images") if isinstance(event, dict) else None
    if not isinstance(images, list):
        raise InvalidEvent("event must be an object with an 'images' list")
    return images


def serialize(event):
    cases = event.get("cases") if isinstance(event, dict) else None
    if not isinstance(cases, list):
        raise InvalidEvent("event must be an object with a 'cases' list")
    s3 = _client("s3")
    images = []
    for case in cases:
        data = s3.get_object(Bucket=case["s3_bucket"], Key=case["s3_key"])["Body"].read()
        images.append({"s3_bucket": case["s3_bucket"], "s3_key": case["s3_key"],
                       "image_data": base64.b64encode(data).decode("ascii"),
                       "content_type": "image/png", "inferences": []})
    return {"images": images}


def classify(event):
    endpoint = os.environ["ENDPOINT_NAME"]
    runtime = _client("sagemaker-runtime")
    images = _images(event)
    for image in images:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint, ContentType=image.get("content_type") or "image/png",
            Body=base64.b64decode(image["image_data"]))
        image["inferences"] = [float(x) for x in json.loads(response["Body"].read())]
    return {"images": images}


def filter_(event):
    threshold = float(os.environ.get("THRESHOLD", "0.8"))
    images = _images(event)
    for image in images:
        scores = image.get("inferences")
        if not scores:
            raise InvalidEvent(f"{image.get('s3_key')} has no inferences")
        label = max(range(len(scores)), key=scores.__getitem__)
        image.update(predicted_label=label, confidence=scores[label], threshold=threshold,
                     confident=scores[label] >= threshold)
    return {"images": images}


STEPS = {"serialize": serialize, "classify": classify, "filter": filter_}


def lambda_handler(event, context):
    step = os.environ.get("STEP", "")
    if step not in STEPS:
        raise InvalidEvent(f"STEP must be one of {sorted(STEPS)}, got {step!r}")
    return STEPS[step](event)
