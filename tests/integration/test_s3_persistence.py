"""S3 buckets and objects survive a restart of localaws on the same data dir, kill -9 too."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from localaws.testing import TEST_CREDENTIALS, LocalAWSProcess

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "DenyDelete", "Effect": "Deny", "Principal": "*",
                   "Action": "s3:DeleteBucket", "Resource": "arn:aws:s3:::settings"}],
}

LIFECYCLE_RULE = {"ID": "old-versions", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
                  "NoncurrentVersionExpiration": {"NoncurrentDays": 30}}
CORS_RULE = {"AllowedMethods": ["GET"], "AllowedOrigins": ["http://localhost:8080"]}


def _s3(server):
    return _client(server, "s3")


def _client(server, service):
    return boto3.client(
        service, endpoint_url=server.endpoint_url, region_name="us-east-1",
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1}, max_pool_connections=16))


def _kill9(server: LocalAWSProcess) -> None:
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    server.stop()


def _snapshot(s3, bucket):
    """Every version of every key with its bytes and the headers a user reads back."""
    out = {}
    versions = s3.list_object_versions(Bucket=bucket)
    for v in versions.get("Versions", []):
        obj = s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        out[(v["Key"], v["VersionId"])] = {
            "sha": hashlib.sha256(obj["Body"].read()).hexdigest(),
            "etag": obj["ETag"], "type": obj["ContentType"], "meta": obj["Metadata"],
            "latest": v["IsLatest"], "modified": v["LastModified"],
        }
    for m in versions.get("DeleteMarkers", []):
        out[(m["Key"], m["VersionId"])] = {"delete_marker": True, "latest": m["IsLatest"]}
    return out


@pytest.fixture()
def data_dir(tmp_path):
    return tmp_path / "data"


def test_everything_acknowledged_survives_kill9(data_dir, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024 + 123))  # > 8 MB: boto3 goes multipart

    server = LocalAWSProcess(data_dir).start()
    try:
        s3 = _s3(server)
        # bucket settings
        s3.create_bucket(Bucket="settings")
        s3.put_bucket_versioning(Bucket="settings",
                                 VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_encryption(Bucket="settings", ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        s3.put_public_access_block(Bucket="settings", PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": False,
            "RestrictPublicBuckets": True})
        s3.put_bucket_policy(Bucket="settings", Policy=json.dumps(POLICY))
        s3.put_bucket_tagging(Bucket="settings",
                              Tagging={"TagSet": [{"Key": "team", "Value": "ml"}]})
        s3.put_bucket_lifecycle_configuration(Bucket="settings", LifecycleConfiguration={
            "Rules": [LIFECYCLE_RULE]})
        s3.put_bucket_ownership_controls(Bucket="settings", OwnershipControls={
            "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
        s3.put_bucket_cors(Bucket="settings", CORSConfiguration={"CORSRules": [CORS_RULE]})
        # versions, metadata, tags, a delete marker, a copy, a multipart upload
        s3.put_object(Bucket="settings", Key="model/v.json", Body=b'{"v": 1}',
                      ContentType="application/json", Metadata={"run": "a"},
                      Tagging="stage=dev")
        s3.put_object(Bucket="settings", Key="model/v.json", Body=b'{"v": 2}',
                      ContentType="application/json", Metadata={"run": "b"})
        s3.put_object(Bucket="settings", Key="tmp/scratch", Body=b"x")
        s3.delete_object(Bucket="settings", Key="tmp/scratch")
        s3.copy_object(Bucket="settings", Key="model/copy.json",
                       CopySource={"Bucket": "settings", "Key": "model/v.json"})
        s3.upload_file(str(big), "settings", "data/big.bin",
                       Config=TransferConfig(multipart_threshold=8 * 1024 * 1024))
        # an unversioned bucket: overwrite, single and batch deletes, odd key names
        s3.create_bucket(Bucket="plain")
        for i in range(30):
            s3.put_object(Bucket="plain", Key=f"images/{i:03d}.png", Body=os.urandom(1024))
        s3.put_object(Bucket="plain", Key="images/000.png", Body=b"overwritten")
        s3.delete_object(Bucket="plain", Key="images/001.png")
        s3.delete_objects(Bucket="plain", Delete={"Objects": [
            {"Key": f"images/{i:03d}.png"} for i in range(2, 10)]})
        s3.put_object(Bucket="plain", Key="dir with space/ü ñ %2F+&=.txt", Body=b"odd")
        s3.put_object(Bucket="plain", Key="empty", Body=b"")
        s3.create_bucket(Bucket="short-lived")
        s3.delete_bucket(Bucket="short-lived")
        # made server-side (CloudFormation calls moto's backend, not the S3 API)
        _client(server, "cloudformation").create_stack(StackName="store", TemplateBody=json.dumps(
            {"Resources": {"B": {"Type": "AWS::S3::Bucket", "Properties": {
                "BucketName": "from-stack", "VersioningConfiguration": {"Status": "Enabled"},
                "Tags": [{"Key": "origin", "Value": "cfn"}]}}}}))

        before = {b: _snapshot(s3, b) for b in ("settings", "plain")}
        tags_before = s3.get_object_tagging(Bucket="settings", Key="model/v.json",
                                            VersionId=s3.list_object_versions(
                                                Bucket="settings", Prefix="model/v.json")[
                                                "Versions"][-1]["VersionId"])["TagSet"]
    finally:
        _kill9(server)

    server = LocalAWSProcess(data_dir).start()
    try:
        s3 = _s3(server)
        assert sorted(b["Name"] for b in s3.list_buckets()["Buckets"]) == [
            "from-stack", "plain", "settings"]
        assert s3.get_bucket_versioning(Bucket="from-stack")["Status"] == "Enabled"
        assert s3.get_bucket_tagging(Bucket="from-stack")["TagSet"] == [
            {"Key": "origin", "Value": "cfn"}]
        assert {b: _snapshot(s3, b) for b in ("settings", "plain")} == before

        assert s3.get_bucket_versioning(Bucket="settings")["Status"] == "Enabled"
        rule = s3.get_bucket_encryption(Bucket="settings")[
            "ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert s3.get_public_access_block(Bucket="settings")[
            "PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": False,
            "RestrictPublicBuckets": True}
        assert json.loads(s3.get_bucket_policy(Bucket="settings")["Policy"]) == POLICY
        assert s3.get_bucket_tagging(Bucket="settings")["TagSet"] == [
            {"Key": "team", "Value": "ml"}]
        assert s3.get_bucket_lifecycle_configuration(Bucket="settings")["Rules"] == [
            LIFECYCLE_RULE]
        assert s3.get_bucket_ownership_controls(Bucket="settings")["OwnershipControls"] == {
            "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        assert s3.get_bucket_cors(Bucket="settings")["CORSRules"] == [CORS_RULE]
        oldest = s3.list_object_versions(Bucket="settings", Prefix="model/v.json")[
            "Versions"][-1]["VersionId"]
        assert s3.get_object_tagging(Bucket="settings", Key="model/v.json",
                                     VersionId=oldest)["TagSet"] == tags_before
        assert tags_before == [{"Key": "stage", "Value": "dev"}]

        latest = s3.get_object(Bucket="settings", Key="model/v.json")
        assert latest["Body"].read() == b'{"v": 2}' and latest["Metadata"] == {"run": "b"}
        assert latest["ServerSideEncryption"] == "AES256"
        with pytest.raises(ClientError, match="NoSuchKey"):
            s3.get_object(Bucket="settings", Key="tmp/scratch")
        got = tmp_path / "big.out"
        s3.download_file("settings", "data/big.bin", str(got))
        assert got.read_bytes() == big.read_bytes()

        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="plain")["Contents"]]
        assert keys == sorted(["dir with space/ü ñ %2F+&=.txt", "empty", "images/000.png"]
                              + [f"images/{i:03d}.png" for i in range(10, 30)])
        assert s3.get_object(Bucket="plain", Key="images/000.png")["Body"].read() == (
            b"overwritten")
        assert s3.get_object(Bucket="plain", Key="empty")["Body"].read() == b""

        status = server.status()["s3_persistence"]
        assert status["restored_buckets"] == 3
        assert status["restored_bytes"] >= big.stat().st_size

        # changes after a restore persist too, through a graceful stop this time
        s3.put_bucket_tagging(Bucket="settings",
                              Tagging={"TagSet": [{"Key": "team", "Value": "ml2"}]})
        s3.delete_objects(Bucket="plain", Delete={"Objects": [
            {"Key": k} for k in keys if k.startswith("images/")]})
        s3.delete_object(Bucket="settings", Key="data/big.bin")
    finally:
        server.stop()

    server = LocalAWSProcess(data_dir).start()
    try:
        s3 = _s3(server)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="plain")["Contents"]]
        assert keys == ["dir with space/ü ñ %2F+&=.txt", "empty"]
        assert s3.get_bucket_tagging(Bucket="settings")["TagSet"] == [
            {"Key": "team", "Value": "ml2"}]
        assert s3.get_bucket_lifecycle_configuration(Bucket="settings")["Rules"] == [
            LIFECYCLE_RULE]
        with pytest.raises(ClientError, match="NoSuchKey"):
            s3.get_object(Bucket="settings", Key="data/big.bin")
        # the multipart object's older version is still there
        assert len(s3.list_object_versions(Bucket="settings", Prefix="data/big.bin")[
            "Versions"]) == 1
    finally:
        server.stop()


def test_concurrent_writes_then_kill9(data_dir):
    server = LocalAWSProcess(data_dir).start()
    try:
        s3 = _s3(server)
        s3.create_bucket(Bucket="busy")

        def writer(worker):
            client = _s3(server)
            for i in range(25):
                client.put_object(Bucket="busy", Key=f"w{worker}/{i}", Body=os.urandom(512))
                client.put_object(Bucket="busy", Key="shared", Body=f"{worker}-{i}".encode())
            return worker

        with ThreadPoolExecutor(8) as pool:
            assert sorted(pool.map(writer, range(8))) == list(range(8))
        before = _snapshot(s3, "busy")
    finally:
        _kill9(server)

    server = LocalAWSProcess(data_dir).start()
    try:
        assert _snapshot(_s3(server), "busy") == before
        assert len(before) == 8 * 25 + 1
    finally:
        server.stop()
    leftovers = [p for p in (data_dir / "s3").rglob("*")
                 if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []
