from pathlib import Path

import pytest

from taxi_duration.core.errors import PipelineError
from taxi_duration.core.reuse import (
    code_fingerprint,
    digest_files,
    digest_values,
    imported_modules,
    installed_version,
    library_versions,
    mlproject_types,
    module_closure,
    params_equal,
    parse_force,
    unquote,
)

ROOT = Path(__file__).resolve().parents[2]


def test_imported_modules_finds_every_import_form():
    source = (
        "from taxi_duration.model import features, boosting\n"
        "from taxi_duration.data.tlc import fetch_month\n"
        "import taxi_duration.core.params\n"
        "import pandas as pd\n"
        "from steps import model  # the old name of a moved module\n"
    )
    assert imported_modules(source) == {
        "taxi_duration.model",
        "taxi_duration.model.features",
        "taxi_duration.model.boosting",
        "taxi_duration.data.tlc",
        "taxi_duration.data.tlc.fetch_month",
        "taxi_duration.core.params",
        "steps",
        "steps.model",
    }


def test_imported_modules_sees_imports_inside_functions():
    source = "def f():\n    from taxi_duration.data import tlc\n"
    assert imported_modules(source) == {"taxi_duration.data", "taxi_duration.data.tlc"}


def test_module_closure_follows_imports_into_the_library_and_its_packages():
    files = {str(p.relative_to(ROOT)) for p in module_closure(ROOT, "steps.featurize")}
    assert {
        "steps/__init__.py",
        "steps/featurize.py",
        "taxi_duration/__init__.py",
        "taxi_duration/model/__init__.py",
        "taxi_duration/model/features.py",
        "taxi_duration/tracking/runs.py",
        "taxi_duration/core/contracts.py",
        "taxi_duration/core/reuse.py",
    } <= files
    assert not {"steps/hpo.py", "steps/train_best.py", "taxi_duration/data/tlc.py"} & files


def project_copy(tmp_path: Path) -> Path:
    (tmp_path / "steps").mkdir()
    (tmp_path / "taxi_duration").mkdir()
    (tmp_path / "steps" / "a.py").write_text("from taxi_duration import b\n")
    (tmp_path / "taxi_duration" / "b.py").write_text("X = 1\n")
    (tmp_path / "taxi_duration" / "c.py").write_text("Y = 2\n")
    (tmp_path / "MLproject").write_text("name: x\n")
    (tmp_path / "README.md").write_text("hello\n")
    return tmp_path


def test_code_fingerprint_changes_with_the_code_a_step_uses_only(tmp_path):
    root = project_copy(tmp_path)
    before = code_fingerprint(root, "a")
    (root / "README.md").write_text("changed\n")
    (root / "taxi_duration" / "c.py").write_text("Y = 3\n")  # not imported by a
    assert code_fingerprint(root, "a") == before
    (root / "taxi_duration" / "b.py").write_text("X = 2\n")  # imported by a
    assert code_fingerprint(root, "a") != before
    changed = code_fingerprint(root, "a")
    (root / "MLproject").write_text("name: y\n")
    assert code_fingerprint(root, "a") != changed


def test_params_compare_as_typed_values():
    types = {"max_evals": int, "min_duration": float, "encoding": str}
    stored = {"max_evals": "50", "min_duration": "1", "encoding": "categorical", "extra": "x"}
    assert params_equal(stored, {"max_evals": 50, "min_duration": 1.0}, types)
    assert params_equal(stored, {"min_duration": "1.0", "encoding": "categorical"}, types)
    assert not params_equal(stored, {"max_evals": 51}, types)
    assert not params_equal(stored, {"encoding": "onehot"}, types)
    assert not params_equal(stored, {"missing": "x"}, types)
    assert not params_equal({"max_evals": "many"}, {"max_evals": 5}, types)


def test_params_unquote_what_mlflow_run_logged():
    assert unquote("'~/.cache/x'") == "~/.cache/x"
    assert unquote("''") == ""
    assert unquote("plain") == "plain"
    assert params_equal({"cache_dir": "'~/.cache/x'"}, {"cache_dir": "~/.cache/x"}, {})


def test_mlproject_types_read_the_declared_types():
    types = mlproject_types(ROOT, "hpo")
    assert types["max_evals"]("50") == 50 and types["max_evals"]("50.0") == 50
    assert types["features_run"] is str
    assert mlproject_types(ROOT, "featurize")["min_duration"]("1") == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("false", set()),
        ("", set()),
        ("true", {"ingest", "featurize", "hpo", "train_best", "register"}),
        ("hpo, train_best", {"hpo", "train_best"}),
    ],
)
def test_parse_force(text, expected):
    assert parse_force(text) == expected


def test_parse_force_names_unknown_steps():
    with pytest.raises(PipelineError, match="unknown step.*tune"):
        parse_force("tune")


def test_digest_files_follows_names_and_bytes(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"same")
    (tmp_path / "b.parquet").write_bytes(b"same")
    assert digest_files(tmp_path, ["a.parquet"]) != digest_files(tmp_path, ["b.parquet"])
    before = digest_files(tmp_path, ["a.parquet", "b.parquet"])
    (tmp_path / "b.parquet").write_bytes(b"same")  # rewritten, same bytes
    assert digest_files(tmp_path, ["a.parquet", "b.parquet"]) == before
    (tmp_path / "b.parquet").write_bytes(b"other")
    assert digest_files(tmp_path, ["a.parquet", "b.parquet"]) != before


def test_digest_values_ignores_key_order():
    assert digest_values({"a": 1, "b": 2.5}) == digest_values({"b": 2.5, "a": 1})
    assert digest_values({"a": 1}) != digest_values({"a": 2})


def test_an_upgrade_of_a_library_a_step_imports_changes_its_fingerprint_only():
    """Steps are not reused across an upgrade of a library their results depend on: a new
    xgboost reruns the steps that train, not ingest."""
    upgraded = {"xgboost": "9.9.9"}

    def versions(name: str) -> str:
        return upgraded.get(name, installed_version(name))

    def changed(step: str) -> bool:
        return code_fingerprint(ROOT, step) != code_fingerprint(ROOT, step, versions)

    assert changed("hpo") and changed("train_best")
    assert not changed("ingest")
    pinned = f"xgboost=={installed_version('xgboost')}"
    assert pinned in library_versions(module_closure(ROOT, "steps.hpo"))
    assert not [v for v in library_versions(module_closure(ROOT, "steps.ingest")) if "xgboost" in v]
