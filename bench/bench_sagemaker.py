"""Benchmark of localaws' SageMaker hosting: ``python -m bench.bench_sagemaker``.

Starts its own localaws (S3 persistence off), trains the image-classification algorithm on a
small generated 3-class PNG dataset (a few epochs: the model's quality is not the point),
deploys it and measures:

* ``serve.cold_start_s``: CreateEndpoint -> InService (median of 3 endpoints);
* ``serve.endpoint_p50_ms`` / ``serve.endpoint_p99_ms``: InvokeEndpoint through boto3, one
  32x32 PNG per request, one client;
* ``localaws.invoke_endpoint_overhead_p50_ms``: that p50 minus the p50 of the same request
  sent straight to the model server's ``/invocations`` (keep-alive), interleaved in one run;
* ``localaws.invoke_endpoint_server_overhead_p50_ms``: the share of that overhead spent in
  localaws itself: the same request as plain HTTP (new connection each time, as boto3 gets
  from localaws' server) minus the direct call; the rest is boto3's own client-side work;
* ``serve.throughput_rps``: requests per second with 8 concurrent clients (8 processes, each
  its own boto3 client, for a fixed time window).

Without the real algorithm installed it falls back to the stand-in of the tests
(``serve.algorithm`` says which). The machine is shared and has 2 cores: figures are noisy.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.results import merge_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import fake_sagemaker_algorithm as fake  # noqa: E402
from fake_sagemaker_algorithm import (  # noqa: E402
    REAL_IMAGE,
    colour_png,
    real_algorithm_installed,
    upload_colour_dataset,
)

ROLE = "arn:aws:iam::123456789012:role/bench"
BUCKET = "bench-sagemaker"
REQUESTS = 400
COLD_STARTS = 3
CLIENTS = 8
WINDOW_S = 8.0


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def train_model(s3, sm, image: str) -> str:
    if image != REAL_IMAGE:
        import io
        import tarfile

        buf = io.BytesIO()
        data = json.dumps({"probabilities": [0.2, 0.3, 0.5]}).encode()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("model.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        s3.put_object(Bucket=BUCKET, Key="fake/model.tar.gz", Body=buf.getvalue())
        return f"s3://{BUCKET}/fake/model.tar.gz"
    upload_colour_dataset(s3, BUCKET, "ds")

    def channel(name: str, uri: str) -> dict:
        return {"ChannelName": name, "ContentType": "application/x-image",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}}}

    name = f"bench-{uuid.uuid4().hex[:8]}"
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        HyperParameters={"num_classes": "3", "num_training_samples": "30", "epochs": "3",
                         "mini_batch_size": "10", "image_shape": "3,32,32"},
        InputDataConfig=[channel("train", f"s3://{BUCKET}/ds/train/"),
                         channel("validation", f"s3://{BUCKET}/ds/validation/"),
                         channel("train_lst", f"s3://{BUCKET}/ds/train.lst"),
                         channel("validation_lst", f"s3://{BUCKET}/ds/validation.lst")],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/models"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                        "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 1800},
    )
    desc = fake.wait_for(lambda: sm.describe_training_job(TrainingJobName=name),
                         lambda d: d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"),
                         timeout=1200, interval=1.0)
    if desc["TrainingJobStatus"] != "Completed":
        raise SystemExit(f"training failed: {desc.get('FailureReason')}")
    return desc["ModelArtifacts"]["S3ModelArtifacts"]


def create_endpoint(sm, config: str) -> tuple[str, float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    desc = fake.wait_for(lambda: sm.describe_endpoint(EndpointName=name),
                         lambda d: d["EndpointStatus"] != "Creating", timeout=300,
                         interval=0.02)
    elapsed = time.perf_counter() - start
    if desc["EndpointStatus"] != "InService":
        raise SystemExit(f"endpoint failed: {desc.get('FailureReason')}")
    return name, elapsed


def _client_worker(args: tuple[str, str, bytes, float, float]) -> tuple[int, int]:
    endpoint_url, endpoint, body, start_at, window = args
    import boto3

    rt = boto3.client("sagemaker-runtime", endpoint_url=endpoint_url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    rt.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="image/png")  # warm-up
    time.sleep(max(0.0, start_at - time.time()))
    done = errors = 0
    while time.time() < start_at + window:
        try:
            rt.invoke_endpoint(EndpointName=endpoint, Body=body,
                               ContentType="image/png")["Body"].read()
            done += 1
        except Exception:
            errors += 1
    return done, errors


def main() -> int:
    from localaws.services.sagemaker_hosting import _Connection

    real = real_algorithm_installed()
    image = REAL_IMAGE if real else fake.FAKE_IMAGE
    with tempfile.TemporaryDirectory(prefix="bench-sagemaker-") as tmp:
        server = fake.start_localaws(Path(tmp), LOCALAWS_S3_PERSISTENCE="0")
        try:
            s3, sm, rt = fake.clients(server, "s3", "sagemaker", "sagemaker-runtime")
            s3.create_bucket(Bucket=BUCKET)
            print(f"algorithm: {'image-classification' if real else 'fake stand-in'}")
            model_url = train_model(s3, sm, image)
            sm.create_model(ModelName="bench", ExecutionRoleArn=ROLE,
                            PrimaryContainer={"Image": image, "ModelDataUrl": model_url})
            sm.create_endpoint_config(EndpointConfigName="bench", ProductionVariants=[{
                "VariantName": "AllTraffic", "ModelName": "bench",
                "InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 1}])

            colds = []
            for _ in range(COLD_STARTS):
                endpoint, cold = create_endpoint(sm, "bench")
                colds.append(cold)
                sm.delete_endpoint(EndpointName=endpoint)
            endpoint, cold = create_endpoint(sm, "bench")
            colds.append(cold)
            print(f"cold starts (s): {[round(c, 3) for c in colds]}")

            body = colour_png(1, 12345)
            port = next(e for e in server.status()["sagemaker"]["endpoints"]
                        if e["name"] == endpoint)["variants"][0]["port"]
            direct = _Connection("127.0.0.1", port, timeout=60)

            def call_direct() -> bytes:
                direct.request("POST", "/invocations", body=body,
                               headers={"Content-Type": "image/png"})
                direct.quickack()
                return direct.getresponse().read()

            auth = ("AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sagemaker/"
                    "aws4_request, SignedHeaders=host, Signature=0")

            def call_raw() -> bytes:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                conn.request("POST", f"/endpoints/{endpoint}/invocations", body=body,
                             headers={"Content-Type": "image/png", "Authorization": auth})
                data = conn.getresponse().read()
                conn.close()
                return data

            def call_boto() -> bytes:
                return rt.invoke_endpoint(EndpointName=endpoint, Body=body,
                                          ContentType="image/png")["Body"].read()

            for _ in range(20):  # warm-up
                call_boto()
                call_raw()
                call_direct()
            timings: dict[str, list[float]] = {"boto": [], "raw": [], "direct": []}
            for _ in range(REQUESTS):  # interleaved: the machine's load hits all three alike
                for kind, call in (("boto", call_boto), ("raw", call_raw),
                                   ("direct", call_direct)):
                    t = time.perf_counter()
                    call()
                    timings[kind].append((time.perf_counter() - t) * 1000)
            direct.close()
            via_boto = timings["boto"]
            p50_boto, p50_raw, p50_direct = (statistics.median(timings[k])
                                             for k in ("boto", "raw", "direct"))
            print(f"p50: InvokeEndpoint (boto3) {p50_boto:.2f} ms, plain HTTP to localaws "
                  f"{p50_raw:.2f} ms, direct /invocations {p50_direct:.2f} ms")

            ctx = multiprocessing.get_context("fork")
            start_at = time.time() + 3.0
            with ctx.Pool(CLIENTS) as pool:
                results = pool.map(_client_worker, [
                    (server.endpoint_url, endpoint, body, start_at, WINDOW_S)] * CLIENTS)
            done = sum(r[0] for r in results)
            errors = sum(r[1] for r in results)
            rps = done / WINDOW_S
            print(f"{CLIENTS} clients: {done} requests in {WINDOW_S}s, {errors} errors")
        finally:
            server.stop()

    figures = {
        "localaws.invoke_endpoint_overhead_p50_ms": round(p50_boto - p50_direct, 3),
        "localaws.invoke_endpoint_server_overhead_p50_ms": round(p50_raw - p50_direct, 3),
        "serve.cold_start_s": round(statistics.median(colds), 3),
        "serve.endpoint_p50_ms": round(p50_boto, 3),
        "serve.endpoint_p99_ms": round(percentile(via_boto, 99), 3),
        "serve.direct_p50_ms": round(p50_direct, 3),
        "serve.throughput_rps": round(rps, 1),
        "serve.algorithm": "image-classification" if real else "fake",
    }
    for key, value in figures.items():
        print(f"{key} = {value}")
    merge_results(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
