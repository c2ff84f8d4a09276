"""The inference workflow against the reference ("seed") design (issue "inference_workflow"),
on a localaws of its own with an endpoint serving a model trained on the shared archive:

    .venv/bin/python -m bench.bench_workflow [--epochs 10] [--rounds 3]

Ours is the ``inference_workflow`` DAG: one run with ``dag.test()`` (count 200, batch_size 50)
deploys the three Lambdas and the state machine and classifies the 200 test images in 4
parallel executions (a Map per image: serialize -> classify -> filter; the image bytes leave
the state once classified). The seed design is ``lambdas/seed_design``: ONE execution of a
three-Task chain whose Lambdas each loop over all images of the payload, the batch's base64
images travelling in the state.

Both are then timed on the same 200 images, started by boto3 against the deployed machines:
StartExecution of every batch -> all SUCCEEDED (DescribeExecution polled every 50 ms), warm
Lambdas, ``--rounds`` rounds alternating which design goes first, median. The seed design
cannot carry 200 images in one execution (256 KB), so it gets the same split as ours: 4
executions of 50 started together.

Figures merged into bench/results.json:
- workflow.sfn_s: ours, seconds of the 4 executions of the 200 images (Step Functions only);
- workflow.images_per_s: ours, 200 images / workflow.sfn_s;
- workflow.seed_design_images_per_s: the seed design on the same images, same split;
- workflow.dag_run_s: wall time of the dag.test() run (deploys everything, first calls cold);
- workflow.dag_executions_s: that run's executions, first StartDate -> last StopDate;
- workflow.seed_design_breaks_at_images: the smallest image count (real 32x32 PNGs of the
  archive, bisected) at which ONE seed-design execution fails with States.DataLimitExceeded;
- workflow.seed_design_one_execution_images_per_s: ONE seed execution over the most images
  it can carry (breaks_at - 1), median over ``--rounds``;
- workflow.ours_succeeds_at_images: the largest count ours was shown to classify (the 200
  above, also in ONE execution, then 1000 train images split by the DAG's batch_size 50
  into 20 parallel executions, all SUCCEEDED with 1000 results);
  workflow.ours_1000_images_per_s: that 1000-image run.
The machine is shared and has 2 cores: the figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid

import boto3

from bench.harness import DS, LocalStack, load_dag, publish_shared_archive, say, task_states
from bench.harness import train_and_deploy as train_and_deploy_model
from bench.results import merge_results

ENDPOINT = "bench-classifier"
BATCH = 50
IMAGES = 200
LARGE = 1000
SEED_STEPS = ("serialize", "classify", "filter")


def _cases(bucket: str, prefix: str, split: str) -> list[dict]:
    s3 = boto3.client("s3")
    lst = s3.get_object(Bucket=bucket, Key=f"{prefix}{split}.lst")["Body"].read().decode()
    return [{"s3_bucket": bucket, "s3_key": f"{prefix}{split}/{line.split(chr(9))[2]}"}
            for line in lst.splitlines() if line]


def _batches(cases: list[dict], size: int) -> list[list[dict]]:
    return [cases[i:i + size] for i in range(0, len(cases), size)]


def run_executions(machine: str, batches: list[list[dict]], timeout: float = 600
                   ) -> tuple[float, list[dict]]:
    """Start one execution per batch at once; seconds until none is RUNNING, descriptions."""
    sfn = boto3.client("stepfunctions")
    tag = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    arns = [sfn.start_execution(stateMachineArn=machine, name=f"bench-{tag}-{i}",
                                input=json.dumps({"cases": batch}))["executionArn"]
            for i, batch in enumerate(batches)]
    pending, done = set(arns), {}
    deadline = time.monotonic() + timeout
    while pending:
        for arn in list(pending):
            d = sfn.describe_execution(executionArn=arn)
            if d["status"] != "RUNNING":
                done[arn] = d
                pending.discard(arn)
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} executions still RUNNING after {timeout}s")
            time.sleep(0.05)
    return time.perf_counter() - started, [done[a] for a in arns]


def _results(descriptions: list[dict], key: str) -> list[dict]:
    bad = [(d["status"], d.get("error"), d.get("cause", "")[:300]) for d in descriptions
           if d["status"] != "SUCCEEDED"]
    if bad:
        raise RuntimeError(f"executions did not succeed: {bad}")
    return [r for d in descriptions for r in json.loads(d["output"])[key]]


def deploy_seed_design() -> str:
    """The seed design's three functions (one package, STEP chooses) and its machine."""
    from ml_workflow import lambda_package

    lam = boto3.client("lambda")
    package = lambda_package.build("seed_design")
    arns = {}
    for step in SEED_STEPS:
        fn = lam.create_function(
            FunctionName=f"bench-seed-{step}", Runtime="python3.11", Handler="app.lambda_handler",
            Role=os.environ["ML_WORKFLOW_LAMBDA_ROLE_ARN"], Code={"ZipFile": package.data},
            Timeout=300, MemorySize=256,
            Environment={"Variables": {"STEP": step, "ENDPOINT_NAME": ENDPOINT}})
        arns[step] = fn["FunctionArn"]
    states = {}
    for i, step in enumerate(SEED_STEPS):
        states[step.capitalize()] = {
            "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": arns[step], "Payload.$": "$"},
            "OutputPath": "$.Payload",
            **({"Next": SEED_STEPS[i + 1].capitalize()} if i < 2 else {"End": True})}
    definition = {"Comment": "seed design: serialize all -> classify all -> filter all",
                  "StartAt": "Serialize", "States": states}
    return boto3.client("stepfunctions").create_state_machine(
        name="bench-seed-design", definition=json.dumps(definition),
        roleArn=os.environ["ML_WORKFLOW_STEPFUNCTIONS_ROLE_ARN"])["stateMachineArn"]


def seed_breaks_at(machine: str, pool: list[dict], known_ok: int, guess: int) -> int | None:
    """Smallest n such that ONE seed execution over pool[:n] fails with DataLimitExceeded
    (bisected between known_ok, which fits, and guess, or all of pool if guess fits)."""
    def fits(n: int) -> bool:
        _, (d,) = run_executions(machine, [pool[:n]])
        if d["status"] == "SUCCEEDED":
            return True
        if d.get("error") == "States.DataLimitExceeded":
            return False
        raise RuntimeError(f"seed design at {n} images: {d['status']} {d.get('error')} "
                           f"{d.get('cause', '')[:300]}")

    lo, hi = known_ok, guess
    if fits(hi):
        lo, hi = hi, len(pool)
        if fits(hi):
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
        say(f"seed design: one execution carries {lo} images, not {hi}")
    return hi


def run(epochs: int, rounds: int) -> dict[str, float | int | None]:
    from ml_workflow import names
    from ml_workflow.settings import settings_from_env

    env = {"ML_WORKFLOW_POLL_INTERVAL_S": "1", "ML_WORKFLOW_RETRY_DELAY_S": "1",
           "ML_WORKFLOW_ENDPOINT_NAME": ENDPOINT, "ML_WORKFLOW_CLASSES": "bicycle,motorcycle"}
    figures: dict[str, float | int | None] = {}
    with LocalStack(airflow=True, extra_env=env) as stack:
        bucket = stack.bucket
        prefix = publish_shared_archive(bucket, stack.tmp / "publish")
        train_and_deploy_model(bucket, prefix, ENDPOINT, {"epochs": epochs})

        dag = load_dag("inference_workflow.py", "inference_workflow")
        started = time.perf_counter()
        dag_run = dag.test(run_conf={"partition": DS, "count": IMAGES, "batch_size": BATCH})
        figures["workflow.dag_run_s"] = round(time.perf_counter() - started, 1)
        states = task_states(dag_run)
        if dag_run.state != "success":
            raise RuntimeError(f"inference_workflow run {dag_run.state}: {states}")
        sfn = boto3.client("stepfunctions")
        ours = next(m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]
                    if m["name"] == names.state_machine_name(settings_from_env()))
        executions = [sfn.describe_execution(executionArn=e["executionArn"])
                      for e in sfn.list_executions(stateMachineArn=ours)["executions"]]
        if len(executions) != IMAGES // BATCH or len(_results(executions, "results")) != IMAGES:
            raise RuntimeError(f"the DAG run did not classify {IMAGES} images in "
                               f"{IMAGES // BATCH} executions: {states}")
        figures["workflow.dag_executions_s"] = round(
            (max(e["stopDate"] for e in executions)
             - min(e["startDate"] for e in executions)).total_seconds(), 2)
        say(f"inference_workflow DAG: {figures['workflow.dag_run_s']} s, its executions "
            f"{figures['workflow.dag_executions_s']} s")

        seed = deploy_seed_design()
        test_cases = _cases(bucket, prefix, "test")[:IMAGES]
        batches = _batches(test_cases, BATCH)
        _results(run_executions(seed, batches)[1], "images")  # warm the seed's Lambdas
        times: dict[str, list[float]] = {"ours": [], "seed": []}
        for r in range(rounds):
            order = (("ours", ours, "results"), ("seed", seed, "images"))
            for design, machine, key in (order if r % 2 == 0 else order[::-1]):
                seconds, described = run_executions(machine, batches)
                results = _results(described, key)
                if len(results) != IMAGES:
                    raise RuntimeError(f"{design}: {len(results)} results for {IMAGES} images")
                times[design].append(seconds)
                say(f"round {r}: {design} classified {IMAGES} images in {seconds:.2f} s")
        figures["workflow.sfn_s"] = round(statistics.median(times["ours"]), 2)
        figures["workflow.images_per_s"] = round(IMAGES / statistics.median(times["ours"]), 1)
        figures["workflow.seed_design_images_per_s"] = round(
            IMAGES / statistics.median(times["seed"]), 1)

        # ONE seed execution over n real PNGs: bisect n between one batch (carried above)
        # and the 200 images (else every image of the archive).
        pool = test_cases + _cases(bucket, prefix, "train")
        breaks_at = seed_breaks_at(seed, pool, BATCH, IMAGES)
        figures["workflow.seed_design_breaks_at_images"] = breaks_at
        most = (breaks_at or len(pool) + 1) - 1
        single = [run_executions(seed, [pool[:most]])[0] for _ in range(rounds)]
        figures["workflow.seed_design_one_execution_images_per_s"] = round(
            most / statistics.median(single), 1)
        say(f"seed design, ONE execution of {most} images: {[round(t, 2) for t in single]} s")

        # What the seed cannot: the 200 images in ONE execution of ours.
        seconds, described = run_executions(ours, [test_cases])
        if len(_results(described, "results")) != IMAGES:
            raise RuntimeError(f"ours in one execution of {IMAGES} images lost results")
        say(f"ours: ONE execution of {IMAGES} images succeeded in {seconds:.1f} s")

        train_cases = _cases(bucket, prefix, "train")[:LARGE]
        seconds, described = run_executions(ours, _batches(train_cases, BATCH))
        results = _results(described, "results")
        if len(results) != LARGE:
            raise RuntimeError(f"ours at {LARGE} images returned {len(results)} results")
        figures["workflow.ours_succeeds_at_images"] = LARGE
        figures["workflow.ours_1000_images_per_s"] = round(LARGE / seconds, 1)
        say(f"ours: {LARGE} images in {len(described)} executions of {BATCH} in {seconds:.1f} s")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10,
                        help="epochs of the endpoint's model (its quality is not measured)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    figures = run(max(1, args.epochs), max(1, args.rounds))
    merge_results(figures)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
