"""
## Promote or roll back a SavedModel version (Airflow DAG, manual trigger only)

Moves a label — `stable` or `canary` — to a version that is already published, after checking
that its directory is complete and that TensorFlow loads it. Pointing `stable` at an older
version is a rollback. The move, who asked and why are recorded in the model's registry
(`manifest.json`, `.manifest/history.jsonl`), and `models.config` under the serving root is
regenerated, so TensorFlow Serving (started with
`--model_config_file` and a `--model_config_file_poll_wait_seconds`) follows the label.

```
route_request ─┬──────────────────► move_label
               └─► approve_stable ─┘
```

When the pipeline's YAML sets `serving.promotion_approval: required`, a `stable` move waits in
`approve_stable` (the UI's **Required actions**) until someone approves or rejects it; no answer
within 3 days counts as a rejection. Four eyes: only the pipeline's `serving.approvers` may
answer (when it names any; else anyone Airflow lets answer), and never the requester (the user
who triggered the run), admins included; an Approve by the requester is recorded as refused and
nothing moves. The dialog shows the requested version's and the current `stable`'s held-out
metrics side by side, and the reason as text. Approve → the label moves, unless `stable` moved
since the request was made (refused, recorded, nothing moves), and the history records the
requester, the approver and the reason; reject or timeout → nothing moves, and the history
records who refused (or the timeout). A reason with control characters (NUL, U+202E, line
breaks, ...) is refused before anything is recorded. `canary` moves never wait. The Models page
(`/registry`, "Models" in the UI's navigation) starts these runs from a version's page.

Requests never block each other: a request identical to one that waits (same model, label and
version) is merged into it and its run ends at once, moving nothing; a model has at most 3
requests waiting, and `max_active_runs` is every approval that may wait plus 16, so `canary` moves
and requests being routed always find a free run. Moves apply in request order: a request that a
later one overtook is refused (premise_changed). A rejected or timed-out request fails
`approve_stable`: its run is not green.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from include.config import load_all_pipelines
from include.registry.store import LABELS
from include.versions import MAX_VERSION
from plugins.savedmodel_notifiers import PipelineNotifier
from plugins.savedmodel_promotion import approve_stable, max_active_runs, move_label, route_request

_configs, _ = load_all_pipelines()

with DAG(
    dag_id="savedmodel_promote",
    description="Move the stable/canary label of a model to a published version (promote or roll back)",
    doc_md=__doc__,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["savedmodel", "registry"],
    # A waiting approval holds no worker slot (awaiting input), but its run is active: room for every
    # approval that may wait (each model at most a few), and MOVE_SLOTS more for everything else.
    max_active_runs=max_active_runs(_configs),
    # A failed request (an unknown version, one TensorFlow cannot load) sends run_failed to the
    # receivers of the pipeline it named (plugins/savedmodel_notifiers.py).
    default_args={"owner": "ml-platform", "retries": 1, "on_failure_callback": [PipelineNotifier()]},
    params={
        "pipeline": Param(
            _configs[0].name if _configs else None,
            type="string",
            enum=[c.name for c in _configs] or [""],
            title="Pipeline",
            description="The pipeline whose model to relabel.",
        ),
        "version": Param(
            type="integer",
            minimum=1,
            maximum=MAX_VERSION,
            title="Version",
            description="A published version number (see `make versions`).",
        ),
        "label": Param("stable", type="string", enum=list(LABELS), title="Label"),
        "reason": Param(
            type="string",
            minLength=1,
            maxLength=500,
            title="Reason",
            description="Why, on one line (recorded in the manifest with your user name).",
        ),
    },
):
    routed = route_request()
    approval = approve_stable()
    moved = move_label()
    routed >> [approval, moved]
    approval >> moved
