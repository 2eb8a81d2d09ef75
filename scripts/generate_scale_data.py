"""Writes N synthetic examples into dated TFRecord partitions of the project's format, fast.

Usage: python scripts/generate_scale_data.py OUT --examples 10000000 [--days 30] [--files-per-day 4]
       [--first-day 2026-10-01] [--seed 0] [--processes N]

Each example has the keys of the digits example: `x` (64 float32), `label` (int64, 0..9) and `id`
(int64, unique: 0..N-1). `x` is a class-dependent mean (values in 0..1, like the digits' pixels)
plus Gaussian noise, so a model learns something and held-out accuracy means something (a
softmax regression reaches about 0.9). The layout is include/train/window.py's:
`OUT/dt=YYYY-MM-DD/part-NNNNN.tfrecord`, the examples spread evenly over days and files.

10 M examples (about 3.3 GB) take a few minutes on 2 cores: no TensorFlow and no protobuf object
per example. The `tf.Example` bytes are encoded by hand from the protobuf wire format, whole files
at a time with NumPy (the bytes are those of `Example.SerializeToString(deterministic=True)`:
keys sorted, packed lists), and so are the TFRecord frames and their masked CRC-32C. The same
seed writes the same bytes, whatever the number of processes. Each file is written to a temporary
name and renamed; `OUT/.generator.json` (ignored by the pipeline, as any dot file) records the
parameters once every file is in place, so a caller can reuse data generated before.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import multiprocessing
import os
import struct
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

WIDTH = 64
NUM_CLASSES = 10
#: Standard deviation of the noise around each class mean (the means lie in 0..1).
NOISE = 0.8
MANIFEST = ".generator.json"
FIRST_DAY = dt.date(2026, 10, 1)

# --- protobuf wire format -----------------------------------------------------------------------
# Example {Features features = 1}; Features {map<string, Feature> feature = 1}; a map entry is
# {string key = 1; Feature value = 2}; Feature {oneof: BytesList = 1, FloatList = 2, Int64List = 3};
# FloatList / Int64List {repeated value = 1 [packed]}.

_LENGTH_DELIMITED = 2
_FLOAT_LIST, _INT64_LIST = 2, 3


def varint(value: int) -> bytes:
    """Returns the protobuf varint of a non-negative integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """Returns a length-delimited field: tag, length, payload."""
    return varint(number << 3 | _LENGTH_DELIMITED) + varint(len(payload)) + payload


def _entry(key: str, kind: int, packed: bytes) -> bytes:
    """Returns one `Features.feature` map entry: {key: Feature{kind: List{packed values}}}."""
    return _field(1, _field(1, key.encode()) + _field(2, _field(kind, _field(1, packed))))


@dataclass(frozen=True)
class Layout:
    """Where the varying bytes sit in every serialized example whose id varint has `id_bytes` bytes.

    Keys are serialized sorted (`id`, `label`, `x`), as deterministic serialization does; the
    label (0..9) is one varint byte and `x` the last WIDTH * 4 bytes.
    """

    template: bytes
    id_offset: int
    id_bytes: int
    label_offset: int
    x_offset: int


def layout(id_bytes: int) -> Layout:
    """Returns the Layout of an example whose id is a varint of `id_bytes` bytes."""
    id_part = _entry("id", _INT64_LIST, b"\0" * id_bytes)
    label_part = _entry("label", _INT64_LIST, b"\0")
    x_part = _entry("x", _FLOAT_LIST, b"\0" * (WIDTH * 4))
    template = _field(1, id_part + label_part + x_part)
    head = len(template) - len(id_part) - len(label_part) - len(x_part)
    return Layout(
        template=template,
        id_offset=head + len(id_part) - id_bytes,
        id_bytes=id_bytes,
        label_offset=head + len(id_part) + len(label_part) - 1,
        x_offset=len(template) - WIDTH * 4,
    )


def varint_size(value: int) -> int:
    """Returns how many bytes the varint of a non-negative integer takes."""
    return max(1, (int(value).bit_length() + 6) // 7)


def encode_examples(ids: np.ndarray, labels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Returns the serialized examples as a [n, length] uint8 array (ids must share a varint size).

    Row i holds the bytes of make_example({"x": x[i], "label": labels[i], "id": ids[i]}).
    """
    size = varint_size(int(ids[0]))
    if varint_size(int(ids[-1])) != size or ids.min() < 0 or labels.min() < 0 or labels.max() > 127:
        raise ValueError("ids must be non-negative and share a varint size; labels must be 0..127")
    shape = layout(size)
    rows = np.empty((len(ids), len(shape.template)), dtype=np.uint8)
    rows[:] = np.frombuffer(shape.template, dtype=np.uint8)
    ids = ids.astype(np.uint64)
    for k in range(size):
        septet = (ids >> np.uint64(7 * k)) & np.uint64(0x7F)
        if k < size - 1:
            septet |= np.uint64(0x80)
        rows[:, shape.id_offset + k] = septet
    rows[:, shape.label_offset] = labels
    rows[:, shape.x_offset :] = np.ascontiguousarray(x, dtype="<f4").view(np.uint8).reshape(len(ids), -1)
    return rows


# --- TFRecord frames and CRC-32C ----------------------------------------------------------------

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
_TABLE = np.zeros(256, dtype=np.uint32)
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE[_i] = _c
_SHIFT_TABLES: dict[int, np.ndarray] = {}


def crc32c(data: bytes) -> int:
    """Returns the CRC-32C of some bytes (plain Python: for short inputs)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = int(_TABLE[(crc ^ byte) & 0xFF]) ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _shift_tables(length: int) -> np.ndarray:
    """Returns T [length, 256]: T[p, v] is the CRC's linear part of byte v at position p of `length`.

    The CRC is affine over GF(2): crc(m) = crc(zeros) ^ XOR_p T[p, m[p]], for messages of a given length.
    """
    if length not in _SHIFT_TABLES:
        tables = np.empty((length, 256), dtype=np.uint32)
        current = _TABLE.copy()  # byte v followed by no byte
        for p in range(length - 1, -1, -1):
            tables[p] = current
            current = _TABLE[current & 0xFF] ^ (current >> np.uint32(8))  # followed by one more zero
        _SHIFT_TABLES[length] = tables
    return _SHIFT_TABLES[length]


def crc32c_rows(rows: np.ndarray) -> np.ndarray:
    """Returns the CRC-32C of each row of a [n, length] uint8 array, vectorised over the rows."""
    n, length = rows.shape
    tables = _shift_tables(length)
    crc = np.full(n, crc32c(bytes(length)), dtype=np.uint32)
    columns = np.ascontiguousarray(rows.T)
    for p in range(length):
        crc ^= tables[p].take(columns[p])
    return crc


def masked(crc):
    """Returns TFRecord's masked CRC (works on ints and uint32 arrays)."""
    if isinstance(crc, np.ndarray):
        rotated = (crc >> np.uint32(15)) | (crc << np.uint32(17))
        return rotated + np.uint32(0xA282EAD8)  # wraps modulo 2**32
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frames(rows: np.ndarray) -> bytes:
    """Returns the TFRecord file bytes of equal-length records (the rows of a uint8 array)."""
    n, length = rows.shape
    header = struct.pack("<Q", length)
    frames = np.empty((n, 8 + 4 + length + 4), dtype=np.uint8)
    frames[:, :8] = np.frombuffer(header, dtype=np.uint8)
    frames[:, 8:12] = np.frombuffer(struct.pack("<I", masked(crc32c(header))), dtype=np.uint8)
    frames[:, 12 : 12 + length] = rows
    frames[:, 12 + length :] = masked(crc32c_rows(rows)).astype("<u4").view(np.uint8).reshape(n, 4)
    return frames.tobytes()


# --- the data set ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to generate: the parameters recorded in OUT/.generator.json."""

    examples: int
    days: int
    files_per_day: int
    first_day: str
    seed: int
    noise: float = NOISE
    width: int = WIDTH
    num_classes: int = NUM_CLASSES
    format: int = 1

    @property
    def files(self) -> int:
        return self.days * self.files_per_day

    def file_path(self, out: Path, index: int) -> Path:
        """Returns the path of file `index` (day-major: the files of day 0 first)."""
        day = dt.date.fromisoformat(self.first_day) + dt.timedelta(days=index // self.files_per_day)
        return out / f"dt={day.isoformat()}" / f"part-{index % self.files_per_day:05d}.tfrecord"

    def id_range(self, index: int) -> tuple[int, int]:
        """Returns the ids [start, stop) of file `index`: N split as evenly as possible."""
        return index * self.examples // self.files, (index + 1) * self.examples // self.files


def class_means(seed: int) -> np.ndarray:
    """Returns the [NUM_CLASSES, WIDTH] class means (uniform in 0..1) of a seed."""
    return np.random.default_rng([seed, 0xC1A55]).random((NUM_CLASSES, WIDTH), dtype=np.float32)


def file_examples(plan: Plan, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (ids, labels, x) of file `index`: the same for the same plan, in any process."""
    start, stop = plan.id_range(index)
    rng = np.random.default_rng([plan.seed, index])
    labels = rng.integers(0, NUM_CLASSES, stop - start, dtype=np.int64)
    x = rng.standard_normal((stop - start, WIDTH), dtype=np.float32)
    x *= np.float32(plan.noise)
    x += class_means(plan.seed)[labels]
    return np.arange(start, stop, dtype=np.int64), labels, x


def file_bytes(plan: Plan, index: int) -> bytes:
    """Returns the TFRecord bytes of file `index` (ids in order, in runs of equal varint size)."""
    ids, labels, x = file_examples(plan, index)
    if not len(ids):
        return b""
    # ids ascend: split where their varint grows a byte (at 2**7, 2**14, ...)
    limits = [1 << (7 * k) for k in range(varint_size(int(ids[0])), varint_size(int(ids[-1])))]
    bounds = [0, *np.searchsorted(ids, limits).tolist(), len(ids)]
    chunks = []
    for a, b in itertools.pairwise(bounds):
        if b > a:
            chunks.append(tfrecord_frames(encode_examples(ids[a:b], labels[a:b], x[a:b])))
    return b"".join(chunks)


def write_file(args: tuple[Plan, str, int]) -> int:
    """Writes file `index` of the plan (temp name, then rename); returns its example count."""
    plan, out, index = args
    path = plan.file_path(Path(out), index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = file_bytes(plan, index)
    with tmp.open("wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    start, stop = plan.id_range(index)
    return stop - start


def read_manifest(out: Path) -> dict | None:
    """Returns the parameters of the data already generated in `out`, None if none (or unfinished)."""
    try:
        return json.loads((Path(out) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def generate(plan: Plan, out: str | os.PathLike[str], processes: int | None = None) -> int:
    """Writes every file of the plan into `out`; returns the number of examples written.

    Data of another plan in `out` is replaced: its manifest is removed first, so an interrupted
    run never looks complete.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    wanted = {plan.file_path(out, i) for i in range(plan.files)}
    for stale in out.glob("dt=*/*"):
        if stale not in wanted and (stale.suffix == ".tfrecord" or ".tmp-" in stale.name):
            stale.unlink()
    for empty in out.glob("dt=*"):
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
    work = [(plan, str(out), i) for i in range(plan.files)]
    processes = processes or len(os.sched_getaffinity(0))
    if processes <= 1:
        written = sum(map(write_file, work))
    else:
        # spawn: safe even when the caller has TensorFlow's threads running
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            written = sum(pool.imap_unordered(write_file, work))
    tmp = out / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(asdict(plan), indent=2, sort_keys=True))
    os.replace(tmp, out / MANIFEST)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (its dt=YYYY-MM-DD partitions are rewritten)")
    parser.add_argument("--examples", type=int, required=True, help="number of examples N")
    parser.add_argument("--days", type=int, default=30, help="number of daily partitions (default 30)")
    parser.add_argument("--files-per-day", type=int, default=1, help="files per partition (default 1)")
    parser.add_argument("--first-day", default=FIRST_DAY.isoformat(), help="date of the first partition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=None, help="default: one per usable core")
    parser.add_argument(
        "--if-missing", action="store_true", help="do nothing when OUT already holds this very data"
    )
    args = parser.parse_args(argv)
    if args.examples < 1 or args.days < 1 or args.files_per_day < 1:
        parser.error("--examples, --days and --files-per-day must be positive")
    dt.date.fromisoformat(args.first_day)
    plan = Plan(args.examples, args.days, args.files_per_day, args.first_day, args.seed)
    if args.if_missing and read_manifest(Path(args.out)) == asdict(plan):
        print(f"{args.out}: already holds these {plan.examples:,} examples")
        return 0
    started = time.perf_counter()
    written = generate(plan, args.out, args.processes)
    seconds = time.perf_counter() - started
    print(
        f"{args.out}: {written:,} examples in {plan.files} files over {plan.days} days "
        f"({seconds:.1f} s, {written / seconds:,.0f} examples/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
