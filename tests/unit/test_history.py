"""The champion's history as registry tags: keys in time order, records read back, `previous`."""

from __future__ import annotations

from taxi_duration.tracking.history import (
    ChampionMove,
    encode,
    last_move_key,
    move_key,
    moves,
    previous_champion,
    utc_text,
)


def move(version: str, previous: str = "none", reason: str = "why") -> ChampionMove:
    return ChampionMove(
        version, previous, "2026-11-28T07:40:12.345Z", "ana", "promote", "r1", reason
    )


def test_move_keys_sort_in_time_order_across_digit_counts():
    keys = [move_key(ms, "x") for ms in (999_999_999_999, 1_764_316_800_000, 1_764_316_800_001)]
    assert keys == sorted(keys)


def test_moves_reads_records_back_oldest_first_and_skips_other_and_broken_tags():
    tags = {
        move_key(2, "b"): encode(move("3", "2")),
        move_key(1, "a"): encode(move("2", "1")),
        move_key(3, "c"): "not json",
        "owner": "ana",
    }
    assert [m.version for m in moves(tags)] == ["2", "3"]
    assert moves(tags)[1] == move("3", "2")


def test_a_long_reason_is_cut_in_the_record():
    (read,) = moves({move_key(1, "a"): encode(move("2", reason="x" * 5000))})
    assert len(read.reason) == 1000


def test_previous_is_the_last_other_version_so_two_rollbacks_return():
    history = [move("1"), move("2", "1"), move("3", "2")]
    assert previous_champion(history, "3") == "2"
    history.append(move("2", "3"))  # promote previous
    assert previous_champion(history, "2") == "3"


def test_previous_of_a_first_champion_is_none():
    assert previous_champion([move("1")], "1") is None
    assert previous_champion([], None) is None


def test_previous_falls_back_on_a_champion_set_before_the_history_began():
    assert previous_champion([move("4", "3")], "4") == "3"


def test_previous_after_concurrent_moves_is_the_last_other_one():
    history = [move("1"), move("5", "1"), move("4", "1"), move("5", "4")]
    assert previous_champion(history, "5") == "4"


def test_utc_text_is_iso_with_milliseconds():
    assert utc_text(1_764_316_812_345) == "2025-11-28T08:00:12.345Z"


def test_the_last_move_key_changes_with_every_move_and_is_none_before_the_first():
    assert last_move_key({"owner": "me"}) == "none"
    first = move_key(1_000, "aa")
    tags = {first: "{}", "owner": "me"}
    assert last_move_key(tags) == first
    later = move_key(2_000, "00")
    assert last_move_key({**tags, later: "{}"}) == later
