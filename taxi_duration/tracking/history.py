"""The champion's history: every move of the `champion` alias, kept by the registry itself
(pure: no MLflow, no I/O; taxi_duration/tracking/registry.py reads and writes it).

MLflow aliases keep no history. Each move is one registered-model tag of its own,
`champion_history.<epoch ms>.<random>` = a JSON record (the version, the one it replaced, when,
who, which step and run, why), so two moves at the same moment write two different keys and
neither is lost (one JSON tag holding the whole list would be read, changed and written back by
both, and the later write would drop the other's entry). The keys sort in time order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from taxi_duration.core.contracts import CHAMPION_HISTORY_PREFIX, PROMOTE

# A registered-model tag value may be long, but a history record is read in the UI's tag table.
MAX_REASON_CHARS = 1000


@dataclass(frozen=True)
class ChampionMove:
    """One move of `champion`: to `version`, from `previous` ("none": there was no champion)."""

    version: str
    previous: str
    at: str  # UTC, ISO 8601 (2026-11-28T07:40:12.345Z)
    by: str  # the user who ran the step
    step: str  # register or promote
    run_id: str  # the step's run
    reason: str


def move_key(epoch_ms: int, token: str) -> str:
    """The tag key of a move made at `epoch_ms`; `token` makes it unique among simultaneous
    moves. Zero-padded, so keys sort in time order."""
    return f"{CHAMPION_HISTORY_PREFIX}{epoch_ms:013d}.{token}"


def utc_text(epoch_ms: int) -> str:
    """`epoch_ms` as UTC ISO 8601 with milliseconds, e.g. 2026-11-28T07:40:12.345Z."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(move: ChampionMove) -> str:
    return json.dumps(asdict(move) | {"reason": move.reason[:MAX_REASON_CHARS]})


def moves(tags: Mapping[str, str]) -> list[ChampionMove]:
    """The moves recorded in a registered model's tags, oldest first (unreadable ones skipped:
    a tag someone edited by hand does not break the history)."""
    found = []
    for key in sorted(k for k in tags if k.startswith(CHAMPION_HISTORY_PREFIX)):
        try:
            record = json.loads(tags[key])
            found.append(ChampionMove(**{f: str(record[f]) for f in ChampionMove.__annotations__}))
        except (ValueError, KeyError, TypeError):
            continue
    return found


def last_move_key(tags: Mapping[str, str]) -> str:
    """The key of the newest recorded move ("none" before the first one): it changes with every
    move of `champion`, so it tells whether the registry moved since it was read."""
    return max((k for k in tags if k.startswith(CHAMPION_HISTORY_PREFIX)), default="none")


def previous_champion(history: list[ChampionMove], current: str | None) -> str | None:
    """The champion before the current one: the most recent version in the history that is not
    the current champion (None: there was none).

    After a rollback (3 -> 2), the previous champion is 3 again, so `previous` twice returns to
    where it started, like `cd -`.
    """
    for move in reversed(history):
        if move.version != current:
            return move.version
    for move in reversed(history):  # a history that only ever held `current`
        if move.previous not in ("none", current):
            return move.previous
    return None


def set_aside(history: list[ChampionMove], version: str) -> ChampionMove | None:
    """The promote that took `champion` away from `version`, if that is the last word on it: a
    person's decision (a rollback, with its reason) that no automation may undo, only another
    promote. None when no promote took it away, or when it was made champion again since."""
    for move in reversed(history):
        if move.version == version and move.previous != version:
            return None  # champion again since
        if move.previous == version and move.version != version:
            return move if move.step == PROMOTE else None
    return None
