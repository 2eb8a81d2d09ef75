"""Training data: date partitions of TFRecord `tf.Example` files, streamed through `tf.data`.

Layout: `<location>/dt=YYYY-MM-DD/<files>`. A partition dated D holds the examples that arrived
during day D (UTC), so it is complete from D+1 00:00 on: a run whose logical date is D reads the
partitions dated before D (within `window_days`), never the one still being written.

Files are found by content, not by name: every regular file of a partition is data
(`part-00000`, `part-00000.tfrecord.gz`, ...) except hidden files (`.name`: a writer's work in
progress, checksums) and `_`-prefixed markers (`_SUCCESS`, `_committed_*`). Each file's first
bytes say whether it is a plain, GZIP or ZLIB TFRecord file (`compression_of`); anything else
is a DataError naming the file.

Nothing here holds the data set in memory: the input pipeline interleaves the files in parallel,
parses whole batches, keeps the train or the held-out split (a stable hash of each example's id,
computed in the pipeline) and prefetches. When TensorFlow refuses a record, `diagnose` reads the
window again in plain Python to name the file, the record and the feature (DataError).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from include.config import DataConfig, PipelineConfig
from include.errors import DataError, NoDataError
from include.train.features import EXAMPLE_LISTS, label_index, parse_spec

log = logging.getLogger(__name__)

_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
_HASH_BUCKETS = 100
_READ_BUFFER = 1 << 20
#: Records parsed per op in the train input (at least): see input_dataset.
_PARSE_BATCH = 1024
#: Records read from one file before the next file's turn (see input_dataset).
_FILE_BLOCK = 16
#: First characters of the names in a partition that are not data: hidden files (a writer's
#: `.part-00000.tmp`, Hadoop's `.crc`) and markers (`_SUCCESS`, Spark's `_committed_*`).
_NOT_DATA = (".", "_")
#: Bytes of a file's start that tell how it is compressed (a record header, or a GZIP/ZLIB
#: header and the first bytes of a deflate stream).
_SNIFF_BYTES = 4096
#: zlib's `wbits` of TensorFlow's two TFRecord compressions.
_WBITS = {"GZIP": 16 + zlib.MAX_WBITS, "ZLIB": zlib.MAX_WBITS}
#: A TFRecord frame: length (8 bytes), its masked CRC-32C (4), the data, the data's CRC (4).
_HEADER = 12
_FRAME_EXTRA = 16
_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class DataWindow:
    """The partition files a run reads, what was skipped beside them, and a digest of their bytes."""

    partitions: tuple[str, ...]
    files: tuple[str, ...]
    skipped: tuple[str, ...]
    fingerprint: str
    bytes: int
    records: int
    compressed: tuple[tuple[str, int], ...] = ()  # (GZIP or ZLIB, how many files)

    def summary(self) -> dict:
        """Returns the small JSON-able description recorded in XCom and lineage."""
        return {
            "partitions": list(self.partitions),
            "first_partition": self.partitions[0],
            "last_partition": self.partitions[-1],
            "files": len(self.files),
            "bytes": self.bytes,
            "records": self.records,
            "skipped": list(self.skipped),
            "fingerprint": self.fingerprint,
            "compressed_files": dict(self.compressed),
        }


def partitions_as_of(config: DataConfig, as_of: dt.date) -> tuple[list[Path], list[str]]:
    """Returns the partition dirs visible to a run dated `as_of` (oldest first) and the skipped entries.

    An entry that is not a `dt=YYYY-MM-DD` directory with a real date (a stray file, `dt=2026-13-45`,
    `_SUCCESS`), or a link to a place outside the data location, is skipped, never fatal: it is
    named once in the log and in the lineage. Hidden entries (`.tmp` files of writers) are ignored.
    """
    root = Path(config.location)
    if not root.is_dir():
        raise NoDataError(f"data location {root} does not exist")
    first = as_of - dt.timedelta(days=config.window_days) if config.window_days else dt.date.min
    chosen, skipped = [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        day = _partition_day(entry)
        if day is None:
            skipped.append(entry.name)
        elif not _inside(entry, root):
            skipped.append(f"{entry.name} (outside the data location)")
        elif first <= day < as_of:
            chosen.append(entry)
    return chosen, skipped


def _inside(path: Path, root: Path) -> bool:
    """Returns whether `path`, links resolved, lies under `root` (links resolved)."""
    return path.resolve().is_relative_to(root.resolve())


def _partition_day(entry: Path) -> dt.date | None:
    """Returns the date of a partition directory, None for anything else."""
    match = _PARTITION.match(entry.name)
    if not match or not entry.is_dir():
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None


def data_window(config: DataConfig, as_of: dt.date) -> DataWindow:
    """Returns the files a run dated `as_of` reads, with the SHA-256 of their names and bytes.

    Every file is read once, here: its bytes digested, decompressed if it is GZIP or ZLIB, its
    records counted by their length headers (a file cut short is a DataError: TensorFlow's reader
    would stop there silently). `files` and `records` are what was read. A partition without data
    files is listed as skipped; a window without any is NoDataError. Memory stays flat.
    """
    partitions, skipped = partitions_as_of(config, as_of)
    window = f"the last {config.window_days} days" if config.window_days else "all days"
    if not partitions:
        raise NoDataError(
            f"no data partitions in {config.location} before {as_of.isoformat()} ({window}); "
            "nothing to train on for this date"
        )
    digest, files, size, records = hashlib.sha256(), [], 0, 0
    compressed: dict[str, int] = {}
    buffer = bytearray(_READ_BUFFER)
    root = Path(config.location)
    for partition in partitions:
        partition_files = _data_files(partition, root, skipped)
        for file in partition_files:
            digest.update(f"{partition.name}/{file.name}\0".encode())
            try:
                compression, file_size, file_records = _read_file(file, digest, buffer)
            except OSError as err:
                raise DataError(str(file), f"cannot read the file: {err.strerror or err}") from None
            size, records = size + file_size, records + file_records
            if compression:
                compressed[compression] = compressed.get(compression, 0) + 1
            files.append(str(file))
    if skipped:
        log.warning(
            "skipped %d entries of %s (not read, listed in the lineage): %s", len(skipped), root, skipped
        )
    if not files:
        raise NoDataError(f"partitions {[p.name for p in partitions]} hold no data files ({window})")
    return DataWindow(
        partitions=tuple(p.name for p in partitions),
        files=tuple(files),
        skipped=tuple(skipped),
        fingerprint=digest.hexdigest(),
        bytes=size,
        records=records,
        compressed=tuple(sorted(compressed.items())),
    )


def _data_files(partition: Path, root: Path, skipped: list[str]) -> list[Path]:
    """Returns the data files of a partition, sorted; appends what is not read to `skipped`.

    Data is every regular file whose name starts with neither `.` nor `_`. A directory, a FIFO or a
    link out of the data location is listed in `skipped`; hidden files and markers are not (they
    sit beside data normally), unless the partition holds nothing else.
    """
    chosen, markers = [], []
    entries = sorted(partition.iterdir())
    for entry in entries:
        if entry.name.startswith(_NOT_DATA):
            markers.append(entry.name)
        elif not entry.is_file():
            what = "a directory" if entry.is_dir() else "not a regular file"
            skipped.append(f"{partition.name}/{entry.name} ({what}, not read)")
        elif not _inside(entry, root):
            skipped.append(f"{partition.name}/{entry.name} (outside the data location)")
        else:
            chosen.append(entry)
    if not entries:
        skipped.append(f"{partition.name} (empty)")
    elif not chosen and markers and len(markers) == len(entries):
        shown = ", ".join(markers[:3]) + (", ..." if len(markers) > 3 else "")
        skipped.append(f"{partition.name} (no data files, only {shown})")
    return chosen


def _read_file(file: Path, digest, buffer: bytearray) -> tuple[str, int, int]:
    """Returns (compression, size, records) of one data file, read once, its bytes fed to `digest`."""
    view = memoryview(buffer)
    name = str(file)
    with file.open("rb") as handle:
        count = handle.readinto(buffer)
        compression = compression_of(bytes(view[: min(count, _SNIFF_BYTES)]), name)
        walk = _RecordWalk(name, compression)
        inflate = _Inflater(name, compression, walk) if compression else None
        size = 0
        while count:
            chunk = view[:count]
            digest.update(chunk)
            size += count
            if inflate:
                inflate.feed(chunk)
            else:
                walk.feed(chunk)
            count = handle.readinto(buffer)
    if inflate:
        inflate.finish()
    return compression, size, walk.finish()


def _crc32c_table() -> tuple[int, ...]:
    """Returns the byte table of CRC-32C (Castagnoli, reflected polynomial 0x82F63B78)."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    """Returns the masked CRC-32C a TFRecord frame stores after its length (short inputs only)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _is_record_header(header: bytes) -> bool:
    """Returns whether the first 12 bytes are a TFRecord length and its matching checksum."""
    return len(header) >= _HEADER and struct.unpack_from("<I", header, 8)[0] == _masked_crc32c(header[:8])


def _looks_like(compression: str, head: bytes) -> bool:
    """Returns whether `head` starts with a GZIP magic number (1f 8b) or a valid ZLIB header."""
    if compression == "GZIP":
        return head[:2] == b"\x1f\x8b"
    cmf, flg = head[0], head[1]  # RFC 1950: deflate, window <= 32K, check bits, no preset dictionary
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0 and not flg & 0x20


def compression_of(head: bytes, name: str) -> str:
    """Returns how a TFRecord file that starts with `head` is compressed: "", "GZIP" or "ZLIB".

    Decided by content: a plain file starts with a record header whose checksum holds; a GZIP or
    ZLIB one with its header, and decompresses to a record header. A file shorter than a header
    counts as plain (empty, or cut short: the record walk says which). Anything else is a DataError
    naming the file; so is a compressed file of something other than TFRecords.
    """
    if len(head) < _HEADER or _is_record_header(head):
        return ""
    for compression in ("GZIP", "ZLIB"):
        if not _looks_like(compression, head):
            continue
        try:
            first = zlib.decompressobj(_WBITS[compression]).decompress(head, _HEADER)
        except zlib.error as err:
            raise DataError(
                name,
                f"not a TFRecord file: it starts like {compression} data ({head[:2].hex(' ')}) but "
                f"does not decompress ({err})",
            ) from None
        if len(first) < _HEADER or _is_record_header(first):
            return compression
        raise DataError(
            name,
            f"a {compression} file, but not of TFRecords: it decompresses to {first[:8].hex(' ')} ..., "
            "not a record header",
        )
    raise DataError(
        name,
        f"not a TFRecord file: it starts with {head[:8].hex(' ')}, neither a TFRecord header nor "
        "GZIP or ZLIB data",
    )


def file_compressions(files: Iterable[str]) -> list[str]:
    """Returns each file's compression ("" for one that cannot be opened now: TensorFlow names that)."""
    found = []
    for file in files:
        try:
            with open(file, "rb") as handle:
                head = handle.read(_SNIFF_BYTES)
        except OSError:
            head = b""
        found.append(compression_of(head, str(file)))
    return found


class _RecordWalk:
    """Counts the records of a TFRecord stream fed in chunks by walking its length headers.

    TensorFlow's reader treats a stream cut short inside its last record as ending early, without
    an error: a file cut mid-write would silently lose examples. `finish` raises DataError for that,
    or for a length header whose checksum fails (TensorFlow checks the data's CRCs as it reads).
    """

    def __init__(self, name: str, compression: str) -> None:
        self.name, self.compression = name, compression
        self.records = 0  # headers seen
        self.size = 0  # bytes of the (decompressed) stream fed so far
        self._next = 0  # where the next header starts in the stream
        self._partial = b""  # the start of a header cut by the end of a chunk
        self._last = b""  # the header of the last record started

    @property
    def complete(self) -> int:
        """Returns how many records were fed whole so far."""
        return self.records - (1 if self._next > self.size else 0)

    def feed(self, chunk) -> None:
        """Walks the headers of the next bytes of the stream (a buffer; not kept)."""
        start = self.size
        end = self.size = start + len(chunk)
        if self._partial:  # a header split between two chunks (its start is at self._next)
            header = self._partial + bytes(chunk[: _HEADER - len(self._partial)])
            if len(header) < _HEADER:
                self._partial = header
                return
            self._partial, self._last = b"", header
            self._next += _FRAME_EXTRA + _LENGTH.unpack_from(header)[0]
            self.records += 1
        last = -1
        while self._next + _HEADER <= end:
            last = self._next - start
            self._next += _FRAME_EXTRA + _LENGTH.unpack_from(chunk, last)[0]
            self.records += 1
        if last >= 0:
            self._last = bytes(chunk[last : last + _HEADER])
        if start <= self._next < end:
            self._partial = bytes(chunk[self._next - start :])

    def finish(self) -> int:
        """Returns the number of records; raises DataError if the stream ends inside one."""
        of = f"{self.compression} " if self.compression else ""
        ends = "the decompressed data" if self.compression else "the file"
        if self._partial:
            raise DataError(
                self.name,
                f"truncated {of}TFRecord file: the header of record {self.records} is cut short",
                self.records,
            )
        if self._next > self.size:
            index = self.records - 1
            if not _is_record_header(self._last):
                raise DataError(
                    self.name,
                    f"corrupted {of}TFRecord file: the length header of record {index} fails its checksum",
                    index,
                )
            raise DataError(
                self.name,
                f"truncated {of}TFRecord file: record {index} ends at byte {self._next}, "
                f"{ends} at {self.size}",
                index,
            )
        return self.records


class _Inflater:
    """Decompresses a GZIP or ZLIB stream fed in chunks into a _RecordWalk, 1 MiB at a time.

    GZIP members written one after the other are read one after the other, as TensorFlow does;
    after a ZLIB stream TensorFlow reads nothing, so bytes there are refused, not ignored.
    """

    def __init__(self, name: str, compression: str, walk: _RecordWalk) -> None:
        self.name, self.compression, self.walk = name, compression, walk
        self._stream = zlib.decompressobj(_WBITS[compression])
        self._fed = False  # whether the current stream got any input

    def feed(self, chunk) -> None:
        """Decompresses the next bytes of the file (bounded output: a small file may inflate a lot)."""
        data = chunk
        while data:
            self._fed = True
            try:
                out = self._stream.decompress(data, _READ_BUFFER)
            except zlib.error as err:
                raise DataError(
                    self.name,
                    f"corrupted {self.compression} file: {err} (after {self.walk.complete} whole records)",
                    self.walk.complete,
                ) from None
            self.walk.feed(out)
            if not self._stream.eof:
                data = self._stream.unconsumed_tail
                continue
            data = self._stream.unused_data
            if data and self.compression == "ZLIB":
                raise DataError(
                    self.name,
                    f"{len(data)} bytes after the end of its ZLIB stream, which TensorFlow would not read",
                )
            self._stream, self._fed = zlib.decompressobj(_WBITS[self.compression]), False

    def finish(self) -> None:
        """Raises DataError if the compressed stream was cut short."""
        if self._fed and not self._stream.eof:
            raise DataError(
                self.name,
                f"truncated {self.compression} file: the compressed data ends early, after "
                f"{self.walk.complete} whole records (TensorFlow would stop there without an error)",
                self.walk.complete,
            )


def held_out(ids, eval_percent: int):
    """Returns which example ids belong to the held-out split: stable across runs, dates and machines.

    A FarmHash fingerprint of the id's text, in 100 buckets; works on tensors and on arrays.
    """
    import tensorflow as tf

    text = ids if tf.as_dtype(ids.dtype) == tf.string else tf.strings.as_string(ids)
    return tf.strings.to_hash_bucket_fast(text, _HASH_BUCKETS) < eval_percent


def input_dataset(
    config: PipelineConfig,
    files: tuple[str, ...] | list[str],
    split: str,
    *,
    batch_size: int,
    epochs: int | None = 1,
    count: bool = False,
):
    """Returns a tf.data pipeline of (features, label) batches of one split of `files`.

    `epochs=None` repeats forever (training by steps). The train split shuffles files and
    examples (seeded); `training.deterministic` fixes the order of parallel reads. Every batch
    is checked: labels in range, float values finite (InvalidArgumentError, see `diagnose`).
    With `count`, each element also carries how many examples of both splits its batch parsed.
    """
    import tensorflow as tf

    training = config.training
    train = split == "train"
    autotune = tf.data.AUTOTUNE
    # Each file with its compression, found once per file here (not per record).
    names = tf.data.Dataset.from_tensor_slices((list(files), file_compressions(files)))
    if train:
        names = names.shuffle(len(files), seed=training.seed, reshuffle_each_iteration=True)
    # Up to 8 files read at once, 16 records of each in turn. The 16 are grouped inside each file's
    # reader, which the parallel interleave runs on its own thread: the stages after it handle
    # blocks, not records (the same order as 16-record blocks of records; 1.6-1.8x faster on 2
    # cores, docs/performance.md).
    blocks = names.interleave(
        lambda name, compression: tf.data.TFRecordDataset(
            name, compression_type=compression, buffer_size=_READ_BUFFER
        ).batch(_FILE_BLOCK),
        cycle_length=min(len(files), 8),
        block_length=1,
        num_parallel_calls=autotune,
        deterministic=training.deterministic,
    )
    # Parse whole batches (one op per batch, not per example); a little larger than a batch, since
    # the other split is dropped after the parse. The train split parses batches of at least
    # _PARSE_BATCH records: every per-element stage of tf.data runs on one thread, so the train
    # input shuffles whole parsed batches and then the examples within each, not records.
    parse_batch = max(1, batch_size * 100 // (100 - config.data.eval_percent))
    if train:
        parse_batch = max(parse_batch, _PARSE_BATCH)
    checked_parse = _checked_parser(config)

    def parse(serialized):
        features, label, ids = checked_parse(serialized)
        keep = held_out(ids, config.data.eval_percent)
        keep = keep if not train else tf.logical_not(keep)
        features = {name: tf.boolean_mask(value, keep) for name, value in features.items()}
        label = tf.boolean_mask(label, keep)
        if count:
            return features, label, tf.size(keep)
        return features, label

    batches = blocks.rebatch(parse_batch).map(
        parse, num_parallel_calls=autotune, deterministic=training.deterministic
    )
    if count:  # the held-out pass sums over batches of any size
        batches = batches.repeat(epochs)
    else:
        if train:
            buffer = -(-training.shuffle_buffer // parse_batch)  # about shuffle_buffer examples
            batches = batches.shuffle(buffer, seed=training.seed, reshuffle_each_iteration=True)
        # Repeat the parsed split, not the records: a split without any example then ends the input
        # (tf.data stops repeating a pass that yields nothing) instead of yielding empty batches forever.
        batches = batches.filter(lambda _, label: tf.size(label) > 0).repeat(epochs)
        if train:
            batches = batches.enumerate().map(
                _permuted(training.seed), num_parallel_calls=autotune, deterministic=training.deterministic
            )
        batches = batches.rebatch(batch_size)
    batches = batches.prefetch(autotune)
    options = tf.data.Options()
    options.deterministic = training.deterministic
    return batches.with_options(options)


def _permuted(seed: int):
    """Returns a function shuffling the examples of the `index`-th parsed batch, (index, batch) -> batch.

    Stateless, seeded by (seed, index): the same order on every rerun, however many threads map
    it; a new order each epoch, since the index runs on across epochs.
    """
    import tensorflow as tf

    def permute(index, batch):
        features, label = batch
        keys = tf.random.stateless_uniform(
            tf.shape(label)[:1], seed=tf.stack([tf.constant(seed, tf.int64), index])
        )
        order = tf.argsort(keys)
        return {name: tf.gather(value, order) for name, value in features.items()}, tf.gather(label, order)

    return permute


def _checked_parser(config: PipelineConfig):
    """Returns a function parsing a batch of serialized examples into (features, label, ids), checked.

    The label must be in range (or a known class name) and float values finite; otherwise the
    batch fails with InvalidArgumentError, as it does for a missing feature or a wrong width.
    """
    import tensorflow as tf

    spec = parse_spec(config, with_label=True, with_id=True)
    floats = [name for name, feature in config.features.items() if feature.dtype == "float32"]

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        label = _checked_label(parsed[config.label.key], config)
        with tf.control_dependencies([_finite(parsed[name], name) for name in floats]):
            features = {name: tf.identity(parsed[name]) for name in config.features}
        return features, label, parsed[config.data.id_key]

    return parse


def _checked_label(label, config: PipelineConfig):
    """Returns the label tensor of a batch (class indices or floats), asserting each is valid."""
    import tensorflow as tf

    if config.label.type == "float":
        with tf.control_dependencies([_finite(label, config.label.key)]):
            return tf.identity(label)
    index = label_index(label, config)
    num_classes = config.model.num_classes
    valid = tf.reduce_all((index >= 0) & (index < num_classes))
    message = f"label {config.label.key!r} outside 0..{num_classes - 1} (or not in model.class_names)"
    with tf.control_dependencies([tf.debugging.Assert(valid, [message])]):
        return tf.identity(index)


def _finite(values, name: str):
    """Returns an assertion that a float tensor holds no NaN or infinity."""
    import tensorflow as tf

    return tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(values)), [f"feature {name!r} is NaN or infinite"]
    )


def held_out_sample(config: PipelineConfig, files: tuple[str, ...] | list[str], size: int) -> list[bytes]:
    """Returns the first `size` held-out examples of `files` (serialized), in file order."""
    import tensorflow as tf

    sample: list[bytes] = []
    id_spec = {config.data.id_key: tf.io.FixedLenFeature([], tf.as_dtype(config.data.id_dtype))}
    for batch in _records_in_order(files).batch(1024):
        ids = tf.io.parse_example(batch, id_spec)[config.data.id_key]
        chosen = batch.numpy()[held_out(ids, config.data.eval_percent).numpy()]
        sample.extend(chosen[: size - len(sample)].tolist())
        if len(sample) >= size:
            break
    return sample


def _records_in_order(files: tuple[str, ...] | list[str]):
    """Returns a tf.data pipeline of the records of `files`, file after file, each read as compressed."""
    import tensorflow as tf

    names = tf.data.Dataset.from_tensor_slices((list(files), file_compressions(files)))
    return names.flat_map(lambda name, kind: tf.data.TFRecordDataset(name, compression_type=kind))


def write_sample(path: Path, examples: list[bytes]) -> None:
    """Writes serialized examples as JSON (base64), readable without TensorFlow."""
    path.write_text(json.dumps([base64.b64encode(e).decode() for e in examples]))


def read_sample(path: Path) -> list[bytes]:
    """Returns the serialized examples `write_sample` wrote."""
    return [base64.b64decode(e) for e in json.loads(Path(path).read_text())]


def diagnose(config: PipelineConfig, files: tuple[str, ...] | list[str]) -> None:
    """Raises DataError for the first record of `files` the declared features and label cannot read.

    Runs after the streaming input refused a batch: each file is parsed again on its own, fast,
    and the first one that fails is read record by record in plain Python, so the message names
    the file, the record index and the feature.
    """
    for file in files:
        if _parses(config, file):
            continue
        for index, record in _records(file):
            problem = example_problem(record, config)
            if problem:
                raise DataError(file, problem, index)


def _parses(config: PipelineConfig, file: str) -> bool:
    """Returns whether every record of one file parses and passes the checks of the input pipeline."""
    import tensorflow as tf

    checked_parse = _checked_parser(config)
    try:
        for _ in _records_in_order([file]).batch(4096).map(checked_parse):
            pass
    except (tf.errors.OpError, UnicodeDecodeError):  # the latter: a non-UTF-8 record quoted in the error
        return False
    return True


def _records(file: str) -> Iterator[tuple[int, bytes]]:
    """Yields (index, bytes) of each record of a TFRecord file; a damaged file is a DataError."""
    import tensorflow as tf

    index = 0
    iterator = iter(_records_in_order([file]))
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            raise DataError(
                file, f"not a readable TFRecord file (truncated or corrupted): {err.message}", index
            ) from None
        except (tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as err:
            raise DataError(file, f"cannot read the file: {err.message}") from None
        yield index, record.numpy()
        index += 1


def example_problem(record: bytes, config: PipelineConfig) -> str | None:
    """Returns what makes one serialized record unreadable as a training example, None if nothing."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    try:
        features = example_pb2.Example.FromString(record).features.feature
    except DecodeError:
        return "not a tf.Example protocol buffer"
    expected = {name: (f.dtype, f.width, f.default is not None) for name, f in config.features.items()}
    label_dtype = {"class_index": "int64", "class_name": "string", "float": "float32"}[config.label.type]
    expected[config.label.key] = (label_dtype, 1, False)
    expected[config.data.id_key] = (config.data.id_dtype, 1, False)
    for name, (dtype, width, optional) in expected.items():
        if name not in features:
            if not optional:
                return f"feature {name!r} is missing (expected {width} {dtype} value(s))"
            continue
        kind = features[name].WhichOneof("kind")
        values = list(getattr(features[name], kind).value) if kind else []
        if kind != EXAMPLE_LISTS[dtype]:
            return f"feature {name!r} holds {kind or 'no list'}, expected {dtype} ({EXAMPLE_LISTS[dtype]})"
        if len(values) != width:
            return f"feature {name!r} holds {len(values)} values, expected {width}"
        if dtype == "float32" and not np.isfinite(values).all():
            return f"feature {name!r} holds NaN or infinite values"
    return _label_problem(features[config.label.key], config)


def _label_problem(feature, config: PipelineConfig) -> str | None:
    """Returns what is wrong with one example's label value, None if nothing."""
    key = config.label.key
    if config.label.type == "class_index":
        value = feature.int64_list.value[0]
        if not 0 <= value < config.model.num_classes:
            return f"label {key!r} is {value}, expected a class index in 0..{config.model.num_classes - 1}"
    elif config.label.type == "class_name":
        value = feature.bytes_list.value[0].decode("utf-8", "replace")
        if value not in (config.model.class_names or ()):
            return f"label {key!r} is {value!r}, expected one of model.class_names"
    return None
