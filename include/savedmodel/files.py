"""Checks on SavedModel directories that need no TensorFlow: completeness and content digest."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

SAVED_MODEL_PB = "saved_model.pb"
VARIABLES_DIR = "variables"
VARIABLES_INDEX = "variables.index"
_DATA_SHARD = re.compile(r"^variables\.data-(\d{5})-of-(\d{5})$")


def missing_parts(version_dir: str | os.PathLike[str]) -> list[str]:
    """Returns what keeps a SavedModel dir from being complete (empty list = complete).

    Complete means: a well-formed `saved_model.pb` holding a MetaGraphDef, and `variables/`
    holding a well-formed `variables.index` and every data shard it names, each at least as
    long as the tensors the index places in it. Needs no TensorFlow: cheap enough to poke.
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
    elif problem := saved_model_pb_problem(pb):
        problems.append(problem)
    variables = root / VARIABLES_DIR
    if not variables.is_dir():
        problems.append(f"{VARIABLES_DIR}/ is missing")
        return problems
    index = variables / VARIABLES_INDEX
    extents = None
    if not index.is_file():
        problems.append(f"{VARIABLES_DIR}/{VARIABLES_INDEX} is missing")
    elif index.stat().st_size == 0:
        problems.append(f"{VARIABLES_DIR}/{VARIABLES_INDEX} is empty")
    else:
        try:
            extents = bundle_shard_extents(index)
        except ValueError as err:
            problems.append(f"{VARIABLES_DIR}/{VARIABLES_INDEX} is truncated or corrupted ({err})")
    problems.extend(_shard_problems(variables, extents))
    return problems


def _shard_problems(variables: Path, extents: tuple[int, dict[int, int]] | None) -> list[str]:
    """Returns what is wrong with the data shards, judged by the index when it could be read."""
    shards: dict[int, dict[int, int]] = {}
    for entry in variables.iterdir():
        match = _DATA_SHARD.match(entry.name)
        if match and entry.is_file():
            shards.setdefault(int(match.group(2)), {})[int(match.group(1))] = entry.stat().st_size
    if extents is not None:
        total, needed = extents
        present = shards.get(total, {})
        problems = []
        for shard in range(total):
            name = f"variables.data-{shard:05d}-of-{total:05d}"
            if shard not in present:
                problems.append(f"{VARIABLES_DIR}/ is missing data shard {name} named by the index")
            elif present[shard] < needed.get(shard, 0):
                problems.append(
                    f"{VARIABLES_DIR}/{name} is truncated ({present[shard]} of {needed[shard]} bytes)"
                )
        return problems
    if not shards:
        return [f"{VARIABLES_DIR}/ holds no variables.data-*-of-* shard"]
    if len(shards) > 1:
        return [f"{VARIABLES_DIR}/ mixes shard sets of sizes {sorted(shards)}"]
    ((total, present),) = shards.items()
    absent = sorted(set(range(total)) - set(present))
    if total == 0 or absent:
        names = ", ".join(f"variables.data-{i:05d}-of-{total:05d}" for i in absent[:5])
        return [f"{VARIABLES_DIR}/ is missing data shard(s) {names or 'of 0'}"]
    return []


def missing_objects(sizes: Mapping[str, int]) -> list[str]:
    """Returns what keeps a SavedModel in a bucket from being complete, judged by its listing alone.

    `sizes` maps each object's key below the version dir (`saved_model.pb`,
    `variables/variables.index`, ...) to its size. The presence rules of `missing_parts`, without
    reading any object: a non-empty `saved_model.pb`, a non-empty `variables/variables.index`,
    and one complete set of data shards `variables.data-K-of-N` (K < N). What the index names and
    whether the protos are well formed is for the loader (publish verifies the export it pulled).
    """
    if not sizes:
        return ["no object is there"]
    problems = []
    if SAVED_MODEL_PB not in sizes:
        problems.append(f"{SAVED_MODEL_PB} is missing")
    elif sizes[SAVED_MODEL_PB] == 0:
        problems.append(f"{SAVED_MODEL_PB} is empty")
    prefix = f"{VARIABLES_DIR}/"
    variables = {
        k[len(prefix) :]: n for k, n in sizes.items() if k.startswith(prefix) and "/" not in k[len(prefix) :]
    }
    if not variables:
        problems.append(f"{VARIABLES_DIR}/ is missing")
        return problems
    if VARIABLES_INDEX not in variables:
        problems.append(f"{VARIABLES_DIR}/{VARIABLES_INDEX} is missing")
    elif variables[VARIABLES_INDEX] == 0:
        problems.append(f"{VARIABLES_DIR}/{VARIABLES_INDEX} is empty")
    shards: dict[int, set[int]] = {}
    for name in variables:
        if match := _DATA_SHARD.match(name):
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


def missing_parts_at(version_dir: str | os.PathLike[str]) -> list[str]:
    """Returns what keeps a SavedModel dir from being complete: `missing_parts` on a local path,
    `missing_objects` on the listing of a `gs://`/`s3://` prefix (one LIST request, no reads).
    """
    from include.storage.location import BucketURI, is_bucket

    if not is_bucket(version_dir):
        return missing_parts(version_dir)
    from include.storage import objects

    prefix = BucketURI(str(version_dir))
    sizes = {found.uri.relative_to(prefix): found.size for found in objects.listing(prefix)}
    return missing_objects(sizes) if sizes else [f"{prefix} holds no object"]


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


# --- structural checks that need no TensorFlow ------------------------------------------------
#
# variables.index is a LevelDB-style table (TensorFlow's tensor_bundle): a 48-byte footer ending
# in a magic number, an index block pointing at data blocks, and entries mapping each tensor name
# to a BundleEntryProto (shard_id, offset, size); the entry with the empty key is the
# BundleHeaderProto (num_shards). Blocks are written uncompressed; a compressed one is skipped.

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5  # compression type byte + crc32c


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Returns (value, next position) of the varint at `pos`; raises ValueError if truncated."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yields (field number, wire type, value) of a protobuf message; raises ValueError if malformed."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("field runs past the end of the data")
        yield number, wire, value


def saved_model_pb_problem(path: Path) -> str | None:
    """Returns why saved_model.pb is not a well-formed SavedModel proto (None if it is)."""
    try:
        fields = list(_proto_fields(path.read_bytes()))
    except ValueError as err:
        return f"{SAVED_MODEL_PB} is truncated or corrupted ({err})"
    if not any(number == 2 and wire == 2 for number, wire, _ in fields):  # meta_graphs
        return f"{SAVED_MODEL_PB} holds no MetaGraphDef"
    return None


def _table_entries(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yields (key, value) of every entry of a LevelDB-style table; raises ValueError if malformed."""
    if len(data) < _FOOTER_SIZE or int.from_bytes(data[-8:], "little") != _TABLE_MAGIC:
        raise ValueError("bad footer magic (truncated?)")
    footer = data[-_FOOTER_SIZE:]
    _, pos = _varint(footer, 0)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    for _, handle in _block_entries(data, index_offset, index_size):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        yield from _block_entries(data, offset, size)


def _block_entries(data: bytes, offset: int, size: int) -> Iterator[tuple[bytes, bytes]]:
    """Yields the (key, value) entries of one table block."""
    if offset + size + _BLOCK_TRAILER > len(data):
        raise ValueError("block runs past the end of the file")
    if data[offset + size] != 0:
        return  # compressed block: not checked here (TensorFlow writes none)
    block = data[offset : offset + size]
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise ValueError("bad block restart count")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        value = block[pos : pos + value_length]
        pos += value_length
        if pos > end:
            raise ValueError("block entry runs past the block")
        yield key, value


def bundle_shard_extents(index: Path) -> tuple[int, dict[int, int]]:
    """Returns (num_shards, {shard id: bytes its tensors need}) read from a variables.index."""
    num_shards, needed = 1, {}
    for key, value in _table_entries(index.read_bytes()):
        fields = {number: v for number, _, v in _proto_fields(value)}
        if key == b"":
            num_shards = int(fields.get(1, 1))
            continue
        shard, end = int(fields.get(3, 0)), int(fields.get(4, 0)) + int(fields.get(5, 0))
        needed[shard] = max(needed.get(shard, 0), end)
    return num_shards, needed
