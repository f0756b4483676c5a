"""Where the browser tests leave their screenshots, said at the end of the test session."""

from __future__ import annotations

from pathlib import Path

import pytest

SHOTS: list[Path] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for folder in SHOTS:
        terminalreporter.write_line(f"ui screenshots: {folder}")
