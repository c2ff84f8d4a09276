"""A TLS-only bucket policy (the project's stack has one) lets requests through localaws,
while a plain Deny still denies."""

import json
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError


def _policy(bucket: str, extra: list | None = None) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}, *(extra or [])]})


def test_tls_only_policy_allows_requests(localaws):
    s3 = boto3.client("s3")
    bucket = f"tls-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(bucket))
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"hello"


def test_unconditional_deny_still_denies(localaws):
    s3 = boto3.client("s3")
    bucket = f"deny-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="secret.txt", Body=b"x")
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(bucket, [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/secret.txt"}]))
    with pytest.raises(ClientError, match="403|AccessDenied"):
        s3.get_object(Bucket=bucket, Key="secret.txt")
