"""Registry writers released at the same instant (tests/reliability/test_registry_races.py).

`python -m tests.reliability.registry_writer <folder> <process>` reads <folder>/plan.json and
runs the writers plan["processes"][<process>] lists, one thread each. It opens the store, says
it is ready (<folder>/ready-<process>), then for each round waits for <folder>/go-<round> (a
start time a moment ahead, the same for every process), sleeps until that instant and lets
every writer do what `register` does to the registry for its train run
(taxi_duration.pipeline.champion.publish) or what `promote` does (champion.move_champion),
recording the
outcome, or the traceback of what failed, in <folder>/result-<round>-<writer>.json. The process
exits 1 if any write failed.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from taxi_duration.core.contracts import CHAMPION
from taxi_duration.pipeline import champion
from taxi_duration.tracking import registry

POLL_SECONDS = 0.005


def wait_for_file(path: Path, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(POLL_SECONDS)
    return path.read_text()


def write(folder: Path, number: int, round_: dict[str, Any], writer: str, start: float) -> bool:
    """One writer's register, at `start`; returns whether it succeeded."""
    mine = round_["writers"][writer]
    time.sleep(max(0.0, start - time.time()))
    outcome: dict[str, Any] = {"writer": writer, **mine, "began": time.time()}
    try:
        if round_["action"] == "promote":
            moved = champion.move_champion(
                round_["model"], mine["version"], mine["reason"], f"writer-{writer}", ""
            )
            outcome |= asdict(moved)
        else:
            published = champion.publish(
                round_["model"],
                f"runs:/{mine['run_id']}/model",
                mine["run_id"],
                float(mine["rmse"]),
                round_["data_tags"],
                champion.ScoredRows(round_["rows_digest"]),
            )
            outcome |= asdict(published) | {"moved": published.moved}
    except BaseException as exc:
        outcome["error"] = "".join(traceback.format_exception(exc))
    outcome["ended"] = time.time()
    partial = folder / f"result-{number}-{writer}.partial"
    partial.write_text(json.dumps(outcome))
    partial.replace(folder / f"result-{number}-{writer}.json")  # whole, or not there yet
    return "error" not in outcome


def main(folder: Path, process: str) -> int:
    plan = json.loads((folder / "plan.json").read_text())
    writers = plan["processes"][process]
    # Open the store before the barrier, so the first round races like the others.
    registry.aliased_version(plan["rounds"][0]["model"], CHAMPION)
    (folder / f"ready-{process}").write_text("ready")
    ok = True
    for number, round_ in enumerate(plan["rounds"]):
        start = float(wait_for_file(folder / f"go-{number}"))
        with ThreadPoolExecutor(len(writers)) as pool:
            done = [pool.submit(write, folder, number, round_, w, start) for w in writers]
        ok = all(future.result() for future in done) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
