"""classify: send one serialized image to the SageMaker endpoint named by the
``ENDPOINT_NAME`` environment variable and return its class probabilities.

Event: the serialize step's output (one image, or ``{"cases": [...]}``). Returns the same
object(s) with ``inferences`` (a JSON list of floats) and WITHOUT ``image_data``: the image
bytes leave the state once classified so a large batch stays under Step Functions' 256 KB
limit. Standard library + boto3 only.
"""

import base64
import binascii
import json
import os
from concurrent.futures import ThreadPoolExecutor

import boto3

_runtime = None
# Images of one chunk are sent to the endpoint concurrently (it serves requests in parallel).
PARALLEL_REQUESTS = int(os.environ.get("PARALLEL_REQUESTS", "4"))
TRANSIENT_CODES = {"ThrottlingException", "ServiceUnavailable", "InternalFailure",
                   "InternalDependencyException", "ModelNotReadyException"}


class InvalidEvent(ValueError):
    """The event lacks image_data or it is not valid base64."""


class EndpointError(RuntimeError):
    """The endpoint refused the image or answered something that is not probabilities."""


class TransientEndpointError(RuntimeError):
    """The endpoint is throttled or briefly unavailable: retrying may succeed."""


def _client():
    global _runtime
    if _runtime is None:
        _runtime = boto3.client("sagemaker-runtime")
    return _runtime


def lambda_handler(event, context):
    endpoint = os.environ.get("ENDPOINT_NAME")
    if not endpoint:
        raise EndpointError("the ENDPOINT_NAME environment variable is not set")
    if isinstance(event, dict) and isinstance(event.get("cases"), list):
        _client()  # create the shared client once, before the threads use it
        with ThreadPoolExecutor(max(1, PARALLEL_REQUESTS)) as pool:
            return {"cases": list(pool.map(lambda case: classify_one(endpoint, case),
                                           event["cases"]))}
    return classify_one(endpoint, event)


def classify_one(endpoint: str, event) -> dict:
    if not isinstance(event, dict) or not isinstance(event.get("image_data"), str):
        raise InvalidEvent("event is missing 'image_data' (a base64 string from serialize)")
    try:
        image = base64.b64decode(event["image_data"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent("event 'image_data' is not valid base64") from None
    runtime = _client()
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint, ContentType=event.get("content_type") or "image/png",
            Accept="application/json", Body=image)
    except runtime.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", str(exc))
        if code in TRANSIENT_CODES or exc.response.get("ResponseMetadata", {}).get(
                "HTTPStatusCode", 0) >= 500:
            raise TransientEndpointError(f"endpoint {endpoint}: {code}: {message}") from None
        raise EndpointError(f"endpoint {endpoint} refused s3://{event.get('s3_bucket')}/"
                            f"{event.get('s3_key')}: {code}: {message}") from None
    body = response["Body"].read()
    try:
        inferences = json.loads(body)
        inferences = [float(x) for x in inferences]
    except (ValueError, TypeError):
        raise EndpointError(f"endpoint {endpoint} answered {body[:200]!r}, not a JSON list "
                            "of probabilities") from None
    out = {k: v for k, v in event.items() if k != "image_data"}
    out["inferences"] = inferences
    return out
