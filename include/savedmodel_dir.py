"""Checks on SavedModel directories that need no TensorFlow: completeness and content digest."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

SAVED_MODEL_PB = "saved_model.pb"
VARIABLES_DIR = "variables"
VARIABLES_INDEX = "variables.index"
_DATA_SHARD = re.compile(r"^variables\.data-(\d{5})-of-(\d{5})$")


def missing_parts(version_dir: str | os.PathLike[str]) -> list[str]:
    """Returns what keeps a SavedModel dir from being complete (empty list = complete).

    Complete means: a non-empty `saved_model.pb`, and `variables/` holding a non-empty
    `variables.index` and every data shard `variables.data-0000K-of-0000N` for K < N.
    """
    root = Path(version_dir)
    if not root.is_dir():
        return [f"{root} is not a directory"]
    problems = []
    pb = root / SAVED_MODEL_PB
    if not pb.is_file():
        problems.append(f"{SAVED_MODEL_PB} is missing")
    elif pb.stat().st_size == 0:
        problems.append(f"{SAVED_MODEL_PB} is empty")
    variables = root / VARIABLES_DIR
    if not variables.is_dir():
        problems.append(f"{VARIABLES_DIR}/ is missing")
        return problems
    index = variables / VARIABLES_INDEX
    if not index.is_file():
        problems.append(f"{VARIABLES_DIR}/{VARIABLES_INDEX} is missing")
    elif index.stat().st_size == 0:
        problems.append(f"{VARIABLES_DIR}/{VARIABLES_INDEX} is empty")
    shards: dict[int, set[int]] = {}
    for entry in variables.iterdir():
        match = _DATA_SHARD.match(entry.name)
        if match and entry.is_file():
            shards.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if not shards:
        problems.append(f"{VARIABLES_DIR}/ holds no variables.data-*-of-* shard")
    elif len(shards) > 1:
        problems.append(f"{VARIABLES_DIR}/ mixes shard sets of sizes {sorted(shards)}")
    else:
        ((total, present),) = shards.items()
        absent = sorted(set(range(total)) - present)
        if total == 0 or absent:
            names = ", ".join(f"variables.data-{i:05d}-of-{total:05d}" for i in absent[:5])
            problems.append(f"{VARIABLES_DIR}/ is missing data shard(s) {names or 'of 0'}")
    return problems


def is_complete(version_dir: str | os.PathLike[str]) -> bool:
    """Returns whether a SavedModel dir holds saved_model.pb, the index and every data shard."""
    return not missing_parts(version_dir)


def content_digest(directory: str | os.PathLike[str]) -> str:
    """Returns a SHA-256 over every file's relative path, size and bytes, in sorted order."""
    root = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def fsync_tree(directory: str | os.PathLike[str]) -> None:
    """Flushes every file and directory under `directory` to disk."""
    root = Path(directory)
    for path in sorted(root.rglob("*"), reverse=True):
        _fsync(path)
    _fsync(root)


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
