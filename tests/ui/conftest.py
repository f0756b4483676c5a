"""Where the browser tests leave their screenshots, said at the end of the test session: the
folder UI_SCREENSHOTS names, else `ui-screenshots` in the session's temp folder (the one the
pytest-xdist workers' folders sit in, so the controller that prints the summary knows it too)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def screenshots_folder(config: pytest.Config) -> Path:
    if os.environ.get("UI_SCREENSHOTS"):
        return Path(os.environ["UI_SCREENSHOTS"])
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "ui-screenshots"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    folder = screenshots_folder(config)
    if folder.is_dir() and any(folder.iterdir()):
        terminalreporter.write_line(f"ui screenshots: {folder}")
