"""OpenLineage datasets of a run: the partitions it read, its checkpoint and export, the published version.

Built from what a task already holds when it ends (the train step's data lineage, the export and
publish results): nothing is read again. Names follow OpenLineage's dataset naming
(`openlineage.client.naming`): a local path is namespace `file` and name the absolute path;
`gs://bucket/key` and `s3://bucket/key` are namespace `gs://bucket` / `s3://bucket` and name the key.
Two facets are our own, described by the JSON Schemas in `facets.json` beside this module:
`savedmodel_partition` (an input: its partition, its own fingerprint, example counts, the
fingerprint of the window it was read in) and `savedmodel_version` (the published version:
number, status, labels, metrics).

`STEPS` maps each step to what it read and wrote, as (inputs, outputs). Imported only when
OpenLineage is on (plugins/savedmodel_lineage.py): it imports the client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import attr
from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    dataset_version_dataset,
    input_statistics_input_dataset,
)
from openlineage.client.naming.dataset import GCS, S3, LocalFileSystem

from include.run.record import RunRecord
from include.storage.location import BucketURI, is_bucket, join
from include.train.training import CHECKPOINT_DIR, STATISTICS_FILE

#: Where the schemas of our facets are: `facets.json` beside this module, named by a URN (no host serves it).
FACETS_SCHEMA = "urn:savedmodel-pipeline:openlineage:facets:1-0-0"
FACETS_FILE = Path(__file__).with_name("facets.json")


@attr.define
class PartitionInputDatasetFacet(InputDatasetFacet):
    """A data partition as a run read it: its fingerprint, its examples and the window it was read in."""

    partition: str
    windowFingerprint: str
    windowPartitions: int
    windowFiles: int
    windowRecords: int | None = attr.field(default=None)
    examples: int | None = attr.field(default=None)
    heldOut: int | None = attr.field(default=None)
    fingerprint: str | None = attr.field(default=None)

    _additional_skip_redact: ClassVar[list[str]] = ["partition", "windowFingerprint", "fingerprint"]

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA}#/$defs/PartitionInputDatasetFacet"


@attr.define
class VersionDatasetFacet(DatasetFacet):
    """A published model version: its number, what publishing did, its labels and held-out metrics."""

    version: int
    status: str
    contentDigest: str
    labels: list[str] = attr.field(factory=list)
    metrics: dict[str, float] = attr.field(factory=dict)

    _additional_skip_redact: ClassVar[list[str]] = ["status", "contentDigest", "labels", "metrics"]

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA}#/$defs/VersionDatasetFacet"


def dataset_name(location: str | Path | BucketURI) -> tuple[str, str]:
    """Returns the OpenLineage (namespace, name) of a local path or a bucket URI."""
    if is_bucket(location):
        uri = BucketURI(str(location))
        naming = {"gs": GCS, "s3": S3}[uri.scheme](bucket_name=uri.bucket, object_key=uri.key)
    else:
        naming = LocalFileSystem(path=str(Path(location).absolute()))
    return naming.get_namespace(), naming.get_name()


def partition_inputs(location: str, data: dict, statistics: dict | None = None) -> list[InputDataset]:
    """Returns one input per partition of a train step's window (`data`), with counts where recorded.

    `statistics`: the window's statistics (`by_partition` examples and held-out counts); None when
    the statistics pass is off, and then the facet carries the window's figures only.
    """
    by_partition = (statistics or {}).get("by_partition") or {}
    fingerprints = data.get("partition_fingerprints") or {}  # None in lineage recorded before them
    inputs = []
    for partition in data["partitions"]:
        counts = by_partition.get(partition) or {}
        facets: dict = {
            "savedmodel_partition": PartitionInputDatasetFacet(
                partition=partition,
                windowFingerprint=data["fingerprint"],
                windowPartitions=len(data["partitions"]),
                windowFiles=data["files"],
                windowRecords=data.get("records"),
                examples=counts.get("examples"),
                heldOut=counts.get("held_out"),
                fingerprint=fingerprints.get(partition),
            )
        }
        if counts.get("examples") is not None:
            facets["inputStatistics"] = input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                rowCount=counts["examples"]
            )
        namespace, name = dataset_name(join(location, partition))
        inputs.append(InputDataset(namespace=namespace, name=name, inputFacets=facets))
    return inputs


def dir_input(location: str | Path | BucketURI) -> InputDataset:
    """Returns a run's checkpoint or export dir as an input."""
    namespace, name = dataset_name(location)
    return InputDataset(namespace=namespace, name=name)


def dir_output(location: str | Path | BucketURI) -> OutputDataset:
    """Returns a run's checkpoint or export dir as an output."""
    namespace, name = dataset_name(location)
    return OutputDataset(namespace=namespace, name=name)


def version_output(published: dict, metrics: dict) -> OutputDataset:
    """Returns the published version dir (a PublishResult's dict) with its version and metrics."""
    namespace, name = dataset_name(published["path"])
    facets = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=str(published["version"])
        ),
        "savedmodel_version": VersionDatasetFacet(
            version=published["version"],
            status=published["status"],
            contentDigest=published["content_digest"],
            labels=list(published.get("labels") or []),
            metrics={k: v for k, v in metrics.items() if type(v) in (int, float)},  # not nested, not bools
        ),
    }
    return OutputDataset(namespace=namespace, name=name, facets=facets)


def _checkpoint(record: RunRecord) -> str:
    """Returns the run's checkpoint dir in the work dir's terms (a path or a bucket URI)."""
    return record.recorded(record.home / CHECKPOINT_DIR)


def train_lineage(record: RunRecord, result: dict) -> tuple[list, list]:
    """Returns train's lineage: each partition of its window in (with its counts), the checkpoint out.

    Called in the train task before its local copy of a bucket work dir is discarded.
    """
    statistics_file = record.home / CHECKPOINT_DIR / STATISTICS_FILE
    statistics = json.loads(statistics_file.read_text()) if statistics_file.is_file() else None
    inputs = partition_inputs(str(record.config.data.location), result["data"], statistics)
    return inputs, [dir_output(_checkpoint(record))]


def validate_lineage(record: RunRecord) -> tuple[list, list]:
    """Returns validate_signatures' lineage: the checkpoint in, nothing out (its verdict stays in the run)."""
    return [dir_input(_checkpoint(record))], []


def export_lineage(record: RunRecord, result: dict) -> tuple[list, list]:
    """Returns export_savedmodel's lineage: the checkpoint in, the exported SavedModel dir out."""
    return [dir_input(_checkpoint(record))], [dir_output(result["export_dir"])]


def publish_lineage(export_dir: str, published: dict, metrics: dict) -> tuple[list, list]:
    """Returns publish_version's lineage: the checked export in, the published version out."""
    return [dir_input(export_dir)], [version_output(published, metrics)]


STEPS = {
    "train": train_lineage,
    "validate_signatures": validate_lineage,
    "export_savedmodel": export_lineage,
    "publish_version": publish_lineage,
}
