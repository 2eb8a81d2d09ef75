"""SavedModelExportOperator: the export step, wrapping TensorFlow's SavedModelBuilder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator

from plugins.savedmodel_errors import fail_fast_on_permanent_errors

if TYPE_CHECKING:
    from airflow.sdk import Context


class SavedModelExportOperator(BaseOperator):
    """Restores a training checkpoint into a session and exports it with SavedModelBuilder.

    Calls `add_meta_graph_and_variables(sess, [SERVING], signature_def_map,
    main_op=tables_initializer(), strip_default_attrs=True)` then `save()`, into a temporary
    sibling of `export_dir` renamed into place when complete. A complete export of the same
    checkpoint is reused on rerun; a partial or stale one is replaced.

    :param pipeline_file: the pipeline YAML (model builder, signatures). (templated)
    :param checkpoint: the checkpoint prefix written by the train task. (templated)
    :param export_base: the directory that receives the numeric version dir. (templated)
    :param version: the version number, a positive int64. (templated)
    """

    template_fields: Sequence[str] = ("pipeline_file", "checkpoint", "export_base", "version")
    ui_color = "#ffb74d"

    def __init__(
        self, *, pipeline_file: str, checkpoint: str, export_base: str, version: int | str, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline_file = pipeline_file
        self.checkpoint = checkpoint
        self.export_base = export_base
        self.version = version

    def execute(self, context: Context) -> dict:
        from include.config import load_pipeline_config
        from include.export import export_savedmodel
        from include.versions import parse_version

        with fail_fast_on_permanent_errors():
            export_dir = Path(self.export_base) / str(parse_version(self.version))
            config = load_pipeline_config(self.pipeline_file)
            result = export_savedmodel(config, str(self.checkpoint), export_dir)
        self.log.info(
            "SavedModel at %s (%d bytes, reused=%s)", result["export_dir"], result["bytes"], result["reused"]
        )
        return result
