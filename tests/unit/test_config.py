import pytest

from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import (
    Month,
    check_duration_bounds,
    check_encoding,
    check_model_name,
    check_positive,
    check_sample_rows,
    check_taxi,
    check_tolerance,
    format_month_spec,
    parse_month,
    parse_month_spec,
    parse_months,
)


def test_parse_month_accepts_yyyy_mm():
    month = parse_month("2021-01")
    assert month == Month(2021, 1)
    assert str(month) == "2021-01"
    assert str(month.start) == "2021-01-01 00:00:00"
    assert str(month.end) == "2021-02-01 00:00:00"


def test_month_end_rolls_over_the_year():
    assert str(parse_month("2021-12").end) == "2022-01-01 00:00:00"


@pytest.mark.parametrize("text", ["2021-1", "21-01", "2021/01", "January", "", "2021-01-01"])
def test_parse_month_rejects_malformed_text_naming_the_form(text):
    with pytest.raises(PipelineError, match="YYYY-MM"):
        parse_month(text, "train_month")


def test_parse_month_rejects_month_13():
    with pytest.raises(PipelineError, match="01..12"):
        parse_month("2021-13")


def test_parse_month_rejects_months_before_tlc_records():
    with pytest.raises(PipelineError, match="2009"):
        parse_month("2008-12")


def test_parse_months_requires_train_before_val_before_test():
    assert parse_months("2021-01", "2021-02", "2021-03") == (
        [Month(2021, 1)],
        Month(2021, 2),
        Month(2021, 3),
    )
    with pytest.raises(PipelineError, match="train < val < test"):
        parse_months("2021-03", "2021-02", "2021-01")
    with pytest.raises(PipelineError, match="train < val < test"):
        parse_months("2021-01", "2021-01", "2021-02")


def test_checks_name_the_accepted_values():
    assert check_taxi("yellow") == "yellow"
    with pytest.raises(PipelineError, match="green, yellow"):
        check_taxi("fhv")
    assert check_encoding("onehot") == "onehot"
    with pytest.raises(PipelineError, match="categorical, onehot"):
        check_encoding("target")


def test_budget_and_bounds_checks():
    assert check_positive(1, "max_evals") == 1
    with pytest.raises(PipelineError, match="max_evals must be at least 1, got 0"):
        check_positive(0, "max_evals")
    with pytest.raises(PipelineError, match="min_duration < max_duration"):
        check_duration_bounds(60, 1)
    with pytest.raises(PipelineError, match="rmse_tolerance"):
        check_tolerance(-0.1)


@pytest.mark.parametrize("name", ["nyc-taxi-duration", "model_v2", "a.b"])
def test_model_names_usable_in_uris_pass(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", "x@champion", "models:/x", "-lead"])
def test_model_names_unusable_in_uris_are_refused(name):
    with pytest.raises(PipelineError, match="models:/ URI"):
        check_model_name(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-04", ["2021-04"]),
        ("2021-05,2021-04", ["2021-04", "2021-05"]),
        ("2021-11..2022-02", ["2021-11", "2021-12", "2022-01", "2022-02"]),
        ("2021-01..2021-02, 2021-02, 2023-01", ["2021-01", "2021-02", "2023-01"]),
    ],
)
def test_parse_month_spec_reads_months_lists_and_ranges(text, expected):
    assert [str(m) for m in parse_month_spec(text)] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("2021-04..2021-01", "ends before it starts; write it as 2021-01..2021-04"),
        ("2021-04..2021-13", "01..12"),
        ("2010-01..2040-01", "more than 240 months"),
        ("April", "YYYY-MM"),
    ],
)
def test_parse_month_spec_refuses_bad_specs_naming_the_fix(text, message):
    with pytest.raises(PipelineError, match=message.replace(".", r"\.")):
        parse_month_spec(text, "months")


def test_month_next_rolls_over_the_year():
    assert Month(2021, 12).next() == Month(2022, 1)


def test_parse_months_reads_a_training_window_into_its_months():
    window, val, test = parse_months("2023-01..2023-03", "2023-04", "2023-05")
    assert [str(m) for m in window] == ["2023-01", "2023-02", "2023-03"]
    assert (str(val), str(test)) == ("2023-04", "2023-05")
    listed, _, _ = parse_months("2022-12, 2023-02", "2023-04", "2023-05")
    assert [str(m) for m in listed] == ["2022-12", "2023-02"]


@pytest.mark.parametrize(
    ("train", "val", "message"),
    [
        ("2023-01..2023-04", "2023-04", "train < val < test"),  # the window overlaps validation
        ("2023-01,2023-06", "2023-04", "train < val < test"),  # a listed month after it
        ("2023-01..2023-03", "2023-04..2023-05", "val_month must look like YYYY-MM"),
    ],
)
def test_parse_months_keeps_validation_and_test_after_the_window(train, val, message):
    with pytest.raises(PipelineError, match=message):
        parse_months(train, val, "2023-06")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("2021-01", "2021-01"),
        ("2021-03,2021-01..2021-02", "2021-01..2021-03"),
        ("2021-01..2021-02,2021-06,2021-12..2022-01", "2021-01..2021-02,2021-06,2021-12..2022-01"),
    ],
)
def test_format_month_spec_writes_a_window_canonically(text, canonical):
    assert format_month_spec(parse_month_spec(text)) == canonical


def test_check_sample_rows_takes_zero_for_every_row():
    assert check_sample_rows(0) == 0
    assert check_sample_rows(250_000) == 250_000
    with pytest.raises(PipelineError, match="hpo_sample_rows must be 0"):
        check_sample_rows(-1)
