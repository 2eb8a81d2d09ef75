"""The pipelines folder: two files never share a DAG id, an Asset, a model dir or a runs dir.

The file that keeps a contested claim: the one the registry names as the newest version's
publisher, else the older file, else the one whose path sorts first (include/config/claims.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from include.config import find_pipeline, load_all_pipelines
from include.durable import locked
from include.errors import ConfigError
from include.registry import store
from include.versions import model_dir, runs_dir
from tests.helpers import EXAMPLE_YAML, example_raw, make_raw, write_pipeline

OLD, NEW = 1_700_000_000, 1_800_000_000  # modification times (s) of an older and a newer file


def pipeline(tmp_path: Path, filename: str, mtime: int, root: str = "store", **overrides) -> Path:
    """Writes the example pipeline, storage under `tmp_path/root`, into the folder; returns its path."""
    raw = make_raw(tmp_path / root, tmp_path / "data", **overrides)
    path = write_pipeline(tmp_path / "pipelines", raw, filename)
    os.utime(path, (mtime, mtime))
    return path


def only_refused(tmp_path: Path, kept: Path, refused: Path) -> ConfigError:
    """Asserts `kept` is the folder's only valid pipeline and `refused` its only error; returns the error."""
    configs, errors = load_all_pipelines(tmp_path / "pipelines")
    assert [c.source_path for c in configs] == [kept.resolve()]
    ((error,),) = [errors]
    assert error.path == str(refused.resolve())
    assert str(kept.resolve()) in str(error) and str(refused.resolve()) in str(error)
    return error


def test_a_second_file_with_the_same_name_is_refused_and_the_older_keeps_its_dag(tmp_path):
    """A newer file reusing a pipeline's name is refused naming both files; the older file stays valid."""
    old = pipeline(tmp_path, "a.yaml", OLD)
    new = pipeline(tmp_path, "b.yaml", NEW, root="other", model=model_named("digits_b"))
    error = only_refused(tmp_path, kept=old, refused=new)
    assert error.problems[0].startswith("name: DAG id 'digits_softmax' is already the DAG id of pipeline")
    assert "it is the older file" in error.problems[-1]
    assert find_pipeline("digits_softmax", tmp_path / "pipelines").source_path == old.resolve()


def test_another_name_with_the_same_model_dir_is_refused(tmp_path):
    """Two names publishing into one model dir (same serving root and model.name) are refused."""
    old = pipeline(tmp_path, "a.yaml", OLD)
    new = pipeline(tmp_path, "b.yaml", NEW, name="digits_b")
    error = only_refused(tmp_path, kept=old, refused=new)
    shared = model_dir(tmp_path / "store" / "serving", "digits")
    assert f"storage: the model dir {shared} is the model dir of pipeline 'digits_softmax'" in str(error)
    assert f"storage: the runs dir {runs_dir(tmp_path / 'store' / 'exports', 'digits')} is" in str(error)


def test_the_same_model_name_under_another_serving_root_is_an_asset_clash(tmp_path):
    """One model.name under two roots is refused at parse time: Airflow allows one URI per Asset name."""
    old = pipeline(tmp_path, "a.yaml", OLD)
    new = pipeline(tmp_path, "b.yaml", NEW, root="other", name="digits_b")
    error = only_refused(tmp_path, kept=old, refused=new)
    (asset,) = [p for p in error.problems if p.startswith("model.name:")]
    assert "Asset 'savedmodel/digits' is already the Asset of pipeline 'digits_softmax'" in asset
    assert f"file://{tmp_path / 'store' / 'serving' / 'digits'}" in asset
    assert not [p for p in error.problems if p.startswith("storage:")]


@pytest.mark.parametrize(
    ("moved", "where", "expected"),
    [
        ("export_root", "store/exports/digits/runs", "the runs dir {dir} lies inside the runs dir of"),
        ("serving_root", "store/serving/digits", "the model dir {dir} lies inside the model dir of"),
    ],
)
def test_dirs_inside_another_pipelines_dirs_are_refused(tmp_path, moved, where, expected):
    """A model or runs dir inside another pipeline's is refused, even under another name and model."""
    old = pipeline(tmp_path, "a.yaml", OLD)
    storage = {
        "export_root": str(tmp_path / "x" / "exports"),
        "serving_root": str(tmp_path / "x" / "serving"),
    }
    storage[moved] = str(tmp_path / where)
    model = model_named("colors")
    new = pipeline(tmp_path, "b.yaml", NEW, name="colors", model=model, storage=storage)
    error = only_refused(tmp_path, kept=old, refused=new)
    inside = runs_dir if moved == "export_root" else model_dir
    assert expected.format(dir=inside(storage[moved], "colors")) in str(error)


def test_the_older_file_keeps_the_claim_whatever_its_name(tmp_path):
    """The file modified longer ago keeps the claim even when its name sorts last."""
    new = pipeline(tmp_path, "a.yaml", NEW, name="digits_a")
    old = pipeline(tmp_path, "b.yaml", OLD)
    only_refused(tmp_path, kept=old, refused=new)


def test_equal_modification_times_fall_back_to_the_path(tmp_path):
    """Between files modified at the same instant, the one whose path sorts first keeps the claim."""
    first = pipeline(tmp_path, "a.yaml", OLD, name="digits_a")
    second = pipeline(tmp_path, "b.yaml", OLD)
    error = only_refused(tmp_path, kept=first, refused=second)
    assert "both were modified at the same time and its path sorts first" in error.problems[-1]


def test_the_registry_record_beats_the_modification_time(tmp_path):
    """An original edited after its copy was made keeps the claim: its model dir's newest version names it."""
    original = pipeline(tmp_path, "digits.yaml", NEW)
    copy = pipeline(tmp_path, "digits_copy.yaml", OLD, name="digits_copy")
    record_publish(tmp_path / "store" / "serving" / "digits", "digits_softmax", original)
    error = only_refused(tmp_path, kept=original, refused=copy)
    assert "the newest version in" in error.problems[-1] and "was published from it" in error.problems[-1]


def test_a_renamed_copy_of_the_shipped_pipeline_is_refused_and_the_original_stays_valid(tmp_path):
    """A copy of digits_softmax.yaml changing only `name` is refused naming both; the original stays valid."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    original = Path(shutil.copy2(EXAMPLE_YAML, folder / EXAMPLE_YAML.name))
    copy = folder / "digits_softmax_copy.yaml"
    copy.write_text(renamed_copy(EXAMPLE_YAML, "digits_softmax_copy"))
    error = only_refused(tmp_path, kept=original, refused=copy)
    assert "storage: the model dir" in str(error)


def test_pipelines_without_a_clash_read_no_registry(tmp_path, monkeypatch):
    """Only contested pipelines cost a registry read: a folder without clashes parses on paths alone."""

    def no_registry(directory):
        raise AssertionError(f"registry read at parse time: {directory}")

    monkeypatch.setattr(store, "read_head", no_registry)
    pipeline(tmp_path, "a.yaml", OLD)
    pipeline(tmp_path, "b.yaml", NEW, root="other", name="colors", model=model_named("colors"))
    configs, errors = load_all_pipelines(tmp_path / "pipelines")
    assert sorted(c.name for c in configs) == ["colors", "digits_softmax"] and errors == []


def model_named(name: str) -> dict:
    """Returns the example's `model` section under another model name."""
    return {**example_raw()["model"], "name": name}


def renamed_copy(path: Path, name: str) -> str:
    """Returns the text of a pipeline YAML with only its top-level `name:` line changed."""
    lines = path.read_text().splitlines(keepends=True)
    (index,) = [i for i, line in enumerate(lines) if line.startswith("name:")]
    lines[index] = f"name: {name}\n"
    return "".join(lines)


def record_publish(directory: Path, dag_id: str, source: Path, version: int = 20261012000000) -> None:
    """Records in a model dir's registry that `dag_id`, from `source`, published its newest version."""
    directory.mkdir(parents=True)
    entry = {
        "version": version,
        "status": "published",
        "dag_id": dag_id,
        "config": {"source": str(source.resolve())},
    }
    with locked(directory), store.manifest_update(directory) as update:
        update.put_entry(version, entry)


def test_pipelines_in_buckets_clash_by_prefix_and_read_no_bucket_while_parsing(tmp_path, monkeypatch):
    """Bucket roots: a model dir inside another's is refused, the Asset is the bucket URI, and
    the keeper rule asks no registry (parsing DAGs makes no network call): the older file keeps it."""
    from include.storage import objects

    def no_network(*args, **kwargs):
        raise AssertionError("a bucket was read while parsing")

    for name in ("read", "read_bytes", "stat", "listing", "children"):
        monkeypatch.setattr(objects, name, no_network)
    old = pipeline(
        tmp_path,
        "a.yaml",
        OLD,
        storage={"export_root": "gs://acme-ml/runs", "serving_root": "gs://acme-ml/models"},
    )
    clash = {"export_root": "gs://acme-ml/other-runs", "serving_root": "gs://acme-ml/models/digits/nested"}
    new = pipeline(tmp_path, "b.yaml", NEW, name="colors", model=model_named("colors"), storage=clash)
    apart = {"export_root": "gs://acme-ml-2/runs", "serving_root": "s3://acme-ml/models"}
    pipeline(tmp_path, "c.yaml", NEW, name="shapes", model=model_named("shapes"), storage=apart)
    configs, errors = load_all_pipelines(tmp_path / "pipelines")
    assert sorted(c.name for c in configs) == ["digits_softmax", "shapes"]
    ((error,),) = [errors]
    assert error.path == str(new.resolve())
    assert "the model dir gs://acme-ml/models/digits/nested/colors lies inside the model dir of" in str(error)
    assert "it is the older file" in error.problems[-1]
    kept = next(c for c in configs if c.name == "digits_softmax")
    from include.config.claims import model_asset_uri

    assert model_asset_uri(kept) == "gs://acme-ml/models/digits"
    assert old.resolve() == kept.source_path
