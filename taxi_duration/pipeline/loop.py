"""The monthly loop (pure): which window `retrain` trains on, whether it trains at all, and what
`retrain` and `backtest` say about it.

`retrain` monitors the champion on a new month (a nested `predict`), decides by its policy, and
when it retrains runs a nested `main` on the latest window that ends at that month: training
months month - window - 1 .. month - 2, validation month - 1, test month. `register` then
compares the challenger and the champion on the newest month, which neither was tuned on.
`backtest` replays that cycle month after month, into registered models of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from taxi_duration.core.contracts import CHAMPION, POLICIES
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import Month, format_month_spec
from taxi_duration.model.drift import DEGRADED, DRIFT

ALWAYS, ON_DRIFT, NEVER = POLICIES


def check_policy(policy: str) -> str:
    """Return the policy, or fail naming the accepted ones and what each does."""
    if policy not in POLICIES:
        raise PipelineError(
            f"policy must be always (retrain every month), on_drift (when the month drifted or "
            f"degraded) or never (monitor only), got {policy!r}"
        )
    return policy


def check_policies(text: str) -> list[str]:
    """A comma-separated list of policies (backtest compares them), each once, in order."""
    found = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not found:
        raise PipelineError("policies is empty; give one or more of always, on_drift, never")
    return [check_policy(policy) for policy in found]


def check_window(window: int) -> int:
    """Require at least one training month."""
    if window < 1:
        raise PipelineError(f"window must be at least 1 (training months), got {window}")
    return window


@dataclass(frozen=True)
class Window:
    """The months a retrain trains on: its training months, validation and test month."""

    train: list[Month]
    val: Month
    test: Month

    @property
    def months(self) -> list[Month]:
        return [*self.train, self.val, self.test]

    def params(self) -> dict[str, str]:
        """main's parameters for this window."""
        return {
            "train_month": format_month_spec(self.train),
            "val_month": str(self.val),
            "test_month": str(self.test),
        }


def window_ending(month: Month, window: int) -> Window:
    """The latest window that ends at `month`: `window` training months before the validation
    month (month - 1), tested on `month`."""
    train = [month.plus(-offset) for offset in range(window + 1, 1, -1)]
    return Window(train, month.plus(-1), month)


@dataclass(frozen=True)
class Monitored:
    """The champion on the month, as the nested predict measured it."""

    version: str
    rmse: float | None
    status: str
    reasons: str


def decide(policy: str, monitored: Monitored | None) -> tuple[bool, str]:
    """Whether to retrain, and the sentence that says why."""
    if monitored is None:
        return True, f"there is no {CHAMPION} yet: train one"
    if policy == ALWAYS:
        return True, "policy always: retrain every month"
    if policy == NEVER:
        return False, "policy never: monitor only"
    if monitored.status in (DRIFT, DEGRADED):
        return True, f"policy on_drift, and the month is {monitored.status} ({monitored.reasons})"
    return False, f"policy on_drift, and the month is {monitored.status}: no need to retrain"


@dataclass(frozen=True)
class Outcome:
    """What one retrain did and found: the champion before, on the month; the decision; the
    challenger a retrain registered (its RMSE on the month) and the champion after."""

    month: str
    policy: str
    monitored: Monitored | None
    retrained: bool
    why: str
    challenger: str | None = None
    challenger_rmse: float | None = None
    champion_rmse_compared: float | None = None
    verdict: str = ""
    reused: bool = False  # the window was trained before: main reused every step
    champion_after: str | None = None

    def metrics(self) -> dict[str, float]:
        """The retrain run's metrics."""
        found: dict[str, float] = {"retrained": int(self.retrained)}
        if self.monitored is not None and self.monitored.rmse is not None:
            found["champion_rmse"] = self.monitored.rmse
        if self.challenger_rmse is not None:
            found["challenger_rmse"] = self.challenger_rmse
        return found

    def tags(self) -> dict[str, str]:
        """The retrain run's tags: the month, the decision and the champion before and after."""
        return {
            "month": self.month,
            "policy": self.policy,
            "decision": "retrain" if self.retrained else "keep",
            "status": self.monitored.status if self.monitored else "no champion",
            "champion_before": self.monitored.version if self.monitored else "none",
            "champion_after": self.champion_after or "none",
            **({"challenger": self.challenger} if self.challenger else {}),
        }


def retrain_description(outcome: Outcome, model_name: str, window: Window | None) -> str:
    """The retrain run's description (markdown in the MLflow UI): in words, what happened."""
    lines = []
    seen = outcome.monitored
    if seen is None:
        lines.append(f"`{model_name}` had no {CHAMPION} to monitor on **{outcome.month}**.")
    else:
        error = "no error measured" if seen.rmse is None else f"RMSE **{seen.rmse:.3f}**"
        why = f" ({seen.reasons})" if seen.reasons else ""
        lines.append(
            f"{CHAMPION.capitalize()} **v{seen.version}** on **{outcome.month}**: {error}, "
            f"status **{seen.status}**{why}."
        )
    lines.append(f"Decision: **{'retrain' if outcome.retrained else 'keep'}**: {outcome.why}.")
    if outcome.retrained and window is not None:
        months = window.params()
        lines.append(
            f"Trained on {months['train_month']}, validated on {months['val_month']}, tested on "
            f"{months['test_month']}: challenger **v{outcome.challenger}**, test RMSE "
            f"**{_minutes(outcome.challenger_rmse)}** against the {CHAMPION}'s "
            f"{_minutes(outcome.champion_rmse_compared)} on the same trips: {outcome.verdict}."
        )
        if outcome.reused:
            lines.append(
                "This window was trained before: main reused every step, and registered nothing "
                "new."
            )
    after = outcome.champion_after
    lines.append(f"{CHAMPION.capitalize()} now: **v{after}**." if after else f"No {CHAMPION} now.")
    return "\n\n".join(lines) + "\n"


def _minutes(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


# --- backtest ---------------------------------------------------------------------------------


@dataclass
class Replay:
    """A backtest's figures, month by month: the frozen model's RMSE, and per policy the RMSE
    of the champion in production at the month's start, whether it retrained, the challenger's
    RMSE."""

    policies: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, month: str, frozen: float | None, outcomes: Mapping[str, Outcome]) -> None:
        row: dict[str, Any] = {"month": month, "frozen_rmse": frozen}
        for policy, outcome in outcomes.items():
            seen = outcome.monitored
            row[f"{policy}_rmse"] = seen.rmse if seen else outcome.challenger_rmse
            row[f"{policy}_retrained"] = outcome.retrained
            row[f"{policy}_status"] = seen.status if seen else "first month"
            row[f"{policy}_challenger_rmse"] = outcome.challenger_rmse
        self.rows.append(row)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per policy, over the months after the first: the mean RMSE in production, the mean
        saving against the frozen model (minutes and share) and how many retrains it took."""
        later = self.table().iloc[1:]
        found = {}
        frozen = later["frozen_rmse"].astype("float64")
        for policy in self.policies:
            production = later[f"{policy}_rmse"].astype("float64")
            found[policy] = {
                "mean_rmse": float(production.mean()),
                "frozen_mean_rmse": float(frozen.mean()),
                "saving": float((frozen - production).mean()),
                "saving_share": float(((frozen - production) / frozen).mean()),
                "retrains": int(later[f"{policy}_retrained"].sum()),
                "months": len(later),
            }
        return found


def backtest_markdown(replay: Replay) -> str:
    """The month-by-month table a person reads: the frozen model, then per policy the champion
    in production (retrained months marked) and the challenger."""
    header = ["month", "frozen"]
    for policy in replay.policies:
        header += [f"{policy}: in production", f"{policy}: challenger"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in replay.rows:
        cells = [row["month"], _minutes(row["frozen_rmse"])]
        for policy in replay.policies:
            mark = f" ({row[f'{policy}_status']})" if row[f"{policy}_status"] else ""
            cells.append(_minutes(row[f"{policy}_rmse"]) + mark)
            retrained = row[f"{policy}_retrained"]
            challenger = _minutes(row[f"{policy}_challenger_rmse"]) if retrained else "–"
            cells.append(challenger)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def backtest_description(
    replay: Replay, months: Sequence[Month], window: int, models: Mapping[str, str]
) -> str:
    """The backtest run's description: what was replayed, the table, and the answer."""
    first, last = months[0], months[-1]
    summary = replay.summary()
    answers = "\n".join(
        f"- **{policy}**: mean RMSE {found['mean_rmse']:.3f} against "
        f"{found['frozen_mean_rmse']:.3f} for the frozen model ({found['saving']:+.3f} minutes, "
        f"{found['saving_share']:+.1%} a month), with {found['retrains']} retrain(s) in "
        f"{found['months']} month(s); registered model `{models[policy]}`"
        for policy, found in summary.items()
    )
    return f"""\
Replayed the monthly cycle from **{first}** to **{last}** (window {window}): the model trained \
for {first} is the **frozen** one; every later month, each policy monitored the champion it had \
in production at the month's start and retrained as the policy said.

{backtest_markdown(replay)}

RMSE in minutes on each month's trips inside the training filter; in brackets the month's status \
for the champion in production. Saving against the frozen model, months after the first:

{answers}
"""
