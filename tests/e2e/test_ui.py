"""Airflow's own UI in headless Chromium, against the real stack (Airflow standalone +
localaws) on a small generated archive: log in, open cifar_etl's trigger form, choose two
of the three classes, trigger, and watch the run page until it shows Success; then check
over the REST API and in S3 that the run carried, and published, exactly those classes.

The browser is Debian's ``chromium`` (``scripts/install_chromium.sh``) driven by the
``playwright`` package with that executable; no browser is downloaded. Screenshots of the
form and of the finished run go to ``tests/e2e/artifacts/`` (one more on failure).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest

from tests.e2e.conftest import CLASSES, TRAIN_PER_CLASS

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from airflow_api import AirflowAPI  # noqa: E402
from stack import Stack  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHOSEN = ["bicycle", "motorcycle"]
# Its own dataset name, so the partition is not shared with the scheduled run that
# unpausing cifar_etl starts for the same day.
DATASET = "ui-e2e"
TASKS = ("plan", "extract", "transform", "load")


def _skip_reason() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return (f"no Chromium at {CHROMIUM}: run scripts/install_chromium.sh (Debian's "
                "chromium) or set CHROMIUM")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pinned in requirements.lock)"
    return None


_SKIP = _skip_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))]


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1100})
            pg.set_default_timeout(60_000)  # the first load of the React app on 2 busy cores
            yield pg
        finally:
            browser.close()


def _run_infra_setup(api: AirflowAPI) -> None:
    """The bucket cifar_etl writes to exists only after infra_setup."""
    api.wait_for_dag("infra_setup", timeout=180)
    api.set_paused("infra_setup", False)
    run_id = api.trigger("infra_setup")
    assert api.wait_for_run("infra_setup", run_id, timeout=300)["state"] == "success"


def _log_in(page, base_url: str, password: str) -> None:
    page.goto(base_url + "/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)


def _wait_for_badge(page, run_id: str, timeout: float) -> list[str]:
    """The run page's state badge (the UI refreshes it by itself) until the run finishes;
    returns every state it showed."""
    badge = page.locator(f'xpath=//h2[normalize-space()="{run_id}"]'
                         '/following-sibling::*[@data-testid="state-badge"]')
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        state = badge.inner_text().strip().lower() if badge.count() else ""
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state in ("success", "failed"):
            return seen
        if time.monotonic() > deadline:
            raise TimeoutError(f"run page of {run_id} still shows {seen} after {timeout:.0f}s")
        page.wait_for_timeout(1000)


def _trigger_in_the_browser(page, stack: Stack, run_id: str) -> None:
    from playwright.sync_api import expect

    _log_in(page, stack.api_url, stack.admin_password())
    page.goto(f"{stack.api_url}/dags/cifar_etl")
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog")
    form.get_by_role("heading", name="cifar_etl").wait_for()

    classes = form.locator('textarea[name="element_classes"]')  # one string per line
    assert classes.input_value().split("\n") == list(CLASSES)  # the DAG's default
    classes.fill("\n".join(CHOSEN))
    form.locator('input[name="element_dataset_name"]').fill(DATASET)
    unpause = form.get_by_role("checkbox", name="Unpause cifar_etl on trigger")
    if not unpause.is_checked():
        form.get_by_text("Unpause cifar_etl on trigger").click()
    classes.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "ui_trigger_form.png")

    form.get_by_role("button", name="Advanced Options").click()
    form.locator('input[name="dagRunId"]').fill(run_id)
    conf_json = form.locator(".view-lines")  # the Configuration JSON editor follows the form
    expect(conf_json).to_contain_text("motorcycle")
    assert "pickup_truck" not in conf_json.inner_text()
    page.screenshot(path=ARTIFACTS / "ui_trigger_conf.png")
    form.get_by_test_id("trigger-dag-submit").click()

    page.wait_for_url(f"**/dags/cifar_etl/runs/{run_id}")
    seen = _wait_for_badge(page, run_id, timeout=240)
    assert seen[-1] == "success", seen
    task_states = page.locator('tbody [data-testid="state-badge"]')
    all_done = ["Success"] * len(TASKS)
    try:
        expect(task_states).to_have_text(all_done, timeout=20_000)
    except AssertionError:
        page.reload()  # the task list can lag behind the run's own badge
        expect(task_states).to_have_text(all_done)
    page.screenshot(path=ARTIFACTS / "ui_run_finished.png")


def test_trigger_cifar_etl_from_the_ui_form(stack, page):
    api = AirflowAPI(stack.api_url, "admin", stack.admin_password())
    _run_infra_setup(api)
    api.wait_for_dag("cifar_etl", timeout=180)
    api.set_paused("cifar_etl", True)  # the form's "unpause on trigger" must do its part
    api.set_paused("train_deploy", True)  # a new partition need not retrain here
    run_id = f"ui_e2e_{uuid.uuid4().hex[:8]}"
    try:
        _trigger_in_the_browser(page, stack, run_id)
    except BaseException:
        page.screenshot(path=ARTIFACTS / "ui_failure.png")
        raise

    run = api.run("cifar_etl", run_id)
    assert run["state"] == "success" and run["run_type"] == "manual"
    assert run["conf"]["classes"] == CHOSEN and run["conf"]["dataset_name"] == DATASET
    assert api.dag("cifar_etl")["is_paused"] is False
    tis = api.task_instances("cifar_etl", run_id)
    assert {t["task_id"]: t["state"] for t in tis} == dict.fromkeys(TASKS, "success")

    published = api.xcom("cifar_etl", run_id, "load")
    assert published["classes"] == CHOSEN
    assert published["counts"]["train"]["total"] == TRAIN_PER_CLASS * len(CHOSEN)
    s3 = boto3.client("s3", endpoint_url=stack.aws_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    manifest = json.loads(s3.get_object(Bucket=published["bucket"],
                                        Key=published["manifest_key"])["Body"].read())
    assert published["manifest_key"].startswith(f"datasets/{DATASET}/")
    assert manifest["classes"] == CHOSEN
    assert manifest["num_training_samples"] == TRAIN_PER_CLASS * len(CHOSEN)
