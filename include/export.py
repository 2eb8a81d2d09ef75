"""Export: restore a checkpoint into the serving graph and write a SavedModel with SavedModelBuilder."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from include.config import PipelineConfig
from include.durable import fsync_tree
from include.errors import IncompleteModelError, StorageError
from include.model import build_serving_graph
from include.savedmodel_dir import content_digest, missing_parts
from include.signatures import build_signature_def_map
from include.training import EVAL_SAMPLE_FILE
from include.warmup import warmup_logs, write_warmup_requests

log = logging.getLogger(__name__)


def checkpoint_digest(checkpoint: str) -> str:
    """Returns a SHA-256 over the files of a TF checkpoint prefix (index and data shards)."""
    prefix = Path(checkpoint)
    files = sorted(prefix.parent.glob(prefix.name + ".*"))
    if not files:
        raise IncompleteModelError(str(prefix.parent), [f"no checkpoint files for prefix {prefix.name}"])
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def _source_file(export_dir: Path) -> Path:
    """Returns the sidecar that records which checkpoint an export came from (non-numeric name)."""
    return export_dir.parent / f"{export_dir.name}.source.json"


def export_savedmodel(config: PipelineConfig, checkpoint: str, export_dir: str | os.PathLike[str]) -> dict:
    """Returns facts about the SavedModel exported from `checkpoint` into `export_dir`.

    A complete export of the same checkpoint is reused; anything else at `export_dir` (a partial
    export, or one of another checkpoint) is replaced. The builder writes into a temporary sibling
    that is renamed into place only once complete.
    """
    export_dir = Path(export_dir)
    source = checkpoint_digest(checkpoint)
    sidecar = _source_file(export_dir)
    if export_dir.exists():
        recorded = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        if not missing_parts(export_dir) and recorded.get("checkpoint_digest") == source:
            log.info("reusing the complete export of this checkpoint at %s", export_dir)
            return _describe_export(export_dir, source, reused=True)
        log.warning("removing the stale or partial export at %s", export_dir)
        shutil.rmtree(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in export_dir.parent.glob(f".tmp-{export_dir.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp_dir = export_dir.parent / f".tmp-{export_dir.name}-{os.getpid()}"
    try:
        write_savedmodel(config, checkpoint, tmp_dir)
        problems = missing_parts(tmp_dir)
        if problems:
            raise IncompleteModelError(str(tmp_dir), problems)
        fsync_tree(tmp_dir)
        os.rename(tmp_dir, export_dir)
    except Exception as err:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if isinstance(err, OSError) or type(err).__module__.startswith("tensorflow"):
            raise StorageError(f"cannot write the SavedModel to {tmp_dir}: {err}") from err
        raise
    sidecar.write_text(json.dumps({"checkpoint": checkpoint, "checkpoint_digest": source}))
    log.info("exported SavedModel to %s", export_dir)
    return _describe_export(export_dir, source, reused=False)


def write_savedmodel(config: PipelineConfig, checkpoint: str, target_dir: str | os.PathLike[str]) -> None:
    """Writes the SavedModel of a checkpoint into `target_dir` (which must not exist yet).

    This is the TensorFlow Serving tutorial's export: SERVING tag, the YAML's signatures,
    `main_op=tables_initializer()`, `strip_default_attrs=True`; plus warmup requests in
    `assets.extra/` built from held-out examples.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    serving = build_serving_graph(config)
    signature_def_map = build_signature_def_map(serving, config.signatures)
    with v1.Session(graph=serving.graph) as sess:
        try:
            v1.train.Saver(var_list=serving.model_variables).restore(sess, checkpoint)
        except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as err:
            raise IncompleteModelError(
                str(Path(checkpoint).parent), [f"cannot restore checkpoint: {err}"]
            ) from None
        builder = v1.saved_model.builder.SavedModelBuilder(str(target_dir))
        builder.add_meta_graph_and_variables(
            sess,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map=signature_def_map,
            main_op=v1.tables_initializer(),
            strip_default_attrs=True,
        )
        builder.save()
    if config.serving.warmup_examples:
        sample = np.load(Path(checkpoint).parent / EVAL_SAMPLE_FILE)["x"][: config.serving.warmup_examples]
        logs = warmup_logs(config, signature_def_map, sample)
        write_warmup_requests(Path(target_dir), logs)


def _describe_export(export_dir: Path, source: str, *, reused: bool) -> dict:
    """Returns the small JSON-able description of an export handed on through XCom."""
    size = sum(p.stat().st_size for p in export_dir.rglob("*") if p.is_file())
    return {
        "export_dir": str(export_dir),
        "checkpoint_digest": source,
        "content_digest": content_digest(export_dir),
        "bytes": size,
        "reused": reused,
    }
