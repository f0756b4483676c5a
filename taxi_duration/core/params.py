"""Parameter parsing and validation shared by the steps and `main` (pure: no I/O, no MLflow).

`main` validates every parameter here before it launches the first step, so a typo fails in
a second instead of after a download and an hour of tuning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from taxi_duration.core.contracts import (
    BACKENDS,
    DEFAULT_MODEL_URI,
    ENCODINGS,
    ENGINES,
    FEATURE_SETS,
    REFIT_ENGINES,
    TAXIS,
)
from taxi_duration.core.errors import PipelineError

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
# TLC publishes trip records from January 2009 on.
FIRST_TLC_YEAR = 2009
# A registered model name MLflow accepts everywhere (UI, URIs, REST): no slashes, colons, '@'.
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}$")
# models:/<name>@<alias> or models:/<name>/<version>
_MODEL_URI_RE = re.compile(r"^models:/([^/@]+)(?:@([^/@]+)|/([^/@]+))$")
_URL_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month, the unit TLC publishes trip records in."""

    year: int
    month: int

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(year=self.year, month=self.month, day=1)

    @property
    def end(self) -> pd.Timestamp:
        """First instant of the next month (exclusive bound)."""
        return self.start + pd.offsets.MonthBegin(1)

    def next(self) -> Month:
        """The month after this one."""
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def plus(self, months: int) -> Month:
        """The month `months` later (earlier when negative)."""
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)


def parse_month(text: str, name: str = "month") -> Month:
    """Parse 'YYYY-MM' into a Month, or fail with a line that shows the expected form."""
    match = _MONTH_RE.match(str(text).strip())
    if not match:
        raise PipelineError(f"{name} must look like YYYY-MM (e.g. 2021-01), got {text!r}")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise PipelineError(f"{name} {text!r} has no month {month:02d}; use 01..12")
    if year < FIRST_TLC_YEAR:
        raise PipelineError(
            f"{name} {text!r} is before {FIRST_TLC_YEAR}, when TLC trip records start; "
            "pick a later month"
        )
    return Month(year, month)


# A range longer than this is almost certainly a typo (2021-01..2201-01), not a request.
MAX_MONTHS = 240


def parse_month_spec(text: str, name: str = "months") -> list[Month]:
    """Months from one month (2021-04), a list (2021-04,2021-05) or a range (2021-04..2021-06),
    or lists of both; returned in calendar order, each once."""
    months: set[Month] = set()
    parts = [part.strip() for part in str(text).split(",")]
    if not any(parts):
        raise PipelineError(
            f"{name} is empty; give a month like 2021-04 or a range 2021-04..2021-06"
        )
    for part in parts:
        if ".." in part:
            first_text, _, last_text = part.partition("..")
            first, last = parse_month(first_text, name), parse_month(last_text, name)
            if last < first:
                raise PipelineError(
                    f"{name} range {part!r} ends before it starts; write it as {last}..{first}"
                )
            month = first
            while month <= last and len(months) <= MAX_MONTHS:
                months.add(month)
                month = month.next()
        else:
            months.add(parse_month(part, name))
        if len(months) > MAX_MONTHS:
            raise PipelineError(f"{name} {text!r} spans more than {MAX_MONTHS} months; narrow it")
    return sorted(months)


def format_month_spec(months: list[Month]) -> str:
    """The canonical text of a set of months: runs of consecutive months as first..last, the
    rest listed (2021-01..2021-03,2021-06); one month is just that month (2021-01)."""
    parts: list[str] = []
    ordered = sorted(set(months))
    start = ordered[0]
    for previous, month in zip(ordered, [*ordered[1:], None], strict=True):
        if month is not None and month == previous.next():
            continue
        parts.append(str(start) if start == previous else f"{start}..{previous}")
        if month is not None:
            start = month
    return ",".join(parts)


def parse_months(train: str, val: str, test: str) -> tuple[list[Month], Month, Month]:
    """Parse the training month(s) (one month, a list or a range: a window) and the validation
    and test months, and require every training month < val < test (no look-ahead)."""
    window = parse_month_spec(train, "train_month")
    va, te = parse_month(val, "val_month"), parse_month(test, "test_month")
    last = window[-1]
    if not last < va < te:
        shown = format_month_spec(window)
        raise PipelineError(
            f"months must be in order train < val < test, got train={shown} val={va} "
            f"test={te}; validate and test on months after the training month(s)"
        )
    return window, va, te


def check_taxi(taxi: str) -> str:
    """Return the taxi colour, or fail naming the accepted ones."""
    if taxi not in TAXIS:
        raise PipelineError(f"taxi must be one of {', '.join(TAXIS)}, got {taxi!r}")
    return taxi


def check_encoding(encoding: str) -> str:
    """Return the encoding, or fail naming the accepted ones."""
    if encoding not in ENCODINGS:
        raise PipelineError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    return encoding


def check_features(features: str) -> str:
    """Return the feature set, or fail naming the accepted ones and what each means."""
    if features not in FEATURE_SETS:
        raise PipelineError(
            f"features must be time (zones, distance and the pickup time) or course (zones and "
            f"distance, the course's model), got {features!r}"
        )
    return features


def check_backend(backend: str) -> str:
    """Where hpo runs its trials: in process, or on Spark."""
    if backend not in BACKENDS:
        raise PipelineError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def check_duration_bounds(min_duration: float, max_duration: float) -> tuple[float, float]:
    """Require 0 <= min_duration < max_duration (minutes)."""
    if not 0 <= min_duration < max_duration:
        raise PipelineError(
            f"need 0 <= min_duration < max_duration (minutes), got {min_duration} and "
            f"{max_duration}; the course uses 1 and 60"
        )
    return min_duration, max_duration


def check_positive(value: int, name: str) -> int:
    """Require an integer budget of at least 1."""
    if value < 1:
        raise PipelineError(f"{name} must be at least 1, got {value}")
    return value


def check_sample_rows(rows: int, name: str = "hpo_sample_rows") -> int:
    """Require a sample size of 0 (every row) or more."""
    if rows < 0:
        raise PipelineError(f"{name} must be 0 (every row) or a row count, got {rows}")
    return rows


def check_tolerance(value: float) -> float:
    """Require a non-negative RMSE tolerance."""
    if value < 0:
        raise PipelineError(f"rmse_tolerance must be >= 0 (minutes of RMSE), got {value}")
    return value


def check_min_improvement(value: float) -> float:
    """Require a non-negative improvement (minutes of test RMSE) for a new champion."""
    if not value >= 0:  # NaN too
        raise PipelineError(
            f"min_improvement must be >= 0 (minutes of test RMSE the candidate must gain over "
            f"the champion; 0 = any gain), got {value}"
        )
    return value


def check_confidence(value: float) -> float:
    """Require a confidence level in [0, 1): 0 asks for none, 0.95 for 95%."""
    if not 0 <= value < 1:
        raise PipelineError(
            f"min_confidence must be at least 0 and below 1 (0 = no paired comparison, 0.95 = "
            f"95% sure that the candidate's error is lower), got {value}"
        )
    return value


def check_thresholds(drift_psi: float, tolerance: float) -> tuple[float, float]:
    """Require a positive PSI level for `drift` and a non-negative RMSE tolerance (a share)."""
    if not drift_psi > 0:
        raise PipelineError(
            f"drift_psi must be above 0 (the PSI from which a month counts as drift; 0.25 is "
            f"the usual level of a significant shift), got {drift_psi}"
        )
    if not tolerance >= 0:
        raise PipelineError(
            f"tolerance must be >= 0 (how far above its test RMSE a month's RMSE may go before "
            f"the month is degraded: 0.1 is 10%), got {tolerance}"
        )
    return drift_psi, tolerance


def check_model_name(name: str) -> str:
    """Require a registered-model name that works in `models:/<name>@alias` URIs."""
    if not _MODEL_NAME_RE.match(name):
        raise PipelineError(
            f"model_name {name!r} is not usable in a models:/ URI; use letters, digits, "
            "'-', '_' and '.', e.g. nyc-taxi-duration"
        )
    return name


def check_refit_engine(engine: str) -> str:
    """Where train_best refits: in this process, or on Spark."""
    if engine not in REFIT_ENGINES:
        raise PipelineError(
            f"engine must be one of {', '.join(REFIT_ENGINES)} (where train_best refits the "
            f"chosen trial), got {engine!r}"
        )
    return engine


def check_engine(engine: str) -> str:
    """How predict scores: in this process with pandas, or on Spark."""
    if engine not in ENGINES:
        raise PipelineError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


@dataclass(frozen=True)
class ModelRef:
    """A registered model version as a URI names it: by alias (champion) or by number."""

    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.alias is not None:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version}"


def parse_model_uri(text: str, name: str = "model_uri") -> ModelRef:
    """Parse models:/<name>@<alias> or models:/<name>/<version>; anything else (a runs:/ URI, a
    logged model models:/m-..., a stage) is refused: predict records which registered version
    it scored."""
    match = _MODEL_URI_RE.match(str(text).strip())
    if not match:
        raise PipelineError(
            f"{name} must name a registered model version, models:/<name>@<alias> or "
            f"models:/<name>/<version> (e.g. {DEFAULT_MODEL_URI}), got {text!r}"
        )
    model, alias, version = match.groups()
    if not _MODEL_NAME_RE.match(model):
        raise PipelineError(
            f"{name} {text!r} names model {model!r}, which is not a registered-model name; "
            "use letters, digits, '-', '_' and '.'"
        )
    if version is not None and not version.isdigit():
        raise PipelineError(
            f"{name} {text!r}: a version is a number (models:/{model}/3); for an alias write "
            f"models:/{model}@{version}"
        )
    return ModelRef(model, alias=alias, version=version)


def check_output(output: str) -> str:
    """Where predict writes its predictions: '' (the run's artifacts), a local folder, or an
    s3://bucket[/prefix]. Other URL schemes are refused rather than taken for folder names."""
    text = output.strip()
    if text.startswith("s3://"):
        if not text[len("s3://") :].split("/", 1)[0]:
            raise PipelineError(f"output {output!r} has no bucket; write s3://<bucket>/<prefix>")
        return text
    if _URL_SCHEME_RE.match(text):
        raise PipelineError(
            f"output {output!r} is neither a local folder nor an s3:// prefix; use one of those, "
            "or leave it empty to keep the predictions as run artifacts"
        )
    return text
