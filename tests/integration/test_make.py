"""`make data` as a person types it, from a shell where the venv is not activated (only
/usr/bin:/bin on PATH), against a local stand-in for TLC's trip-data URL.

(`make ui` runs the same way in tests/ui/test_browser.py.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from taxi_duration.core.contracts import tlc_file_name
from tests.conftest import DATA_DIR, bare_env, error_lines, make_command
from tests.integration.tlc_server import TLCServer

DEFAULT_MONTHS = ("2021-01", "2021-02", "2021-03")


def make(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        make_command(*args),
        cwd=cwd,
        env=bare_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_make_data_downloads_the_default_months_once(tmp_path):
    dest = tmp_path / "data"
    with TLCServer(DATA_DIR) as tlc:
        first = make("data", f"SOURCE={tlc.url}", f"DATA={dest}", cwd=tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        again = make("data", f"SOURCE={tlc.url}", f"DATA={dest}", cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        hits = dict(tlc.hits)
    names = [tlc_file_name("green", m) for m in DEFAULT_MONTHS]
    # each month and the identity TLC gave it (what a later run checks it against); no temp file
    expected = sorted(names + [f"{name}.source.json" for name in names])
    assert sorted(p.name for p in dest.iterdir()) == expected
    for name in names:
        assert (dest / name).read_bytes() == (DATA_DIR / name).read_bytes()
        assert hits[name] == 1  # the second run kept the months it had
    assert f'make run ARGS="-P source={dest}"' in first.stdout


def test_make_data_refuses_a_month_tlc_does_not_have_in_one_line(tmp_path):
    dest = tmp_path / "data"
    with TLCServer(DATA_DIR) as tlc:
        result = make("data", f"SOURCE={tlc.url}", f"DATA={dest}", "MONTHS=2021-06", cwd=tmp_path)
    assert result.returncode != 0
    [line] = error_lines(result.stderr)
    assert line.startswith("data: error: ") and "green_tripdata_2021-06.parquet" in line
    assert "Traceback" not in result.stderr
    assert not any(dest.iterdir())
