"""Verify the artifact that ships: load the exported SavedModel from disk and query it.

Like TFX's InfraValidator: what is checked is the directory that will be published, not a graph
rebuilt from the checkpoint. The SavedModel is loaded into a fresh graph and session (as
TensorFlow Serving loads it: SERVING tag, `main_op` run), every signature is run on the held-out
rows through the tensor names in its SignatureDef, and the outputs are compared with the
reference outputs `validate_signatures` recorded from the trained checkpoint. Every warmup
record in `assets.extra/` is replayed the same way.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from include.config import PipelineConfig
from include.errors import ContractMismatchError, ExportVerificationError, QualityGateError
from include.savedmodel.files import content_digest
from include.savedmodel.warmup import read_warmup_requests, request_feeds
from include.validate.signatures import outputs_diff, run_signatures

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verification:
    """What the check of an export found: how much of it answered like the trained model."""

    content_digest: str  # of the directory as it was loaded: publish refuses any other content
    signatures: int
    rows: int
    warmup_records: int
    pid: int  # the process that loaded it (the export was written by another one)

    def to_dict(self) -> dict:
        """Returns the verification as a plain dict (recorded in the manifest)."""
        return asdict(self)


def verify_export(
    export_dir: str | os.PathLike[str], config: PipelineConfig, examples: list[bytes], reference: dict
) -> Verification:
    """Returns the verification of the SavedModel at `export_dir`; raises ExportVerificationError.

    `examples` are the held-out rows (serialized) and `reference` the outputs of every signature
    on them as computed from the trained checkpoint (`signatures.outputs_to_json`).
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir = Path(export_dir)
    digest = content_digest(export_dir)
    warmup = read_warmup_requests(export_dir)  # eager tf.data: before a graph becomes the default
    with v1.Session(graph=tf.Graph()) as sess:
        try:
            meta_graph = v1.saved_model.loader.load(
                sess, [v1.saved_model.tag_constants.SERVING], str(export_dir)
            )
        except Exception as err:  # any failure to load means TF Serving would not load it either
            raise ExportVerificationError(str(export_dir), [f"does not load: {_first_line(err)}"]) from None
        signatures = dict(meta_graph.signature_def)
        try:
            outputs = run_signatures(sess, signatures, config, examples)
        except (ContractMismatchError, QualityGateError) as err:
            raise ExportVerificationError(str(export_dir), [str(err)]) from None
        except tf.errors.OpError as err:
            raise ExportVerificationError(str(export_dir), [f"fails to answer: {_first_line(err)}"]) from None
        problems = outputs_diff(reference, outputs)
        replayed = 0
        for record in warmup:
            key, feeds = request_feeds(record)
            problems.extend(_replay(sess, signatures, key, feeds, reference))
            replayed += 1
    if problems:
        raise ExportVerificationError(str(export_dir), problems)
    result = Verification(digest, len(signatures), len(examples), replayed, os.getpid())
    log.info(
        "the exported SavedModel at %s loads and answers like the trained model: %d signatures on %d "
        "held-out rows, %d warmup records replayed",
        export_dir,
        result.signatures,
        result.rows,
        result.warmup_records,
    )
    return result


def _replay(sess, signatures: dict, key: str, feeds: dict, reference: dict) -> list[str]:
    """Returns the problems of replaying one warmup request (compared with the reference's first rows)."""
    import tensorflow as tf

    signature = signatures.get(key)
    if signature is None:
        return [f"warmup request for signature {key!r}, which the SavedModel does not have"]
    unknown = sorted(set(feeds) - set(signature.inputs))
    if unknown:
        return [f"warmup request for {key!r} feeds inputs {unknown} the signature does not have"]
    try:
        values = sess.run(
            {name: info.name for name, info in signature.outputs.items()},
            feed_dict={signature.inputs[name].name: value for name, value in feeds.items()},
        )
    except tf.errors.OpError as err:
        return [f"warmup request for {key!r} fails: {_first_line(err)}"]
    rows = len(next(iter(feeds.values())))
    return [
        f"warmup {line}" for line in outputs_diff({key: reference.get(key, {})}, {key: values}, rows=rows)
    ]


def _first_line(err: BaseException) -> str:
    """Returns the first line of an error message (TensorFlow's run to many lines of graph context)."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:500]
