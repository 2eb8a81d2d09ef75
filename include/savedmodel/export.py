"""Export: restore a checkpoint into the serving graph and write a SavedModel with SavedModelBuilder.

SavedModelBuilder saves the variables with a sharded V2 Saver. When the training checkpoint
already is that bundle (exactly the serving variables, one data shard), the Saver handed to the
builder copies its files instead of restoring 42 MB into a session only to encode them again:
same bytes, a third of the time (docs/performance.md, "Export at scale").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from include.config import PipelineConfig
from include.durable import fsync_tree, write_json_atomic
from include.errors import IncompleteModelError, StorageError
from include.savedmodel.files import bundle_shard_extents, content_digest, missing_parts
from include.savedmodel.warmup import warmup_logs, write_warmup_requests
from include.train.data import read_sample
from include.train.model import build_serving_graph
from include.train.training import EVAL_SAMPLE_FILE
from include.validate.signatures import build_signature_def_map

log = logging.getLogger(__name__)


def checkpoint_digest(checkpoint: str) -> str:
    """Returns a SHA-256 over the files of a TF checkpoint prefix (index and data shards)."""
    prefix = Path(checkpoint)
    files = sorted(prefix.parent.glob(prefix.name + ".*"))
    if not files:
        raise IncompleteModelError(str(prefix.parent), [f"no checkpoint files for prefix {prefix.name}"])
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)  # in chunks: a 42 MB shard read whole costs twice the time
    view = memoryview(buffer)
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            while size := handle.readinto(buffer):
                digest.update(view[:size])
    return digest.hexdigest()


def source_file(export_dir: Path) -> Path:
    """Returns the sidecar that records which checkpoint an export came from (non-numeric name)."""
    return export_dir.parent / f"{export_dir.name}.source.json"


def _recorded_source(sidecar: Path) -> str | None:
    """Returns the checkpoint digest a sidecar records; None if it is missing or unreadable."""
    try:
        return json.loads(sidecar.read_text()).get("checkpoint_digest")
    except (OSError, ValueError, AttributeError):  # AttributeError: valid JSON, not an object
        return None


def export_savedmodel(config: PipelineConfig, checkpoint: str, export_dir: str | os.PathLike[str]) -> dict:
    """Returns facts about the SavedModel exported from `checkpoint` into `export_dir`.

    A complete export of the same checkpoint is reused; anything else at `export_dir` (a partial
    export, or one of another checkpoint) is replaced. The builder writes into a temporary sibling
    that is renamed into place only once complete.
    """
    export_dir = Path(export_dir)
    source = checkpoint_digest(checkpoint)
    sidecar = source_file(export_dir)
    if export_dir.exists():
        if not missing_parts(export_dir) and _recorded_source(sidecar) == source:
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
    # Atomic: a process killed here leaves the old note or none, which the next run replaces.
    write_json_atomic(sidecar, {"checkpoint": checkpoint, "checkpoint_digest": source})
    log.info("exported SavedModel to %s", export_dir)
    return _describe_export(export_dir, source, reused=False)


def write_savedmodel(config: PipelineConfig, checkpoint: str, target_dir: str | os.PathLike[str]) -> None:
    """Writes the SavedModel of a checkpoint into `target_dir` (which must not exist yet).

    This is the TensorFlow Serving tutorial's export: SERVING tag, the YAML's signatures,
    `main_op=tables_initializer()`, `strip_default_attrs=True`; plus warmup requests in
    `assets.extra/` built from held-out examples. The builder gets the sharded V2 Saver it would
    make itself; it copies the checkpoint's bundle when that holds exactly the serving variables,
    and otherwise saves what a restore into the session loaded.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    serving = build_serving_graph(config)
    signature_def_map = build_signature_def_map(serving, config.signatures)
    with v1.Session(graph=serving.graph) as sess:
        if holds_exactly(checkpoint, serving.model_variables):
            saver = _variables_saver(serving.model_variables, copy_from=checkpoint)
        else:
            saver = _variables_saver(serving.model_variables)
            try:
                saver.restore(sess, checkpoint)
            except (
                tf.errors.NotFoundError,
                tf.errors.DataLossError,
                tf.errors.OutOfRangeError,
                ValueError,
            ) as err:
                # OutOfRange: a data shard shorter than its index says, which no retry lengthens
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
            saver=saver,
        )
        builder.save()
    if config.serving.warmup_examples:
        sample = read_sample(Path(checkpoint).parent / EVAL_SAMPLE_FILE)[: config.serving.warmup_examples]
        logs = warmup_logs(config, signature_def_map, sample)
        write_warmup_requests(Path(target_dir), logs)


def holds_exactly(checkpoint: str, variables: dict) -> bool:
    """Returns whether a V2 checkpoint holds `variables` and nothing else, whole, in one data shard.

    Such a bundle is byte for byte what a Saver over `variables` writes (the Saver orders the
    tensors by name; the index records names, dtypes, shapes, offsets and CRCs), so it can be
    copied instead of restored and saved again (tests/test_export_operator.py compares both).
    Reads the index only: the tensors' CRCs were checked when validate_signatures restored this
    checkpoint, and are checked again when publish loads the export.
    """
    import tensorflow as tf

    if not all(v.shape.is_fully_defined() for v in variables.values()):
        return False
    expected = {name: (v.shape.as_list(), v.dtype.base_dtype) for name, v in variables.items()}
    index, data = Path(f"{checkpoint}.index"), Path(f"{checkpoint}.data-00000-of-00001")
    try:
        num_shards, needed = bundle_shard_extents(index)
        if num_shards != 1 or data.stat().st_size != needed.get(0, 0):
            return False  # several shards, or bytes past the last tensor
        reader = tf.train.load_checkpoint(checkpoint)
    except (OSError, ValueError, tf.errors.OpError):
        return False  # the restore says what is wrong with it
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    return set(shapes) == set(expected) and all(
        shapes[name] == shape and dtypes[name] == dtype for name, (shape, dtype) in expected.items()
    )


def _variables_saver(variables: dict, *, copy_from: str | None = None):
    """Returns a Saver over `variables` of the kind SavedModelBuilder makes by default (sharded, V2).

    With `copy_from` (a checkpoint that `holds_exactly` these variables), `save()` copies that
    bundle's files to the builder's variables path instead of saving the session's values; the
    SaverDef the builder records in the MetaGraphDef (how loaders restore) is the same.
    """
    import tensorflow as tf

    class _BundleCopySaver(tf.compat.v1.train.Saver):
        def save(self, sess, save_path, *args, **kwargs) -> str:
            for suffix in (".index", ".data-00000-of-00001"):
                shutil.copyfile(f"{copy_from}{suffix}", f"{save_path}{suffix}")
            return save_path

    saver_class = _BundleCopySaver if copy_from else tf.compat.v1.train.Saver
    v2 = tf.compat.v1.train.SaverDef.V2
    return saver_class(variables, sharded=True, write_version=v2, allow_empty=True)


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
