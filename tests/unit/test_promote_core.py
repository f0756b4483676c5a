"""promote's pure core: the reason it requires and the version `previous` or a number names."""

from __future__ import annotations

import pytest

from taxi_duration.core.errors import PipelineError
from taxi_duration.pipeline.champion import check_reason, choose_version
from taxi_duration.tracking.history import ChampionMove


def move(version: str, previous: str = "none") -> ChampionMove:
    return ChampionMove(version, previous, "2026-11-28T07:40:12.345Z", "ana", "register", "r", "x")


def test_reason_is_required_and_kept_on_one_line():
    assert check_reason("  v7 goes\ncrazy ") == "v7 goes crazy"
    with pytest.raises(PipelineError, match="reason is empty"):
        check_reason(" \t ")


def test_a_number_is_taken_as_given():
    assert choose_version("007", "3", []) == "7"


@pytest.mark.parametrize("text", ["two", "0", "-1", "1.5", ""])
def test_anything_but_a_number_or_previous_is_refused(text):
    with pytest.raises(PipelineError, match="version must be a version number"):
        choose_version(text, "3", [])


def test_previous_comes_from_the_history():
    history = [move("1"), move("3", "1")]
    assert choose_version("previous", "3", history) == "1"
    assert choose_version(" Previous ", "3", history) == "1"


def test_previous_without_an_earlier_champion_is_refused():
    with pytest.raises(PipelineError, match="v1 is the only champion it has had"):
        choose_version("previous", "1", [move("1")])
    with pytest.raises(PipelineError, match="no champion yet"):
        choose_version("previous", None, [])
