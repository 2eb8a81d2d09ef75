"""What each pipeline claims, and which file keeps a claim that two files make.

A pipeline claims its DAG id (its `name`), the Asset its publish task emits (named after
`model.name`, its URI the model dir), its model dir (<serving_root>/<model.name>) and its runs
dir, which holds its runs' work dirs (<export_root>/<model.name>/runs); a dir inside another
pipeline's dir counts as shared. Two pipelines sharing one would replace each other's DAG, move
each other's labels and use each other's versions as baselines, or fail only at publish time on
an Asset with two URIs. The catalog keeps one of them and refuses the other file, naming both,
at parse time.

Who keeps a contested claim (docs/runbook.md, "Invalid files"), so that a file added beside a
working pipeline never takes that pipeline down:

1. the file the registry names: the newest version in its model dir was published by a run of
   this pipeline (the entry's `dag_id`), from this very file (its `config.source`) first;
2. else the file modified longer ago (`cp` gives a copy a newer modification time);
3. else the file whose path sorts first.

Only contested pipelines cost a registry read (two small files); the rest is path arithmetic.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from include.config.schema import PipelineConfig
from include.errors import ConfigError, ManifestError
from include.storage.location import is_bucket
from include.versions import model_dir, runs_dir

# What the registry says of a pipeline, best first: its model dir's newest version was published
# from this file, by a pipeline of this name, or neither.
_PUBLISHED_FROM_THIS_FILE, _PUBLISHED_BY_THIS_NAME, _NOT_PUBLISHED = 0, 1, 2


@dataclass(frozen=True)
class _Claimant:
    """A valid pipeline file, with what decides whether it keeps a contested claim."""

    config: PipelineConfig
    mtime_ns: int
    rank: int  # _PUBLISHED_FROM_THIS_FILE ... _NOT_PUBLISHED; only read for contested files

    @property
    def precedence(self) -> tuple[int, int, str]:
        """Returns the sort key of the rule: registry record, then older file, then path."""
        return self.rank, self.mtime_ns, str(self.config.source_path)


def model_asset_name(config: PipelineConfig) -> str:
    """Returns the name of the Asset that gets an event each time the pipeline publishes a version."""
    return f"savedmodel/{config.model.name}"


def model_asset_uri(config: PipelineConfig) -> str:
    """Returns the URI of the pipeline's model Asset: its model dir (a file:// URI, or the bucket's)."""
    found = model_dir(config.storage.serving_root, config.model.name)
    return str(found) if is_bucket(found) else f"file://{found}"


def refuse_clashes(
    contenders: Sequence[tuple[PipelineConfig, int]],
) -> tuple[list[PipelineConfig], list[ConfigError]]:
    """Returns the pipelines that keep their claims (input order) and one ConfigError per refused file.

    `contenders` are the valid files' (config, modification time in ns); the file that keeps a
    claim goes first, then every later one sharing a claim with a kept one is refused.
    """
    configs = [config for config, _ in contenders]
    clashing = {
        k
        for i, j in itertools.combinations(range(len(configs)), 2)
        if shared_claims(configs[i], configs[j])
        for k in (i, j)
    }
    claimants = [
        _Claimant(config, mtime_ns, _registry_rank(config) if i in clashing else _NOT_PUBLISHED)
        for i, (config, mtime_ns) in enumerate(contenders)
    ]
    kept: list[int] = []
    refused: dict[int, ConfigError] = {}
    for i in sorted(range(len(claimants)), key=lambda i: claimants[i].precedence):
        problems = []
        for k in kept:
            if shared := shared_claims(configs[i], configs[k]):
                problems += [*shared, _why_kept(claimants[k], claimants[i])]
        if problems:
            refused[i] = ConfigError(str(configs[i].source_path), problems)
        else:
            kept.append(i)
    return [configs[i] for i in sorted(kept)], [refused[i] for i in sorted(refused)]


def shared_claims(config: PipelineConfig, other: PipelineConfig) -> list[str]:
    """Returns what `config` claims that `other` claims too, one `key: ...` line each (empty: nothing)."""
    where = f"pipeline {other.name!r} ({other.source_path})"
    problems = []
    if config.name == other.name:
        problems.append(f"name: DAG id {config.name!r} is already the DAG id of {where}")
    if config.model.name == other.model.name and model_asset_uri(config) != model_asset_uri(other):
        problems.append(
            f"model.name: Asset {model_asset_name(config)!r} is already the Asset of {where}, with "
            f"URI {model_asset_uri(other)}; Airflow refuses a second URI ({model_asset_uri(config)})"
        )
    for (kind, path), (other_kind, other_path) in itertools.product(_dirs(config), _dirs(other)):
        if relation := _relation(path, other_path):
            problems.append(f"storage: the {kind} {path} {relation} the {other_kind} of {where}")
    return problems


def _dirs(config: PipelineConfig) -> list[tuple[str, Path]]:
    """Returns the dirs a pipeline writes into that no other pipeline may share, by what they are."""
    storage, model = config.storage, config.model.name
    return [
        ("model dir", model_dir(storage.serving_root, model)),
        ("runs dir", runs_dir(storage.export_root, model)),
    ]


def _relation(path: Path, other: Path) -> str | None:
    """Returns how `path` overlaps `other` ('is', 'lies inside', 'holds'), or None where it does not."""
    if path == other:
        return "is"
    if is_bucket(path) or is_bucket(other):  # a bucket prefix overlaps only one of the same bucket
        if not (is_bucket(path) and is_bucket(other)):
            return None
        path, other = PurePosixPath(path.replace("://", "/", 1)), PurePosixPath(other.replace("://", "/", 1))
    if path.is_relative_to(other):
        return "lies inside"
    if other.is_relative_to(path):
        return "holds"
    return None


def _registry_rank(config: PipelineConfig) -> int:
    """Returns what the registry of the pipeline's model dir says of it (one of the ranks above)."""
    # Imported here: only contested pipelines read the registry, and include.config must not need
    # the registry to import (the registry's CLI imports include.config).
    from include.registry.store import read_entry, read_head

    directory = model_dir(config.storage.serving_root, config.model.name)
    if is_bucket(directory):  # parsing DAGs makes no network calls: the file times decide
        return _NOT_PUBLISHED
    try:
        newest = read_head(directory)["newest"]
        entry = read_entry(directory, newest[-1]) if newest else None
    except (ManifestError, OSError, ValueError):  # a damaged registry names nobody
        return _NOT_PUBLISHED
    if not entry or entry.get("dag_id") != config.dag_id:
        return _NOT_PUBLISHED
    source = entry["config"].get("source") if isinstance(entry.get("config"), dict) else None
    return _PUBLISHED_FROM_THIS_FILE if source == str(config.source_path) else _PUBLISHED_BY_THIS_NAME


def _why_kept(keeper: _Claimant, refused: _Claimant) -> str:
    """Returns the line that says which file keeps the claims, and by which step of the rule."""
    config = keeper.config
    if keeper.rank < refused.rank:
        directory = model_dir(config.storage.serving_root, config.model.name)
        by = "from it" if keeper.rank == _PUBLISHED_FROM_THIS_FILE else f"by a pipeline named {config.name!r}"
        why = f"the newest version in {directory} was published {by}"
    elif keeper.mtime_ns < refused.mtime_ns:
        why = f"it is the older file (modified {_iso(keeper.mtime_ns)}, this file {_iso(refused.mtime_ns)})"
    else:
        why = "both were modified at the same time and its path sorts first"
    return f"{config.source_path} keeps what it shares with this file: {why}"


def _iso(mtime_ns: int) -> str:
    """Returns a modification time as ISO 8601 UTC to the millisecond."""
    return dt.datetime.fromtimestamp(mtime_ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")
