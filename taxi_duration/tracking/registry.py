"""The MLflow model registry: versions, aliases and their tags. Aliases only, never stages.

Writes here survive a second writer at the same moment (two pipelines, two registers). MLflow's
SQL registry writes an alias, a tag or a version by looking it up and then inserting it, so two
writers that both miss the row both insert and the second gets a unique-key violation (HTTP 400
from a tracking server). Such a write is retried after a random pause, a bounded number of
times; any other registry error, or one that keeps conflicting, becomes one PipelineError line
that names the model and what was being written.

The registry has no compare-and-set for an alias, so moves of `champion` are made under a lock
(`champion_lock`): creating a registered model is the one write MLflow makes atomic (a second
create of the same name is refused), so holding the lock means having created the model
`<name>.champion-lock`, and releasing it means deleting that model.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from taxi_duration.core.contracts import CHAMPION, CHAMPION_SINCE_TAG, CHAMPION_UNTIL_TAG
from taxi_duration.core.errors import PipelineError
from taxi_duration.tracking import history
from taxi_duration.tracking.history import ChampionMove
from taxi_duration.tracking.runs import client, tracking_uri
from taxi_duration.tracking.server import lost_server_message, redact

T = TypeVar("T")

CONFLICT_RETRIES = 8
# The first pause before a retry is up to this long; each later one up to twice the previous.
BACKOFF_SECONDS = 0.05
# What MLflow's answer says when a write lost a race: a unique key already taken (PostgreSQL,
# SQLite, MySQL), a version number taken three times over, or SQLite busy with another writer.
CONFLICT_MARKERS = (
    "UniqueViolation",
    "UNIQUE constraint failed",
    "Duplicate entry",
    "duplicate key value",
    "Model Version creation error",
    "database is locked",
)
RETRY_HINT = "run the same command again: registering a run and moving aliases are safe to repeat"
LOCK_SUFFIX = ".champion-lock"
# A lock still there, unchanged, after this long was left by a process that died holding it.
LOCK_LEASE_SECONDS = 60.0
# Longest wait for the lock: other holders each hold it for a few requests.
LOCK_WAIT_SECONDS = 180.0
# A waiter tries the lock again after a random pause whose bound doubles from BACKOFF_SECONDS,
# this many times (to 1.6 s); it looks at the lock's age (a second request) at most every
# LOCK_CHECK_SECONDS. Waiters that try more often only queue their tries on the server ahead
# of the writes of the process that holds the lock.
LOCK_BACKOFF_DOUBLINGS = 5
LOCK_CHECK_SECONDS = 5.0


class WriteConflict(Exception):
    """A registry write that lost a race with another writer of the same row."""


def is_conflict(exc: MlflowException) -> bool:
    return any(marker in str(exc) for marker in CONFLICT_MARKERS)


def pause(attempt: int) -> None:
    """Wait a random time before retry `attempt` (0-based), so racing writers spread out."""
    time.sleep(random.uniform(0, BACKOFF_SECONDS * 2**attempt))


@contextmanager
def one_line(name: str, what: str) -> Iterator[None]:
    """Turn a registry error into one PipelineError line naming the model and the write.

    A lost tracking server is left to the CLI shell, which says so in its own line.
    """
    try:
        yield
    except MlflowException as exc:
        if lost_server_message(exc, tracking_uri()) is not None:
            raise
        detail = " ".join(str(exc).split())[:300]
        raise PipelineError(
            f"the registry at {redact(tracking_uri())} refused to {what} of model {name!r} "
            f"({detail}); {RETRY_HINT}"
        ) from None
    except WriteConflict:
        raise PipelineError(
            f"could not {what} of model {name!r}: other writers kept changing it at the same "
            f"moment ({CONFLICT_RETRIES} tries); {RETRY_HINT}"
        ) from None


def on_conflict_retry(write: Callable[[], T]) -> T:
    """Run `write`; when it loses a race, pause a random moment and write again (the row the
    other writer inserted is then there, and the write updates it). Raises WriteConflict when
    every try lost."""
    for attempt in range(CONFLICT_RETRIES):
        try:
            return write()
        except MlflowException as exc:
            if not is_conflict(exc):
                raise
        pause(attempt)
    raise WriteConflict()


# --- reading ----------------------------------------------------------------------------------


def aliased_version(name: str, alias: str) -> ModelVersion | None:
    """The version `alias` points at, or None if the model or the alias does not exist.

    The model is looked up by search first: with basic auth, a non-admin user asking for an alias
    of a model that does not exist gets 403, not 404.
    """
    with one_line(name, f"read alias {alias!r}"):
        found = find_model(name)
        if found is None or alias not in found.aliases:
            return None
        return client().get_model_version(name, str(found.aliases[alias]))


def alias_target(name: str, alias: str) -> str | None:
    """The version number `alias` points at (None: no such model or alias); one request."""
    with one_line(name, f"read alias {alias!r}"):
        found = find_model(name)
    if found is None or alias not in found.aliases:
        return None
    return str(found.aliases[alias])


def live_version(name: str, version: str) -> ModelVersion | None:
    """Version `version` of `name`, or None if it was never registered or was deleted."""
    with one_line(name, f"read version {version}"):
        try:
            return client().get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise


def model_tags(name: str) -> dict[str, str] | None:
    """The registered model's tags, or None if there is no such model."""
    with one_line(name, "read the tags"):
        found = find_model(name)
    return None if found is None else dict(found.tags)


def version_numbers(name: str) -> list[str]:
    """The live version numbers of model `name`, lowest first."""
    with one_line(name, "list the versions"):
        found = client().search_model_versions(f"name = '{name}'")
    return sorted((str(v.version) for v in found), key=int)


def last_champion_move(name: str) -> str:
    """The key of the newest move of `champion` of model `name` in its history ("none")."""
    return history.last_move_key(model_tags(name) or {})


def champion_state(name: str) -> tuple[str, str]:
    """The version `champion` points at and the key of its newest recorded move ("none" for
    either that is missing), from one read of the model: what a reused register must match."""
    with one_line(name, "read the champion"):
        found = find_model(name)
    if found is None:
        return "none", "none"
    return str(found.aliases.get(CHAMPION, "none")), history.last_move_key(found.tags)


def champion_history(name: str) -> list[ChampionMove]:
    """Every recorded move of `champion` of model `name`, oldest first."""
    return history.moves(model_tags(name) or {})


def versions_of_run(name: str, run_id: str) -> list[str]:
    """The live version numbers of `name` registered from `run_id`, lowest first."""
    with one_line(name, f"look up the versions of run {run_id}"):
        found = client().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return sorted((str(v.version) for v in found), key=int)


# --- writing ----------------------------------------------------------------------------------


def find_model(name: str) -> RegisteredModel | None:
    """The registered model `name` (aliases, tags), or None; every lookup of a model goes here.
    By search: with basic auth, a non-admin asking for a model that does not exist gets 403."""
    found = client().search_registered_models(f"name = '{name}'", max_results=1)
    return found[0] if found else None


def get_or_create_version(
    name: str, model_uri: str, run_id: str, tags: Mapping[str, Any], description: str
) -> tuple[str, bool]:
    """The version of `name` registered from `run_id`, registering it (and the model) if there
    is none yet; returns its number and whether it was created now.

    Registering the same run twice would only duplicate the version. Tags and description go
    in the creating call, so a version never exists without them. Two registers of one run at
    the same moment can both find no version and both create one: then the lower number stands
    and the other is withdrawn by the register that made it (whoever made a higher number
    created it after the lower one was committed, so it always sees that one).
    """
    existing = versions_of_run(name, run_id)
    if existing:
        return existing[0], False
    c = client()
    with one_line(name, "create the registered model"):
        on_conflict_retry(lambda: create_model_if_missing(name))
    with one_line(name, f"register run {run_id} as a new version"):
        version = on_conflict_retry(
            lambda: c.create_model_version(
                name,
                model_uri,
                run_id=run_id,
                tags={k: str(v) for k, v in tags.items()},
                description=description,
                # A tracking server accepts a models:/m-<id> source only with that model_id.
                model_id=(
                    model_uri.removeprefix("models:/")
                    if model_uri.startswith("models:/m-")
                    else None
                ),
            )
        )
    number = str(version.version)  # an int in some MLflow versions, a str in others
    first = versions_of_run(name, run_id)[0]
    if first != number:
        with one_line(name, f"delete the duplicate version {number}"):
            client().delete_model_version(name, number)
        return first, False
    return number, True


def create_model_if_missing(name: str) -> None:
    try:
        client().create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def set_alias(name: str, alias: str, version: str) -> None:
    """Point `alias` at `version`, whoever else writes it at the same moment (last one wins;
    `champion`, where the winner matters, is moved under `champion_lock`)."""
    with one_line(name, f"set alias {alias!r} to version {version}"):
        on_conflict_retry(lambda: client().set_registered_model_alias(name, alias, version))


def describe_version(name: str, version: str, markdown: str) -> None:
    """Set version `version`'s description (markdown in the UI); the last writer wins (two
    registers of one run describe it alike)."""
    with one_line(name, f"describe version {version}"):
        on_conflict_retry(
            lambda: client().update_model_version(name, version, description=markdown)
        )


def describe_model_if_blank(name: str, markdown: str) -> None:
    """Give the registered model `name` this description if it has none: one a person wrote
    in the UI is kept. Two registers at the same moment may both write it; they write the
    same text."""
    with one_line(name, "describe the registered model"):
        found = find_model(name)
        if found is not None and not (found.description or "").strip():
            on_conflict_retry(lambda: client().update_registered_model(name, description=markdown))


def withdraw_version(name: str, version: str) -> None:
    """Delete a version this process registered and could not finish, unless it is the
    champion by now (a second register of the same run adopted it and moved the alias)."""
    with one_line(name, f"delete version {version}"):
        if alias_target(name, CHAMPION) != version:
            client().delete_model_version(name, version)


def move_champion(
    name: str, version: str, previous: str | None, by: str, step: str, run_id: str, reason: str
) -> ChampionMove:
    """Point `champion` at `version` and append the move to its history; call it holding
    `champion_lock`, having checked the champion still is `previous`."""
    set_alias(name, CHAMPION, version)
    return record_champion_move(name, version, previous, by, step, run_id, reason)


def record_champion_move(
    name: str, version: str, previous: str | None, by: str, step: str, run_id: str, reason: str
) -> ChampionMove:
    """Append a move of `champion` (just made) to the history the registry keeps: a
    registered-model tag of its own (history.move_key: unique, so moves made at the same moment
    never overwrite each other), `champion_since` on the new champion and `champion_until` on
    the one it replaced."""
    now = time.time_ns() // 1_000_000
    move = ChampionMove(
        version, previous or "none", history.utc_text(now), by, step, run_id, reason
    )
    key = history.move_key(now, secrets.token_hex(4))
    c = client()
    with one_line(name, f"record the move of alias {CHAMPION!r} to version {version}"):
        on_conflict_retry(lambda: c.set_registered_model_tag(name, key, history.encode(move)))
        on_conflict_retry(
            lambda: c.set_model_version_tag(name, version, CHAMPION_SINCE_TAG, move.at)
        )
        on_conflict_retry(lambda: c.delete_model_version_tag(name, version, CHAMPION_UNTIL_TAG))
        if previous and previous != version and live_version(name, previous) is not None:
            on_conflict_retry(
                lambda: c.set_model_version_tag(name, previous, CHAMPION_UNTIL_TAG, move.at)
            )
    return move


def record_champion_hold(
    name: str, champion: str, by: str, step: str, run_id: str, reason: str
) -> ChampionMove:
    """Append to the champion's history a decision to keep `champion` where it is (a record
    whose version and previous are both the champion): register refusing a version a person
    took `champion` away from. The history then holds the person's rollback and the refusal."""
    now = time.time_ns() // 1_000_000
    kept = ChampionMove(champion, champion, history.utc_text(now), by, step, run_id, reason)
    key = history.move_key(now, secrets.token_hex(4))
    with one_line(name, f"record that alias {CHAMPION!r} stays at version {champion}"):
        on_conflict_retry(
            lambda: client().set_registered_model_tag(name, key, history.encode(kept))
        )
    return kept


@dataclass(frozen=True)
class HeldLock:
    """The champion lock as its holder holds it: the lock model's name and the holder's token."""

    lock: str
    token: str

    def check(self) -> None:
        """Fail unless this process still holds the lock: a holder slower than the lease may
        have had its lock broken, and must then not move `champion` (the next holder may be
        moving it)."""
        if _lock_owner(self.lock) != self.token:
            raise PipelineError(
                f"lost the lock {self.lock!r} (held longer than its lease of "
                f"{LOCK_LEASE_SECONDS:.0f} s, so another writer broke it); {RETRY_HINT}"
            )


@contextmanager
def champion_lock(name: str, holder: str) -> Iterator[HeldLock]:
    """Hold the lock on moving `champion` of model `name` (see the module docstring).

    Waits, with random pauses (LOCK_BACKOFF_DOUBLINGS), while another process holds it. A
    lock left by a process that died (held by the same owner for LOCK_LEASE_SECONDS, by this
    process's own clock, looking every LOCK_CHECK_SECONDS) is broken. The lock carries its
    holder's random token, and is deleted only by that holder, or by a waiter that saw that same
    token for a whole lease: a slow holder's release never deletes the next holder's lock.
    """
    lock = f"{name}{LOCK_SUFFIX}"
    token = secrets.token_hex(8)
    started = time.monotonic()
    seen: dict[str, float] = {}  # owner token of a lock seen -> when it was first seen here
    attempt = 0
    next_check = started
    with one_line(name, f"take the lock {lock!r} on moving alias {CHAMPION!r}"):
        while not _create_lock(lock, name, holder, token):
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + LOCK_CHECK_SECONDS
                owner = _lock_owner(lock)
                if owner is not None:
                    first_seen = seen.setdefault(owner, time.monotonic())
                    if time.monotonic() - first_seen > LOCK_LEASE_SECONDS:
                        _delete_lock(lock, owner)  # its holder died: one owner for a whole lease
            if time.monotonic() - started > LOCK_WAIT_SECONDS:
                raise PipelineError(
                    f"waited {LOCK_WAIT_SECONDS:.0f} s for the lock {lock!r} on moving alias "
                    f"{CHAMPION!r} of model {name!r}; if no register or promote is running, "
                    f"delete the registered model {lock!r} and {RETRY_HINT}"
                )
            pause(min(attempt, LOCK_BACKOFF_DOUBLINGS))
            attempt += 1
    try:
        yield HeldLock(lock, token)
    finally:
        with one_line(name, f"release the lock {lock!r}"):
            _delete_lock(lock, token)


# Tags that mark the lock model as the pipeline's own, not a model to use.
LOCK_OWNER_TAG = "pipeline.lock_owner"
LOCK_TAGS = {"pipeline.internal": "true", "pipeline.kind": "lock"}


def _create_lock(lock: str, name: str, holder: str, token: str) -> bool:
    """Create the lock model, owned by `token`; False if it exists (held by another process)."""
    try:
        client().create_registered_model(
            lock,
            tags={**LOCK_TAGS, "holder": holder, LOCK_OWNER_TAG: token},
            description=(
                f"**Internal to the pipeline: not a model.** A lock held while {holder} moves "
                f"alias `{CHAMPION}` of `{name}`, deleted right after (it lives for a few "
                f"requests). One left here by a process that died is broken after "
                f"{LOCK_LEASE_SECONDS:.0f} s."
            ),
        )
    except MlflowException as exc:
        # Taken; or taken and released again while MLflow looked at the one that refused it.
        if exc.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            return False
        if is_conflict(exc):
            return False
        raise
    return True


def _lock_owner(lock: str) -> str | None:
    """The token of the lock's holder ("" for a lock without one), None if there is no lock."""
    found = find_model(lock)
    return None if found is None else str(found.tags.get(LOCK_OWNER_TAG, ""))


def _delete_lock(lock: str, owner: str) -> None:
    """Delete the lock if `owner` holds it. MLflow has no conditional delete, so the owner is
    looked up first: a lock another process took meanwhile is left alone."""
    if _lock_owner(lock) != owner:
        return
    try:
        client().delete_registered_model(lock)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
