"""The Models pages' data, chart and HTML, the approval records, and the plugin's wiring (no server)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.providers.standard.operators.hitl import ApprovalOperator

from include.durable import locked
from include.registry.approvals import approval_outcome, needs_approval, record_approval
from include.registry.page import index as registry_index
from include.registry.page.chart import MAX_POINTS, downsample, metric_chart
from include.registry.page.data import (
    ModelNotFound,
    ModelRef,
    VersionNotFound,
    find_model,
    model_page,
    models_overview,
    serving_entry,
    version_page,
)
from include.registry.page.html import render_model, render_models, render_version
from include.registry.page.index import ModelIndex, model_index
from include.registry.serving_config import write_models_config
from include.registry.store import (
    STATISTICS_DIR,
    archive_statistics,
    manifest_update,
    read_manifest,
    record_blocked,
)
from tests.helpers import make_raw, write_pipeline

FIRST = 20261001000000
ROOTS = {"base": "/registry", "ui": "", "user": "alice"}
#: A complete SavedModel that `publish` copies into each version dir (models.config names only
#: complete ones); made once per module by `tiny_savedmodel`.
_TINY: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def tiny_savedmodel(tmp_path_factory) -> Path:
    """Returns a small complete SavedModel (one variable, one signature), saved once for the module."""
    import tensorflow as tf

    module = tf.Module()
    module.weights = tf.Variable([1.0, 2.0])
    serve = tf.function(lambda x: {"y": x * module.weights}, input_signature=[tf.TensorSpec([None, 2])])
    target = tmp_path_factory.mktemp("tiny") / "1"
    tf.saved_model.save(module, str(target), signatures={"serving_default": serve})
    _TINY[:] = [target]
    return target


def entry(version: int, accuracy: float = 0.9, **extra) -> dict:
    """Returns a published entry like publish_run writes (the fields the pages read)."""
    return {
        "version": version,
        "status": "published",
        "dag_id": "digits_softmax",
        "run_id": f"scheduled__{version}+00:00",
        "run_type": "scheduled",
        "logical_date": "2026-10-01T00:00:00+00:00",
        "published_at": "2026-10-01T00:05:00+00:00",
        "metrics": {"eval_accuracy": accuracy, "eval_loss": 1 - accuracy, "eval_examples": 100},
        "quality_gate": {"verdict": "passed", "baseline_version": None},
        "data": {"partitions": ["dt=2026-09-30"], "fingerprint": "f" * 64, "files": 1},
        "config": {"sha256": "c" * 64, "source": "digits.yaml"},
        "hyperparameters": {"steps": 100, "learning_rate": 0.5},
        "signatures": {
            "predict_images": {
                "method": "tensorflow/serving/predict",
                "inputs": {"images": {"dtype": "float32", "shape": [-1, 64]}},
                "outputs": {"scores": {"dtype": "float32", "shape": [-1, 10]}},
            }
        },
        "content_digest": "d" * 64,
        **extra,
    }


def publish(
    directory: Path,
    versions: list[int],
    labels: dict | None = None,
    events: list[dict] = (),
    fields: dict | None = None,
) -> None:
    """Records published versions (with dirs, `fields` added to each entry), labels and history events."""
    directory.mkdir(parents=True, exist_ok=True)
    with locked(directory), manifest_update(directory) as update:
        update.set_serving({"version_policy": "latest", "num_latest": 2})
        for i, version in enumerate(versions):
            if not (directory / str(version)).exists():
                shutil.copytree(_TINY[0], directory / str(version))
            update.put_entry(version, entry(version, accuracy=0.8 + i / 1000, **(fields or {})))
        for label, version in (labels or {}).items():
            update.labels[label] = version
        for event in events:
            update.record_event(event, by=event.get("by", "publish"), reason=event.get("reason", "r"))


def ref_for(root: Path, name: str = "digits", approval: str = "required") -> ModelRef:
    """Returns the ModelRef of a model under `root` published by pipeline digits_softmax."""
    return ModelRef(name, "digits_softmax", root, root / name, approval)


@pytest.fixture
def model(tmp_path) -> ModelRef:
    """A model with three published versions: stable on the first, canary on the newest."""
    ref = ref_for(tmp_path)
    versions = [FIRST, FIRST + 1_000_000, FIRST + 2_000_000]
    label_events = [
        {"event": "label", "label": "stable", "version": FIRST, "by": "publish"},
        {"event": "label", "label": "canary", "version": versions[-1], "by": "publish"},
        {"event": "delete", "version": 1, "by": "retention"},
    ]
    publish(ref.model_dir, versions, {"stable": FIRST, "canary": versions[-1]}, label_events)
    write_models_config(tmp_path)
    return ref


# --- data ---------------------------------------------------------------------------------------


def test_overview_row_has_labels_newest_version_its_accuracy_and_dirs(model):
    """A model's row names its labels, newest version with accuracy and publish time, dirs on disk."""
    (row,) = models_overview([model])
    assert row["labels"] == {"stable": FIRST, "canary": FIRST + 2_000_000}
    assert row["newest_version"] == FIRST + 2_000_000 and row["newest_accuracy"] == pytest.approx(0.802)
    assert row["newest_published_at"] == "2026-10-01T00:05:00+00:00"
    assert row["versions_on_disk"] == 3 and row["pipeline"] == "digits_softmax"


def test_overview_of_a_model_never_published(tmp_path):
    """A pipeline that has published nothing yet gets a row with no versions."""
    (row,) = models_overview([ref_for(tmp_path)])
    assert row["newest_version"] is None and row["versions_on_disk"] == 0
    assert row["labels"] == {"stable": None, "canary": None}


def test_model_page_lists_newest_first_with_labels_and_paginates(model):
    """Versions come newest first, a page at a time, each with its labels, metrics and verdict."""
    first = model_page(model, page=1, per_page=2)
    assert [r["version"] for r in first["versions"]] == [FIRST + 2_000_000, FIRST + 1_000_000]
    assert first["versions"][0]["labels"] == ["canary"] and first["pages"] == 2 and first["total"] == 3
    second = model_page(model, page=2, per_page=2)
    (oldest,) = second["versions"]
    assert oldest["labels"] == ["stable"] and oldest["verdict"] == "passed"
    assert oldest["metrics"] == {"eval_accuracy": 0.8, "eval_loss": pytest.approx(0.2), "eval_examples": 100}
    assert model_page(model, page=99, per_page=2)["page"] == 2  # clamped to the last page


def test_model_page_history_shows_label_moves_newest_first_without_deletions(model):
    """The history lists label moves (and approvals) newest first; retention's deletions are left out."""
    history = model_page(model)["history"]
    assert [(h["event"], h["label"]) for h in history] == [("label", "canary"), ("label", "stable")]


def test_chart_series_oldest_first_per_metric(model):
    """The chart gets (version, value) pairs oldest first for accuracy and loss."""
    series = model_page(model)["series"]
    assert list(series) == ["eval_accuracy", "eval_loss"]
    assert [v for v, _ in series["eval_accuracy"]] == [FIRST, FIRST + 1_000_000, FIRST + 2_000_000]


def test_version_page_has_lineage_labels_and_the_models_config_entry(model):
    """A version's page carries its entry, its labels, and the models.config block that serves it."""
    page = version_page(model, FIRST)
    assert page["labels"] == ["stable"] and page["entry"]["content_digest"] == "d" * 64
    assert page["serving"]["served"] and page["serving"]["labels"] == ["stable"]
    assert 'name: "digits"' in page["serving"]["block"]
    with pytest.raises(VersionNotFound):
        version_page(model, 123)


def test_serving_entry_follows_the_policy(tmp_path):
    """`latest` serves the newest N; `specific` the versions it names; a missing file serves nothing."""
    text = (
        'model_config_list {\n  config {\n    name: "a"\n    base_path: "/m/a"\n'
        "    model_version_policy { latest { num_versions: 1 } }\n  }\n"
        '  config {\n    name: "b"\n    model_version_policy { specific { versions: 5 versions: 7 } }\n'
        '    version_labels { key: "stable" value: 5 }\n  }\n}\n'
    )
    (tmp_path / "models.config").write_text(text)
    assert serving_entry(tmp_path, "a", 9, [8, 9])["served"]
    assert not serving_entry(tmp_path, "a", 8, [8, 9])["served"]
    b = serving_entry(tmp_path, "b", 5, [])
    assert b["served"] and b["labels"] == ["stable"] and b["block"].startswith("config {")
    assert 'key: "stable"' in b["block"] and "versions: 7" in b["block"]
    assert not serving_entry(tmp_path, "b", 6, [])["served"]
    assert serving_entry(tmp_path, "c", 1, [1])["block"] is None
    assert serving_entry(tmp_path / "none", "a", 9, [9]) == {
        "path": str(tmp_path / "none" / "models.config"),
        "block": None,
        "served": False,
    }


def test_find_model_by_name(tmp_path):
    """A model name finds its pipeline; unknown or claimed by two pipelines in different dirs: not found."""
    one, other = ref_for(tmp_path / "a"), ref_for(tmp_path / "b")
    assert find_model([one], "digits") is one
    with pytest.raises(ModelNotFound, match="no pipeline"):
        find_model([one], "nope")
    with pytest.raises(ModelNotFound, match="several pipelines"):
        find_model([one, other], "digits")


def test_single_file_manifest_of_before_is_read(tmp_path):
    """A registry still in the single-file layout of before shows its versions and labels."""
    ref = ref_for(tmp_path)
    ref.model_dir.mkdir()
    (ref.model_dir / str(FIRST)).mkdir()
    old = {
        "model": "digits",
        "labels": {"stable": FIRST},
        "versions": {str(FIRST): entry(FIRST)},
        "history": [{"event": "label", "label": "stable", "version": FIRST, "by": "publish", "reason": "r"}],
    }
    (ref.model_dir / "manifest.json").write_text(json.dumps(old))
    assert models_overview([ref])[0]["newest_accuracy"] == 0.9
    page = model_page(ref)
    assert [r["version"] for r in page["versions"]] == [FIRST] and len(page["history"]) == 1
    assert version_page(ref, FIRST)["labels"] == ["stable"]


# --- the index ----------------------------------------------------------------------------------


def test_index_rereads_only_changed_entries(model, monkeypatch):
    """After a publish the index reads the new entry alone; a deleted entry file drops its version."""
    index = ModelIndex(model.model_dir).refresh()
    reads = []
    real = registry_index.read_entry
    monkeypatch.setattr(registry_index, "read_entry", lambda d, v: reads.append(v) or real(d, v))
    publish(model.model_dir, [FIRST + 3_000_000])
    index.refresh()
    assert reads == [FIRST + 3_000_000]
    assert index.versions()[0]["version"] == FIRST + 3_000_000
    (model.model_dir / ".manifest" / "versions" / f"{FIRST}.json").unlink()
    index.refresh()
    assert FIRST not in [v["version"] for v in index.versions()]


def test_index_skips_the_scan_once_the_versions_dir_has_settled(model, monkeypatch):
    """A versions dir unchanged for a while is not scanned again; a young one is, every time."""
    monkeypatch.setattr(registry_index, "SETTLE_SECONDS", 0)
    index = ModelIndex(model.model_dir).refresh()
    scans = []
    real = registry_index.entry_stamps
    monkeypatch.setattr(registry_index, "entry_stamps", lambda d: scans.append(d) or real(d))
    index.refresh()
    assert scans == []  # settled at once (SETTLE_SECONDS 0): its unchanged stamp is trusted
    monkeypatch.setattr(registry_index, "SETTLE_SECONDS", 3600)
    publish(model.model_dir, [FIRST + 4_000_000])
    index.refresh()
    index.refresh()
    assert len(scans) == 2  # changed within the last hour: scanned on every look


def test_index_reads_new_history_lines_and_starts_over_when_rewritten(model):
    """New history lines are appended to what was read; a rewritten file is read from the start."""
    index = model_index(model.model_dir)
    record_approval(
        model.model_dir,
        "stable",
        FIRST,
        outcome="rejected",
        approver="bob",
        requested_by="alice",
        reason="no",
    )
    assert index.refresh().history()[0]["outcome"] == "rejected"
    assert len(index.history()) == 3
    history = model.model_dir / ".manifest" / "history.jsonl"
    first_line = history.read_bytes().splitlines(keepends=True)[0]
    replacement = history.with_name("new.jsonl")
    replacement.write_bytes(first_line)
    os.replace(replacement, history)
    with locked(model.model_dir), manifest_update(model.model_dir) as update:
        update.head["history_bytes"] = len(first_line)
    assert [h["label"] for h in index.refresh().history()] == ["stable"]


def test_model_index_is_cached_per_dir(model):
    """The same dir gives the same index object (kept in memory between looks)."""
    assert model_index(model.model_dir) is model_index(Path(str(model.model_dir) + "/"))


# --- approvals ----------------------------------------------------------------------------------


def test_only_stable_moves_of_guarded_pipelines_need_approval():
    """`required` guards stable, never canary; `none` guards nothing."""
    assert needs_approval("required", "stable")
    assert not needs_approval("required", "canary") and not needs_approval("none", "stable")


def test_approval_outcomes():
    """Approve and Reject carry the responder; a timeout (defaults applied, nobody) is timed_out."""
    who = {"id": "7", "name": "bob"}
    assert approval_outcome({"chosen_options": ["Approve"], "responded_by_user": who}) == ("approved", "bob")
    assert approval_outcome({"chosen_options": ["Reject"], "responded_by_user": who}) == ("rejected", "bob")
    assert approval_outcome({"chosen_options": ["Reject"], "responded_by_user": None}) == ("timed_out", None)


def test_approval_options_match_airflow():
    """The outcome reader uses the ApprovalOperator's own option names."""
    from include.registry import approvals

    assert (ApprovalOperator.APPROVE, ApprovalOperator.REJECT) == (approvals.APPROVE, approvals.REJECT)


def test_record_approval_appends_to_the_history(model):
    """A decision lands in the history with requester, approver, reason; labels stay as they were."""
    before = read_manifest(model.model_dir)["labels"]
    record_approval(
        model.model_dir, "stable", FIRST + 2_000_000, outcome="timed_out", approver=None,
        requested_by="alice", reason="ship it",
    )  # fmt: skip
    manifest = read_manifest(model.model_dir)
    assert manifest["labels"] == before
    last = manifest["history"][-1]
    assert {k: last[k] for k in ("event", "outcome", "requested_by", "by", "reason")} == {
        "event": "approval",
        "outcome": "timed_out",
        "requested_by": "alice",
        "by": "timeout",
        "reason": "ship it",
    }
    with pytest.raises(ValueError, match="outcome"):
        record_approval(
            model.model_dir, "stable", 1, outcome="maybe", approver=None, requested_by="a", reason="r"
        )


# --- chart and HTML -----------------------------------------------------------------------------


def test_chart_draws_each_metric_and_marks_labelled_versions():
    """One panel per metric, a line through the points, a captioned mark per labelled version."""
    series = {"eval_accuracy": [(1, 0.9), (2, 0.95), (3, 0.93)], "eval_loss": [(1, 0.3), (2, 0.2), (3, 0.25)]}
    svg = metric_chart(series, {"stable": 2, "canary": 3})
    assert svg.startswith("<svg") and svg.count("<polyline") == 2
    assert 'data-metric="eval_accuracy"' in svg and 'data-metric="eval_loss"' in svg
    assert svg.count('data-labels="stable"') == 2 and "stable 2: 0.95" in svg and "canary 3: 0.93" in svg
    assert metric_chart({}, {}) == ""


def test_chart_of_10000_versions_keeps_every_extreme():
    """Past MAX_POINTS the line keeps each bucket's min and max: a single dip still shows."""
    points = [(v, 0.9) for v in range(10_000)]
    points[4321] = (4321, 0.1)
    kept = downsample(points)
    assert len(kept) <= MAX_POINTS and (4321, (4321, 0.1)) in kept
    assert [i for i, _ in kept] == sorted(i for i, _ in kept)
    assert metric_chart({"eval_accuracy": points}, {"stable": 4321}).count(" ") < 5 * MAX_POINTS


def test_pages_escape_what_users_wrote(model):
    """A reason with markup is shown as text on the model page, never as markup."""
    publish(model.model_dir, [], events=[{"event": "label", "label": "stable", "version": FIRST,
                                          "reason": "<script>alert(1)</script>"}])  # fmt: skip
    html = render_model(model_page(model), **ROOTS)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<svg" in html and 'id="versions"' in html


def test_models_page_links_models_and_shows_accuracy(model):
    """The list links each model's page and its pipeline's DAG, with the newest accuracy."""
    html = render_models(models_overview([model]), **ROOTS)
    assert 'href="/registry/models/digits"' in html and 'href="/dags/digits_softmax"' in html
    assert ">0.802<" in html


def test_version_page_links_the_run_and_offers_moves_only_to_who_may(model):
    """The run link is quoted for the UI; the move forms appear only when the user may request moves."""
    page = version_page(model, FIRST + 1_000_000)
    html = render_version(page, may_request=True, **ROOTS)
    assert f'href="/dags/digits_softmax/runs/scheduled__{FIRST + 1_000_000}%2B00%3A00"' in html
    assert html.count('<form class="move"') == 2 and "waits for a person" in html
    assert "Make this version stable" in html
    assert "<form" not in render_version(page, may_request=False, **ROOTS)
    rollback = render_version(version_page(model, FIRST), may_request=True, **ROOTS)
    assert "Roll back" not in rollback  # it is stable already: no stable form at all


def test_older_version_offers_a_rollback(tmp_path):
    """On a version older than `stable`, the stable form reads as a rollback."""
    ref = ref_for(tmp_path)
    publish(ref.model_dir, [FIRST, FIRST + 1], {"stable": FIRST + 1, "canary": FIRST + 1})
    html = render_version(version_page(ref, FIRST), may_request=True, **ROOTS)
    assert "Roll back stable to this version" in html


# --- plugin and DAG wiring ----------------------------------------------------------------------


def test_plugin_registers_the_app_and_a_nav_view():
    """The plugin mounts an app at /registry and adds a "Models" nav view Airflow's schema accepts."""
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    from plugins.savedmodel_plugin import RegistryApp, SavedModelRegistryPlugin

    (app,) = SavedModelRegistryPlugin.fastapi_apps
    assert app["url_prefix"] == "/registry" and isinstance(app["app"], RegistryApp)
    (view,) = SavedModelRegistryPlugin.external_views
    parsed = ExternalViewResponse.model_validate(view)
    assert (parsed.name, parsed.href, parsed.destination, parsed.url_route) == (
        "Models", "/registry/", "nav", "models",
    )  # fmt: skip


def test_plugin_module_is_cheap_to_import():
    """Importing the plugin leaves the app module, FastAPI's security layer and TensorFlow unloaded."""
    script = (
        "import sys, json, plugins.savedmodel_plugin\n"
        "print(json.dumps([m for m in ('plugins.savedmodel_registry_app', "
        "'airflow.api_fastapi.core_api.security', 'tensorflow') if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_plugins_manager_skips_the_app_module():
    """plugins/.airflowignore keeps the plugins manager from importing the app module on its own."""
    ignored = (Path(__file__).parents[1] / "plugins" / ".airflowignore").read_text().split()
    assert "savedmodel_registry_app.py" in ignored


def test_promote_dag_waits_for_approval_only_on_its_branch(monkeypatch):
    """route_request branches to the approval or straight to the move; the move joins both branches."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("SAVEDMODEL_PIPELINES_DIR", raising=False)
    dag = DagBag(dag_folder=str(Path(__file__).parents[1] / "dags" / "savedmodel_promote.py")).dags[
        "savedmodel_promote"
    ]
    downstream = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert downstream == {
        "route_request": ["approve_stable", "move_label"],
        "approve_stable": ["move_label"],
        "move_label": [],
    }
    approval = dag.get_task("approve_stable")
    assert isinstance(approval, ApprovalOperator) and approval.defaults == ["Reject"]
    assert dag.get_task("move_label").trigger_rule == "none_failed_min_one_success"


class Run:
    """The promote run as the approval and the move see it: alice triggered it."""

    triggering_user_name = "alice"
    run_id = "manual__1"


def use_pipeline(model: ModelRef, monkeypatch) -> None:
    """Points the pipelines dir at one pipeline, digits_softmax, whose serving root holds `model`."""
    pipelines = model.serving_root / "pipelines"
    raw = make_raw(model.serving_root, model.serving_root / "data")
    raw["storage"]["serving_root"] = str(model.serving_root)
    write_pipeline(pipelines, raw)
    monkeypatch.setenv("SAVEDMODEL_PIPELINES_DIR", str(pipelines))


def promote_context(version: int, routed: dict, reason: str = "why not") -> dict:
    """Returns a promote run's task context: its params, alice's run, and what route_request pushed."""
    return {
        "params": {"pipeline": "digits_softmax", "version": version, "label": "stable", "reason": reason},
        "dag_run": Run(),
        "ti": SimpleNamespace(xcom_pull=lambda **kw: routed),
    }


def test_approval_records_its_decision(model, monkeypatch):
    """The approval step writes approved / rejected / timed out to the history with requester and reason."""
    from plugins.savedmodel_promotion import record_decision

    context = promote_context(FIRST, {})
    use_pipeline(model, monkeypatch)
    event = {"chosen_options": ["Reject"], "responded_by_user": {"id": "2", "name": "bob"}}
    assert record_decision(context, event) == "rejected"
    last = read_manifest(model.model_dir)["history"][-1]
    assert (last["outcome"], last["by"], last["requested_by"], last["reason"]) == (
        "rejected", "bob", "alice", "why not",
    )  # fmt: skip


def test_a_self_approval_is_refused_recorded_and_moves_nothing(model, monkeypatch):
    """alice approving her own request (as an admin could) fails the step; the history says refused."""
    import datetime as dt

    from airflow.sdk.exceptions import AirflowFailException

    from plugins.savedmodel_promotion import approve_stable

    use_pipeline(model, monkeypatch)
    before = read_manifest(model.model_dir)["labels"]
    event = {
        "chosen_options": ["Approve"], "params_input": {}, "responded_at": dt.datetime.now(dt.UTC),
        "responded_by_user": {"id": "alice", "name": "alice"},
    }  # fmt: skip
    with pytest.raises(AirflowFailException, match=r"self_approval_refused.*requested by alice"):
        approve_stable().execute_complete(promote_context(FIRST + 2_000_000, {"approvers": None}), event)
    manifest = read_manifest(model.model_dir)
    assert manifest["labels"] == before
    last = manifest["history"][-1]
    assert (last["outcome"], last["by"], last["requested_by"]) == ("self_approval_refused", "alice", "alice")


def test_a_move_whose_stable_moved_meanwhile_is_refused_and_recorded(model, monkeypatch):
    """move_label refuses when stable points elsewhere than when the request was routed; nothing moves."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.registry.policy import set_label
    from plugins.savedmodel_promotion import move_label

    use_pipeline(model, monkeypatch)
    middle, newest = FIRST + 1_000_000, FIRST + 2_000_000
    context = promote_context(newest, {"premise": {"stable": FIRST}}, reason="better")
    set_label(model.model_dir, "stable", middle, by="carol", reason="urgent rollforward")  # meanwhile
    monkeypatch.setattr("plugins.savedmodel_promotion.get_current_context", lambda: context)
    with pytest.raises(
        AirflowFailException, match=f"stable of digits was version {FIRST} .* is version {middle}"
    ):
        move_label.function()
    manifest = read_manifest(model.model_dir)
    assert manifest["labels"]["stable"] == middle
    last = manifest["history"][-1]
    assert {k: last[k] for k in ("event", "outcome", "version", "stable_when_requested", "stable_now")} == {
        "event": "approval", "outcome": "premise_changed", "version": newest,
        "stable_when_requested": FIRST, "stable_now": middle,
    }  # fmt: skip


def test_a_label_move_with_its_premise_intact_moves(model):
    """The premise holds (stable where it was, or already moved by this very move): the move happens."""
    from include.registry.policy import PremiseChanged, set_label

    newest = FIRST + 2_000_000
    with pytest.raises(PremiseChanged):
        set_label(model.model_dir, "stable", newest, by="bob", reason="r", premise={"stable": newest})
    assert read_manifest(model.model_dir)["labels"]["stable"] == FIRST
    set_label(model.model_dir, "stable", newest, by="bob", reason="r", premise={"stable": FIRST})
    assert read_manifest(model.model_dir)["labels"]["stable"] == newest
    set_label(model.model_dir, "stable", newest, by="bob", reason="r", premise={"stable": FIRST})  # a retry
    assert read_manifest(model.model_dir)["labels"]["stable"] == newest


# --- a version dir deleted by hand ------------------------------------------------------------------


def test_a_version_dir_deleted_by_hand_shows_missing_on_every_page(model):
    """stable's dir removed by hand: the list, the model page and the version page say `missing`."""
    shutil.rmtree(model.model_dir / str(FIRST))
    (row,) = models_overview([model])
    assert row["missing_labels"] == {"stable": FIRST} and row["versions_on_disk"] == 2
    page = model_page(model)
    assert page["missing"] == [FIRST] and page["missing_labels"] == {"stable": FIRST}
    assert [r["status"] for r in page["versions"]] == ["published", "published", "missing"]
    version = version_page(model, FIRST)
    assert version["status"] == "missing" and not version["serving"]["served"]
    assert version["labels"] == ["stable"]  # the registry keeps the label
    html = render_model(page, **ROOTS)
    assert 'id="missing"' in html and "stable → 20261001000000" in html and 'class="status-missing"' in html
    assert "missing: its dir is gone, not served" in render_models([row], **ROOTS)
    version_html = render_version(version, **ROOTS, may_request=True)
    assert 'id="missing"' in version_html and "Request stable" not in version_html


def test_the_index_notices_a_version_dir_deleted_after_its_last_look(model):
    """A cached index lists the version dirs again when the model dir changed: the deleted one is missing."""
    index = model_index(model.model_dir)
    assert index.missing() == set()
    shutil.rmtree(model.model_dir / str(FIRST + 1_000_000))
    assert index.refresh().missing() == {FIRST + 1_000_000}
    assert index.versions()[1] | {"status": "missing"} == index.versions()[1]


def test_a_models_config_that_does_not_parse_is_named_on_the_version_page(model):
    """models.config is parsed with TF Serving's ModelServerConfig: a broken one is reported, not guessed."""
    (model.serving_root / "models.config").write_text('model_config_list { config { nme: "digits" } }\n')
    serving = version_page(model, FIRST)["serving"]
    assert serving["block"] is None and not serving["served"]
    assert "models.config is not a valid ModelServerConfig" in serving["problem"]
    assert "nme" in serving["problem"]


def test_reading_models_config_does_not_import_tensorflow():
    """The Models page parses models.config without TensorFlow (it runs in Airflow's API server)."""
    code = (
        "import sys, pathlib, tempfile; from include.registry.page.data import serving_entry\n"
        "root = pathlib.Path(tempfile.mkdtemp()); (root / 'models.config').write_text("
        "'model_config_list { config { name: \"a\" model_version_policy { all {} } } }')\n"
        "assert serving_entry(root, 'a', 1, [])['served']\n"
        "print(sorted(m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_a_label_move_onto_a_version_whose_dir_is_gone_is_refused(model):
    """Requesting stable on a missing version answers 409 naming it, before the promote DAG is triggered."""
    from fastapi import HTTPException

    from plugins.savedmodel_registry_app import request_label_move

    shutil.rmtree(model.model_dir / str(FIRST))
    with pytest.raises(HTTPException) as refused:
        request_label_move(model, FIRST, "stable", "roll back", user=None)
    assert refused.value.status_code == 409
    assert f"version {FIRST} of digits is missing" in refused.value.detail


# --- data checks: the report, slices, statistics, blocked runs ------------------------------------

HOSTILE = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
CHECKED = FIRST + 3_000_000


def row(subject: str, statistic: str, value, threshold: str, verdict: str = "pass", **extra) -> dict:
    """Returns a check report row (an expectation on the whole window unless `extra` says otherwise)."""
    return {
        "kind": "expectation", "subject": subject, "statistic": statistic, "partition": None,
        "value": value, "threshold": threshold, "source": "declared", "verdict": verdict, **extra,
    }  # fmt: skip


def numeric(low: float, high: float, **extra) -> dict:
    """Returns a numeric feature's statistics."""
    return {
        "kind": "numeric", "count": 100, "examples": 100, "missing": 2, "missing_fraction": 0.02,
        "default_fraction": None, "nonfinite": 0, "min": low, "max": high, "mean": (low + high) / 2,
        "std": 1.5, "quantiles": [low + (high - low) * i / 10 for i in range(11)], **extra,
    }  # fmt: skip


#: The data checks' whole report, as the statistics keep it: bmi's drift failed (and was forced).
# fmt: off
REPORT = [
    row("feature bmi", "max", 40.0, "in [10, 60]"),
    row("feature bmi", "js_divergence", 0.31, "<= 0.1", "fail", kind="drift", partition="2026-10-30",
        source=f"inferred from version {FIRST}"),
    row("feature sex", "top_value", HOSTILE, "in vocabulary"),
]
# fmt: on


def statistics() -> dict:
    """Returns a version's data statistics: bmi numeric, sex categorical with a hostile value, a label."""
    sex = {
        "kind": "categorical", "count": 100, "examples": 100, "missing": 0, "missing_fraction": 0.0,
        "default_fraction": 0.0, "nonfinite": 0, "distinct": 8, "oov_fraction": 0.01,
        "top_values": [["F", 52], ["M", 41], [HOSTILE, 2], ["x", 1], ["y", 1], ["z", 1], ["w", 1]],
    }  # fmt: skip
    by_day = {
        "examples": 50,
        "features": {"bmi": numeric(12.0, 40.0), "sex": {"kind": "categorical", "top_values": [["F", 30]]}},
        "label": numeric(25.0, 340.0),
    }
    return {
        "format": 1, "examples": 100, "partitions": ["2026-10-29", "2026-10-30"],
        "features": {"bmi": numeric(10.0, 40.0), "sex": sex}, "label": numeric(25.0, 346.0),
        "by_partition": {"2026-10-30": by_day, "2026-10-29": by_day}, "report": REPORT,
    }  # fmt: skip


def checked_fields(model_dir: Path) -> dict:
    """Returns the entry fields of a version whose data checks were forced past bmi's drift."""
    forced = {**REPORT[1], "verdict": "forced"}
    reason = "new clinic <b>joined</b>"
    data_checks = {"verdict": "forced", "baseline_version": FIRST, "checked": 3, "failed": [forced]}
    slices = {
        "F": {"examples": 52, "eval_loss": 0.5, "eval_mae": 3.25},
        "M": {"examples": 41, "eval_loss": 0.2, "eval_accuracy": 0.9},
    }
    return {
        "statistics": archive_statistics(model_dir, statistics()),
        "data_checks": {**data_checks, "forced_reason": reason},
        "quality_gate": {
            "verdict": "passed",
            "baseline_version": FIRST,
            "checks": [
                row("metric eval_loss", "eval_loss", 0.21, "<= 0.3", kind="metric", source="default"),
                row("slice sex=F", "eval_loss", 0.5, "<= 0.4", "fail", kind="slice"),
            ],
        },
        "slices": {"sex": slices},
        "force_reason": reason,
    }


def blocked_report(run_id: str, error: str = "data checks failed: bmi max=99, expected in [10, 60]") -> dict:
    """Returns a blocked run's report: one failing expectation, one passing, one with a hostile value."""
    return {
        "run_id": run_id, "dag_id": "digits_softmax", "logical_date": "2026-11-01T00:00:00+00:00",
        "step": "train", "baseline_version": FIRST, "error": error,
        "report": [row("feature bmi", "min", 11.0, "in [10, 60]"),
                   row("feature bmi", "max", 99.0, "in [10, 60]", "fail"),
                   row(f"feature sex {HOSTILE}", "oov_fraction", HOSTILE, "<= 0.05", "fail",
                       detail=f"values {HOSTILE!r} x3")],
    }  # fmt: skip


@pytest.fixture
def checked(model) -> ModelRef:
    """The model with a fourth version whose data checks were forced, and two blocked runs."""
    publish(model.model_dir, [CHECKED], fields=checked_fields(model.model_dir))
    record_blocked(model.model_dir, blocked_report("manual__2026-11-01T00:00:00+00:00"))
    record_blocked(model.model_dir, blocked_report("manual__2026-11-02T00:00:00+00:00", error=HOSTILE))
    return model


def test_version_page_reports_every_check_failing_and_forced_first(checked):
    """The report joins the statistics' rows, the entry's (forced wins) and the gate's; failures lead."""
    page = version_page(checked, CHECKED)
    assert page["verdict"] == "forced" and page["forced_reason"] == "new clinic <b>joined</b>"
    verdicts = [(r["subject"], r["statistic"], r["verdict"]) for r in page["report"]]
    assert verdicts == [
        ("slice sex=F", "eval_loss", "fail"),
        ("feature bmi", "js_divergence", "forced"),  # once: the entry's verdict over the statistics'
        ("feature bmi", "max", "pass"),
        ("feature sex", "top_value", "pass"),
        ("metric eval_loss", "eval_loss", "pass"),
    ]
    assert page["data_checks"]["checked"] == 3 and page["quality_gate"]["baseline_version"] == FIRST


def test_version_page_has_slices_and_a_statistics_row_per_feature(checked):
    """Slices become rows with the union of their metrics; statistics one row per feature, label last."""
    page = version_page(checked, CHECKED)
    assert page["slices"]["metrics"] == ["eval_accuracy", "eval_loss", "eval_mae"]
    assert [(r["key"], r["examples"], r["failing"]) for r in page["slices"]["rows"]] == [
        ("F", 52, True), ("M", 41, False),
    ]  # fmt: skip
    stats = page["statistics"]
    assert [f["name"] for f in stats["features"]] == ["bmi", "sex", "label"]
    assert stats["features"][-1]["label"]
    bmi, sex, _ = stats["features"]
    assert bmi["failing"] and bmi["median"] == 25.0 and bmi["missing_fraction"] == 0.02
    assert not sex["failing"] and len(sex["top_values"]) == 5 and sex["more_values"] == 2
    assert [p["partition"] for p in stats["by_partition"]] == ["2026-10-29", "2026-10-30"]
    assert stats["by_partition"][0]["features"][1]["top_values"] == [["F", 30]]
    json.dumps(page)  # the JSON endpoint answers the same dict


def test_version_page_html_shows_force_reason_report_slices_and_statistics_escaped(checked):
    """The forced reason stands out, the report's first row is the failing one; user data is text."""
    html = render_version(version_page(checked, CHECKED), may_request=False, **ROOTS)
    assert 'id="forced"' in html and "2 checks failed" in html
    assert "new clinic &lt;b&gt;joined&lt;/b&gt;" in html
    checks = html.split('id="checks"')[1].split("</table>")[0]
    order = [checks.index(f'class="row-{verdict}"') for verdict in ("fail", "forced", "pass")]
    assert order == sorted(order)
    assert "whole window" in checks and "2026-10-30" in checks and f"inferred from version {FIRST}" in checks
    assert 'id="slices"' in html and 'id="statistics"' in html and 'id="statistics-by-partition"' in html
    assert '<tr data-feature="bmi" class="row-fail"' in html and "+2 more" in html
    assert HOSTILE not in html and "<b>" not in html
    assert html.count(ESCAPED) == 2  # sex's top values and the report row's value


def test_model_page_shows_verdicts_and_blocked_runs_newest_first(checked):
    """Each version row has its checks verdict; blocked runs list newest first with their failing rows."""
    page = model_page(checked)
    assert [(r["version"], r["verdict"], r["data_checks"]) for r in page["versions"][:2]] == [
        (CHECKED, "forced", "forced"), (FIRST + 2_000_000, "passed", None),
    ]  # fmt: skip
    newest, oldest = page["blocked"]
    assert (newest["error"], oldest["run_id"]) == (HOSTILE, "manual__2026-11-01T00:00:00+00:00")
    assert [r["statistic"] for r in oldest["failing"]] == ["max", "oov_fraction"]
    assert oldest["blocked_at"] and len(oldest["report"]) == 3
    json.dumps(page)

    html = render_model(page, **ROOTS)
    blocked = html.split('<section id="blocked">')[1].split("</section>")[0]
    assert 'href="/dags/digits_softmax/runs/manual__2026-11-01T00%3A00%3A00%2B00%3A00"' in blocked
    assert blocked.count('<tr class="blocked"') == 2 and blocked.count('class="row-fail"') == 4
    assert "data checks failed: bmi max=99" in blocked and ">train<" in blocked
    assert "values &#39;" + ESCAPED + "&#39; x3" in blocked  # a row's detail
    assert HOSTILE not in html and blocked.count(ESCAPED) == 7  # an error; a subject, value, detail a run
    assert 'class="verdict verdict-forced" title="data checks: forced; quality gate: passed">forced<' in html


def test_old_versions_render_without_checks(model, tmp_path):
    """Entries of before: the gate's verdict alone, or none (a dash); no report, slices or statistics."""
    page = version_page(model, FIRST)
    assert page["verdict"] == "passed" and page["report"] == [] and page["statistics"] is None
    assert page["slices"] == {"metrics": [], "rows": []} and page["forced_reason"] is None
    html = render_version(page, may_request=False, **ROOTS)
    assert "published before the data checks" in html and "No statistics recorded" in html
    assert 'id="slices"' not in html and 'id="forced"' not in html
    bare = ref_for(tmp_path / "bare")
    publish(bare.model_dir, [FIRST], fields={"quality_gate": None})
    (summary,) = model_page(bare)["versions"]
    assert summary["verdict"] is None and model_page(bare)["blocked"] == []
    html = render_model(model_page(bare), **ROOTS)
    assert 'title="data checks: —; quality gate: —">—</td>' in html and "No run was blocked." in html


def test_statistics_whose_file_changed_are_named_not_shown(checked):
    """A statistics file whose bytes no longer match its digest: the page names it and shows the rest."""
    (stats,) = (checked.model_dir / STATISTICS_DIR).iterdir()
    stats.write_text(stats.read_text().replace('"examples":100', '"examples":101', 1))
    page = version_page(checked, CHECKED)
    assert page["statistics"] is None and "is not the sha256" in page["statistics_problem"]
    assert page["report"][0]["subject"] == "slice sex=F"  # the entry's rows still show
    assert 'class="error"' in render_version(page, may_request=False, **ROOTS)


# --- requests that never block each other -----------------------------------------------------------


def request_context(version: int, run_id: str, *, label: str = "stable", who: str = "alice", at=None) -> dict:
    """Returns a promote run's context for route_request: its params, its run (asked for at `at`), a ti."""
    import datetime as dt

    pushed: dict = {}
    run = SimpleNamespace(
        run_id=run_id, triggering_user_name=who, run_after=at or dt.datetime.now(dt.UTC), pushed=pushed
    )
    return {
        "params": {"pipeline": "digits_softmax", "version": version, "label": label, "reason": f"{who} asks"},
        "dag_run": run,
        "ti": SimpleNamespace(
            xcom_push=lambda key, value: pushed.update({key: value}),
            xcom_pull=lambda **kw: pushed.get("request"),
        ),
    }


def route(context: dict, monkeypatch):
    """Runs route_request in `context`; returns where it branched."""
    from plugins.savedmodel_promotion import route_request

    monkeypatch.setattr("plugins.savedmodel_promotion.get_current_context", lambda: context)
    return route_request.function()


def test_an_identical_pending_request_is_merged_into_the_first(model, monkeypatch):
    """A second stable -> v while one waits opens no approval: recorded as merged, its run moves nothing."""
    from include.registry.store import read_head

    use_pipeline(model, monkeypatch)
    newest = FIRST + 2_000_000
    first, second = request_context(newest, "manual__a"), request_context(newest, "manual__b", who="carol")
    assert route(first, monkeypatch) == "approve_stable"
    assert route(second, monkeypatch) is None  # skips the approval and the move
    assert second["dag_run"].pushed["request"]["merged_into"]["run_id"] == "manual__a"
    assert route(second, monkeypatch) is None  # a retry merges once
    (pending,) = read_head(model.model_dir)["pending"]
    assert (pending["run_id"], pending["label"], pending["version"], pending["requested_by"]) == (
        "manual__a", "stable", newest, "alice",
    )  # fmt: skip
    assert [m["run_id"] for m in pending["merged"]] == ["manual__b"]
    requests = [e for e in read_manifest(model.model_dir)["history"] if e["event"] == "request"]
    assert [(e["run_id"], e["outcome"], e.get("merged_into")) for e in requests] == [
        ("manual__a", "pending", None), ("manual__b", "merged", "manual__a"),
    ]  # fmt: skip
    assert read_manifest(model.model_dir)["labels"]["stable"] == FIRST
    other = request_context(FIRST + 1_000_000, "manual__c")
    assert route(other, monkeypatch) == "approve_stable"  # another version: a request of its own
    assert len(read_head(model.model_dir)["pending"]) == 2


def test_a_decision_closes_its_pending_request(model, monkeypatch):
    """The answer to a request (here a rejection) removes it from the pending ones."""
    from include.registry.store import read_head
    from plugins.savedmodel_promotion import record_decision

    use_pipeline(model, monkeypatch)
    context = request_context(FIRST + 2_000_000, "manual__a")
    route(context, monkeypatch)
    assert len(read_head(model.model_dir)["pending"]) == 1
    record_decision(context, {"chosen_options": ["Reject"], "responded_by_user": {"id": "b", "name": "bob"}})
    assert read_head(model.model_dir)["pending"] == []
    assert read_manifest(model.model_dir)["history"][-1]["run_id"] == "manual__a"


def test_a_model_holds_a_bounded_number_of_pending_requests(model, monkeypatch):
    """Past max_pending() waiting requests a new one is refused at once, naming those that wait."""
    from airflow.sdk.exceptions import AirflowFailException

    use_pipeline(model, monkeypatch)
    monkeypatch.setenv("SAVEDMODEL_MAX_PENDING_REQUESTS", "2")
    route(request_context(FIRST + 2_000_000, "manual__a"), monkeypatch)
    route(request_context(FIRST + 1_000_000, "manual__b"), monkeypatch)
    with pytest.raises(AirflowFailException, match=r"2 requests of digits wait .*run manual__a.*decide one"):
        route(request_context(FIRST, "manual__c"), monkeypatch)
    assert route(request_context(FIRST + 2_000_000, "manual__d"), monkeypatch) is None  # still merges


def test_moves_apply_in_request_order(model):
    """Two requests for one label: in order both apply; a later one that landed first refuses the other."""
    import datetime as dt

    from include.registry.policy import PremiseChanged, set_label

    middle, newest = FIRST + 1_000_000, FIRST + 2_000_000
    t1 = dt.datetime.now(dt.UTC).isoformat()
    t2 = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
    set_label(model.model_dir, "stable", middle, by="alice", reason="first", requested_at=t1)
    set_label(model.model_dir, "stable", newest, by="carol", reason="second", requested_at=t2)
    assert read_manifest(model.model_dir)["labels"]["stable"] == newest  # the last one asked for
    set_label(model.model_dir, "canary", middle, by="carol", reason="later, landed first", requested_at=t2)
    with pytest.raises(PremiseChanged, match=f"canary of digits was version {newest} .* is version {middle}"):
        set_label(model.model_dir, "canary", FIRST, by="alice", reason="earlier", requested_at=t1)
    assert read_manifest(model.model_dir)["labels"]["canary"] == middle  # not silently applied over


def test_a_request_overtaken_before_it_is_routed_is_refused_and_recorded(model, monkeypatch):
    """route_request refuses a request whose label a later request already moved (premise_changed)."""
    import datetime as dt

    from airflow.sdk.exceptions import AirflowFailException

    from include.registry.policy import set_label

    use_pipeline(model, monkeypatch)
    asked = dt.datetime.now(dt.UTC)  # then it is queued while a later request lands
    later = (asked + dt.timedelta(minutes=1)).isoformat()
    set_label(model.model_dir, "canary", FIRST, by="carol", reason="later", requested_at=later)
    context = request_context(FIRST + 1_000_000, "manual__old", label="canary", at=asked)
    with pytest.raises(AirflowFailException, match=f"canary of digits was version {FIRST + 2_000_000}"):
        route(context, monkeypatch)
    last = read_manifest(model.model_dir)["history"][-1]
    assert (last["outcome"], last["by"], last["run_id"], last["canary_now"]) == (
        "premise_changed", "route_request", "manual__old", FIRST,
    )  # fmt: skip


def test_the_model_page_lists_pending_requests_with_their_decide_link(model, monkeypatch):
    """Who, what, when and the Required action of each waiting request, in the page and its JSON data."""
    use_pipeline(model, monkeypatch)
    newest = FIRST + 2_000_000
    route(request_context(newest, "manual__2026-12-07T10:00:00+00:00"), monkeypatch)
    route(request_context(newest, "manual__b", who="carol"), monkeypatch)
    page = model_page(model)
    (pending,) = json.loads(json.dumps(page["pending"]))  # the JSON endpoint returns the same dict
    assert (pending["label"], pending["version"], pending["requested_by"], pending["reason"]) == (
        "stable", newest, "alice", "alice asks",
    )  # fmt: skip
    decide = (
        "/dags/savedmodel_promote/runs/manual__2026-12-07T10%3A00%3A00%2B00%3A00/tasks/approve_stable/"
        "required_actions"
    )
    assert pending["decide_path"] == decide and pending["merged"][0]["requested_by"] == "carol"
    html = render_model(page, **{**ROOTS, "ui": "/ui"})
    assert f'<a class="decide" href="/ui{decide}" target="_top">' in html
    assert "stable → " in html and "(also asked: carol" in html
    empty = render_model(model_page(ref_for(model.serving_root / "other")), **ROOTS)
    assert "No request waits for an approval." in empty


def test_a_rejected_or_timed_out_request_fails_the_step_after_recording(model, monkeypatch):
    """Reject or no answer: recorded, nothing moves, and the step fails (no retry) so the run is not green."""
    import datetime as dt

    from plugins.savedmodel_promotion import RequestDeclined, approve_stable

    use_pipeline(model, monkeypatch)
    for responder, said in ((None, r"no answer within 3 days \(timed out\): nothing moved"),
                            ({"id": "bob", "name": "bob"}, "rejected by bob: nothing moved")):  # fmt: skip
        event = {
            "chosen_options": ["Reject"], "params_input": {}, "responded_at": dt.datetime.now(dt.UTC),
            "responded_by_user": responder,
        }  # fmt: skip
        with pytest.raises(RequestDeclined, match=said):
            approve_stable().execute_complete(promote_context(FIRST + 2_000_000, {"approvers": None}), event)
    manifest = read_manifest(model.model_dir)
    assert manifest["labels"]["stable"] == FIRST
    assert [e["outcome"] for e in manifest["history"][-2:]] == ["timed_out", "rejected"]
