"""The MLflow UI a pipeline run leaves behind, in a real browser: Debian's chromium driven by
Playwright (no browser download), on `make ui` run from a shell where the venv is not activated,
over the session's trained store, which it only reads.

Checks what the README promises a newcomer: the printed link lands on the runs table (not
MLflow 3's GenAI overview), the main run shows its name and expands into the five steps, hpo
expands into its trials, comparing the trials draws the parallel coordinates plot, the main run
describes itself, train_best's pictures open in the artifact viewer, and the registered model
shows `champion`. Every page is saved as a screenshot; the folder is printed at the end of the
session (set UI_SCREENSHOTS to choose it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from taxi_duration.core.contracts import (
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_NAME,
    MODEL_NAME,
    MODEL_TRAINING_KIND,
    STEP_TAG,
    STEPS,
    TEST_ERRORS_PLOT,
    runs_table_url,
)
from taxi_duration.pipeline.orchestration import run_name
from tests.conftest import FAST_HPO, bare_env, make_command, screenshots_folder

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE_TIMEOUT_MS = 90_000  # the UI's first load compiles a lot of JavaScript on a busy machine

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="needs Playwright for Python: pip install -e '.[test]'",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ui(trained_store, tmp_path_factory) -> Iterator[str]:
    """`make ui` on the trained store; yields the link it printed."""
    work = tmp_path_factory.mktemp("ui-server")  # the server's cwd: nothing lands in the store
    db = trained_store.root / "mlflow.db"
    before = digest(db)
    port = free_port()
    log = work / "ui.log"
    command = make_command("ui", f"STORE={trained_store.uri}", f"UI_PORT={port}")
    with log.open("w") as out:
        server = subprocess.Popen(
            [*command, "UI_ARGS=--workers 1"],
            cwd=work,
            env=bare_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        links = re.findall(r"http://\S+", log.read_text())
        yield links[0]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert digest(db) == before  # the UI only read the store


@pytest.fixture(scope="module")
def shots(pytestconfig: pytest.Config) -> Path:
    folder = screenshots_folder(pytestconfig)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def close_assistant(page) -> None:
    """Fold away the MLflow Assistant panel, which covers a third of every page."""
    close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count():
        close.first.click()


def expand(page, run_name_: str) -> None:
    """Unfold a parent run's children in the runs table."""
    link = page.get_by_role("link", name=run_name_, exact=True)
    row = page.locator("[role=row]", has=link)
    row.locator('button[data-component-id*="runnamecellrenderer"]').first.click()


@pytest.fixture(scope="module")
def store_runs(trained_store):
    client = trained_store.client
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return experiment, {r.data.tags.get(STEP_TAG): r for r in runs}


def test_the_experiment_is_tagged_model_training(store_runs):
    experiment, _ = store_runs
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND


def test_printed_link_lands_on_the_runs_table_and_unfolds_to_the_trials_compare_page(
    ui, trained_store, store_runs, page, shots
):
    experiment, by_step = store_runs
    base = ui.split("/#/")[0]
    assert ui == runs_table_url(base, experiment.experiment_id)
    # main's own summary prints the same page of the UI it tells the user to start
    assert runs_table_url("http://127.0.0.1:5000", experiment.experiment_id) in (
        trained_store.result.stdout
    )
    main = by_step["main"]
    name = run_name(main.data.params)
    assert main.info.run_name == name

    page.goto(ui)
    page.get_by_role("link", name=name, exact=True).wait_for()
    close_assistant(page)
    assert "workflowType=machine_learning" in page.url and "/runs" in page.url
    assert page.get_by_role("heading", name="Runs").first.is_visible()
    assert page.get_by_text("Overview").count() == 0  # not the GenAI overview
    page.screenshot(path=shots / "1-runs-table.png")

    expand(page, name)
    for step in STEPS:
        page.get_by_role("link", name=step, exact=True).wait_for()
    page.screenshot(path=shots / "2-main-run-steps.png")

    expand(page, "hpo")
    trials = [f"trial-{n:03d}" for n in range(int(FAST_HPO["max_evals"]))]
    for trial in trials:
        link = page.get_by_role("link", name=trial, exact=True)
        link.wait_for()
        page.locator("[role=row]", has=link).locator("input[type=checkbox]").first.check()
    page.screenshot(path=shots / "3-hpo-trials.png")

    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text(f"Comparing {len(trials)} Runs").wait_for()
    page.locator(".parcoords").first.wait_for()
    axis_titles = page.locator(".parcoords .axis-title").all_text_contents()
    assert {"max_depth", "learning_rate", "rmse"} <= set(axis_titles), axis_titles
    close_assistant(page)
    page.screenshot(path=shots / "4-compare-trials.png")


def run_page(ui: str, run, tail: str = "") -> str:
    """A run's page, in the "Model training" view the printed link chose."""
    base, _, query = ui.partition("/#/")
    mode = query.partition("?")[2]
    return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}{tail}?{mode}"


def test_main_run_page_describes_the_run(ui, store_runs, page, shots):
    _, by_step = store_runs
    page.goto(run_page(ui, by_step["main"]))
    page.get_by_text("The whole pipeline on").wait_for()
    close_assistant(page)
    page.get_by_text("Show more").click()
    page.get_by_text("test RMSE:").wait_for()
    for step in STEPS:
        assert page.get_by_role("link", name=step, exact=True).count()  # "Child runs"
    page.screenshot(path=shots / "5-main-run-description.png")


def test_train_best_pictures_open_in_the_artifact_viewer(ui, store_runs, page, shots):
    _, by_step = store_runs
    page.goto(run_page(ui, by_step["train_best"], f"/artifactPath/{TEST_ERRORS_PLOT}"))
    image = page.locator(f'img[alt="{TEST_ERRORS_PLOT}"]').first
    image.wait_for()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    close_assistant(page)
    page.screenshot(path=shots / "6-train-best-errors.png")


def test_registered_model_page_shows_champion(ui, page, shots):
    base = ui.split("/#/")[0]
    page.goto(f"{base}/#/models/{MODEL_NAME}")
    page.get_by_text("champion").first.wait_for()
    close_assistant(page)
    page.screenshot(path=shots / "7-registered-model.png")
