"""SavedModelExportOperator: the export step, wrapping TensorFlow's SavedModelBuilder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator

from include.summary import summary_line
from plugins.savedmodel_errors import fail_fast_on_permanent_errors
from plugins.savedmodel_lineage import LineageMixin, keep

if TYPE_CHECKING:
    from airflow.sdk import Context


class SavedModelExportOperator(LineageMixin, BaseOperator):
    """Restores a run's training checkpoint into a session and exports it with SavedModelBuilder.

    Calls `add_meta_graph_and_variables(sess, [SERVING], signature_def_map,
    main_op=tables_initializer(), strip_default_attrs=True)` then `save()`, with the signatures
    the run's config declares, into a temporary sibling of the run's export dir that is renamed
    into place when complete. A complete export of the same checkpoint is reused on rerun; a
    partial or stale one is replaced. With the run's work dir in a bucket, the checkpoint is
    pulled into a local copy, exported there, and the export pushed back (`saved_model.pb` after
    the rest of its dir, export.json last; include/run/workdir.py). With OpenLineage on, it
    reports the checkpoint as its input and the export dir as its output.

    :param run_record: path or bucket URI of the run record written by the train task (`run.json`).
        (templated)
    """

    template_fields: Sequence[str] = ("run_record",)
    ui_color = "#ffb74d"

    def __init__(self, *, run_record: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run_record = run_record

    def execute(self, context: Context) -> dict:
        from include.run import workdir
        from include.run.record import load_run
        from include.run.steps import export_run

        with fail_fast_on_permanent_errors():
            run = load_run(self.run_record)
            try:
                result = export_run(run)
                keep(context, "export_savedmodel", run, result)
            finally:
                workdir.discard(run)
        self.log.info(
            "SavedModel at %s (%d bytes, reused=%s)", result["export_dir"], result["bytes"], result["reused"]
        )
        self.log.info(
            summary_line(
                self.task_id,
                f"SavedModelBuilder wrote version {PurePosixPath(result['export_dir']).name} "
                f"({result['bytes']:,} bytes{', reused' if result['reused'] else ''})",
            )
        )
        return result
