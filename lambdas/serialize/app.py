"""serialize: read one image from S3 and return it base64-encoded for the next step.

Event: ``{"s3_bucket": ..., "s3_key": ...}`` (one case of the workflow's ``cases``), or
``{"cases": [...]}`` (a small chunk of them, as the state machine sends).
Returns, per image: ``{"s3_bucket", "s3_key", "image_data": <base64 str>,
"content_type", "inferences": []}`` (a chunk: ``{"cases": [...]}``).
Standard library + boto3 only.
"""

import base64
import os

import boto3

MAX_IMAGE_BYTES = int(os.environ.get("MAX_IMAGE_BYTES", str(4 * 1024 * 1024)))
_s3 = None


class InvalidEvent(ValueError):
    """The event lacks a field or has one of the wrong type."""


class ImageNotFound(LookupError):
    """The S3 object does not exist."""


class NotAnImage(ValueError):
    """The S3 object is not a PNG or JPEG image (or is too large to send)."""


def _client():
    global _s3
    if _s3 is None:
        _s3 = boto3.client("s3")
    return _s3


def sniff_content_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


def _field(event: dict, name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"event is missing a non-empty string {name!r}: got {value!r}")
    return value


def lambda_handler(event, context):
    if isinstance(event, dict) and "cases" in event:
        if not isinstance(event["cases"], list):
            raise InvalidEvent(f"'cases' must be a list, got {type(event['cases']).__name__}")
        return {"cases": [serialize_one(case) for case in event["cases"]]}
    return serialize_one(event)


def serialize_one(event) -> dict:
    if not isinstance(event, dict):
        raise InvalidEvent(f"event must be an object with s3_bucket and s3_key, got "
                           f"{type(event).__name__}")
    bucket, key = _field(event, "s3_bucket"), _field(event, "s3_key")
    s3 = _client()
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.NoSuchKey:
        raise ImageNotFound(f"s3://{bucket}/{key} does not exist") from None
    except s3.exceptions.NoSuchBucket:
        raise ImageNotFound(f"bucket {bucket!r} does not exist") from None
    if obj["ContentLength"] > MAX_IMAGE_BYTES:
        raise NotAnImage(f"s3://{bucket}/{key} is {obj['ContentLength']} bytes; the limit is "
                         f"{MAX_IMAGE_BYTES}")
    data = obj["Body"].read()
    content_type = sniff_content_type(data)
    if content_type is None:
        raise NotAnImage(f"s3://{bucket}/{key} is not a PNG or JPEG image "
                         f"(starts with {data[:8]!r})")
    return {
        "s3_bucket": bucket,
        "s3_key": key,
        "image_data": base64.b64encode(data).decode("ascii"),
        "content_type": content_type,
        "inferences": [],
    }
