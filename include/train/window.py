"""The data window of a run: the partition files dated before it, found by content, read once.

Layout: `<location>/dt=YYYY-MM-DD/<files>`. A partition dated D holds the examples that arrived
during day D (UTC), so it is complete from D+1 00:00 on: a run whose logical date is D reads the
partitions dated before D (within `window_days`), never the one still being written.

Files are found by content, not by name: every regular file of a partition is data
(`part-00000`, `part-00000.tfrecord.gz`, ...) except hidden files (`.name`: a writer's work in
progress, checksums) and `_`-prefixed markers (`_SUCCESS`, `_committed_*`). Each file's first
bytes say whether it is a plain, GZIP or ZLIB TFRecord file (`compression_of`); anything else
is a DataError naming the file. Each file is read once, in chunks: digested for the window's
fingerprint and its records counted by their length headers (a file cut short is named).

A location in a bucket (`gs://bucket/prefix`, `s3://bucket/prefix`) follows the same rules, read
from object listings instead: no byte of data is read to list the window but the first 4096 of
each object (a ranged read: its compression). There, the fingerprint digests each object's
relative name, size and checksum (GCS md5Hash, S3's single-part ETag; the version token, GCS
generation or multipart ETag, where the store gives no MD5), and `records` is counted while the
records are read (`stream_records`, the training input): None until a pass has read every file
of the window whole. Training's held-out pass reads them all before the counts are compared, and
a file cut short or changed since it was listed is a DataError there (see `stream_records`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from include.config import DataConfig
from include.errors import DataError, NoDataError
from include.storage.location import BucketURI, is_bucket

log = logging.getLogger(__name__)

_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
READ_BUFFER = 1 << 20
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
_CRC = struct.Struct("<I")
#: Bytes of one ranged GET of `stream_records` (a 1 MiB request costs a round trip per MiB; the
#: readahead buffer holds about two of these per object being read).
STREAM_REQUEST = 4 << 20
#: Records (at most) and bytes of records (about) in one batch `stream_records` yields.
STREAM_BATCH = 1024
_STREAM_BATCH_BYTES = 4 << 20
#: Compressed bytes inflated at a time by `stream_records`: what one step can add to memory is
#: at most this times deflate's largest ratio (1032:1), about 16 MiB, whatever the file.
_INFLATE_SLICE = 16 << 10

#: Bucket objects as the latest window listed them: URI -> version token (checked when read).
_LISTED: dict[str, str] = {}
#: Records of bucket objects read whole and checked: (URI, version token) -> records.
_COUNTED: dict[tuple[str, str], int] = {}


@dataclass(frozen=True)
class DataWindow:
    """The partition files a run reads, what was skipped beside them, and a digest of their bytes.

    In a bucket: `files` are URIs, `tokens` each one's version as listed, and the fingerprint a
    digest of object metadata (see the module's docstring); `records` is None until the records
    of every file were read once in this process (`stream_records` counts them).
    """

    partitions: tuple[str, ...]
    files: tuple[str, ...]
    skipped: tuple[str, ...]
    fingerprint: str
    bytes: int
    listed_records: int | None  # counted while listing (local); None in a bucket
    compressed: tuple[tuple[str, int], ...] = ()  # (GZIP or ZLIB, how many files)
    tokens: tuple[str, ...] = ()  # bucket objects: each file's version token (GCS generation, S3 ETag)
    #: One digest per partition, of what the window's digest took from it (lineage names each input).
    partition_fingerprints: tuple[str, ...] = ()

    @property
    def records(self) -> int | None:
        """Returns the records of the window's files; in a bucket, None until each file was read whole."""
        if self.listed_records is not None or not self.tokens:
            return self.listed_records
        counts = [_COUNTED.get((file, token)) for file, token in zip(self.files, self.tokens, strict=True)]
        return None if None in counts else sum(counts)

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
            "partition_fingerprints": dict(zip(self.partitions, self.partition_fingerprints, strict=False)),
            "compressed_files": dict(self.compressed),
        }


def partitions_as_of(config: DataConfig, as_of: dt.date) -> tuple[list[Path], list[str]]:
    """Returns the partition dirs visible to a run dated `as_of` (oldest first) and the skipped entries.

    An entry that is not a `dt=YYYY-MM-DD` directory with a real date (a stray file, `dt=2026-13-45`,
    `_SUCCESS`), or a link to a place outside the data location, is skipped, never fatal: it is
    named once in the log and in the lineage. Hidden entries (`.tmp` files of writers) are ignored.
    In a bucket, from one listing of the location (no links there); an object named like a
    partition is skipped, as a file is.
    """
    if is_bucket(config.location):
        return _bucket_partitions(BucketURI(str(config.location)), config, as_of)
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
    if is_bucket(config.location):
        return _bucket_window(BucketURI(str(config.location)), partitions, skipped, window)
    digest, files, size, records = hashlib.sha256(), [], 0, 0
    compressed: dict[str, int] = {}
    buffer = bytearray(READ_BUFFER)
    root = Path(config.location)
    by_partition = []
    for partition in partitions:
        partition_files = _data_files(partition, root, skipped)
        both = _Digests(digest, hashlib.sha256())
        for file in partition_files:
            both.update(f"{partition.name}/{file.name}\0".encode())
            try:
                compression, file_size, file_records = _read_file(file, both, buffer)
            except OSError as err:
                raise DataError(str(file), f"cannot read the file: {err.strerror or err}") from None
            size, records = size + file_size, records + file_records
            if compression:
                compressed[compression] = compressed.get(compression, 0) + 1
            files.append(str(file))
        by_partition.append(both.partition_fingerprint())
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
        listed_records=records,
        compressed=tuple(sorted(compressed.items())),
        partition_fingerprints=tuple(by_partition),
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
    """Returns each file's compression ("" for one that cannot be opened now: TensorFlow names that).

    A bucket object's is read from its first 4096 bytes (one ranged read).
    """
    found = []
    for file in files:
        try:
            if is_bucket(file):
                from include.storage.objects import read_range

                head = read_range(BucketURI(file), 0, _SNIFF_BYTES)
            else:
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
                out = self._stream.decompress(data, READ_BUFFER)
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


# --- a location in a bucket: listed from object metadata, its records streamed ------------------


def _bucket_partitions(
    root: BucketURI, config: DataConfig, as_of: dt.date
) -> tuple[list[BucketURI], list[str]]:
    """Returns `partitions_as_of` for a location in a bucket: one listing of its first level."""
    from include.storage.objects import entries

    first = as_of - dt.timedelta(days=config.window_days) if config.window_days else dt.date.min
    chosen, skipped = [], []
    for name, is_prefix in entries(root).items():
        if name.startswith("."):
            continue
        day = _day_of(name) if is_prefix else None
        if day is None:
            skipped.append(name)
        elif first <= day < as_of:
            chosen.append(root / name)
    return chosen, skipped


def _day_of(name: str) -> dt.date | None:
    """Returns the date a `dt=YYYY-MM-DD` name holds, None for any other name or no real date."""
    match = _PARTITION.match(name)
    try:
        return dt.date.fromisoformat(match.group(1)) if match else None
    except ValueError:
        return None


def _bucket_window(
    root: BucketURI, partitions: list[BucketURI], skipped: list[str], window: str
) -> DataWindow:
    """Returns `data_window` of a location in a bucket: object listings, a ranged read per file."""
    from include.storage.objects import listing, read_range

    digest, files, tokens, size = hashlib.sha256(), [], [], 0
    compressed: dict[str, int] = {}
    by_partition = []
    for partition in partitions:
        both = _Digests(digest, hashlib.sha256())
        for found in _bucket_files(partition, listing(partition), skipped):
            name = f"{partition.name}/{found.uri.name}"
            checksum = f"md5 {found.md5}" if found.md5 else f"token {found.token}"
            both.update(f"{name}\0{found.size}\0{checksum}\0".encode())
            head = read_range(found.uri, 0, min(found.size, _SNIFF_BYTES)) if found.size else b""
            compression = compression_of(head, str(found.uri))
            if compression:
                compressed[compression] = compressed.get(compression, 0) + 1
            files.append(str(found.uri))
            tokens.append(found.token)
            size += found.size
        by_partition.append(both.partition_fingerprint())
    if skipped:
        log.warning(
            "skipped %d entries of %s (not read, listed in the lineage): %s", len(skipped), root, skipped
        )
    if not files:
        raise NoDataError(f"partitions {[p.name for p in partitions]} hold no data files ({window})")
    _LISTED.update(zip(files, tokens, strict=True))
    return DataWindow(
        partitions=tuple(p.name for p in partitions),
        files=tuple(files),
        skipped=tuple(skipped),
        fingerprint=digest.hexdigest(),
        bytes=size,
        listed_records=None,
        compressed=tuple(sorted(compressed.items())),
        tokens=tuple(tokens),
        partition_fingerprints=tuple(by_partition),
    )


class _Digests:
    """Feeds the same bytes to the window's digest and to one partition's."""

    def __init__(self, window, partition) -> None:
        self.window, self.partition = window, partition

    def update(self, data) -> None:
        """Adds `data` to both digests."""
        self.window.update(data)
        self.partition.update(data)

    def partition_fingerprint(self) -> str:
        """Returns the partition's digest (hex)."""
        return self.partition.hexdigest()


def _bucket_files(partition: BucketURI, found: list, skipped: list[str]) -> list:
    """Returns the data objects of a partition (its listing, sorted), appending what is not read to `skipped`.

    `_data_files`'s rules: hidden objects and markers are not data; a "directory" (objects below a
    further `/`) is skipped and named once.
    """
    chosen, markers, dirs = [], [], []
    for stat in found:
        name, _, below = stat.uri.relative_to(partition).partition("/")
        if name.startswith(_NOT_DATA):
            markers.append(name)
        elif below:
            if name not in dirs:
                dirs.append(name)
                skipped.append(f"{partition.name}/{name} (a directory, not read)")
        else:
            chosen.append(stat)
    if not chosen and markers and not dirs:
        shown = ", ".join(markers[:3]) + (", ..." if len(markers) > 3 else "")
        skipped.append(f"{partition.name} (no data files, only {shown})")
    return chosen


try:  # google-crc32c (a dependency of gcsfs): CRC-32C in C, hardware-accelerated where the CPU has it
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover - installed with gcsfs
    _crc32c = None


def _masked(crc: int) -> int:
    """Returns a CRC-32C masked as TFRecord frames store it."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class _RecordSplit(_RecordWalk):
    """A _RecordWalk that also cuts each record's data out of the stream, checked as TensorFlow checks it.

    Each length header's CRC is checked as soon as its 12 bytes arrive (a damaged length never
    makes it wait for data that is not there), each record's data against its CRC once whole.
    Only the bytes of the record being cut are held. `finish` names a stream cut short as
    _RecordWalk does. Without google-crc32c, only the length headers are checked.
    """

    def __init__(self, name: str, compression: str) -> None:
        super().__init__(name, compression)
        self.out: list[bytes] = []  # records cut, not yet taken
        self.out_bytes = 0
        self._pending = bytearray()  # the stream from the first byte of the next record on
        self._checked = -1  # stream offset of the last header whose checksum held

    @property
    def complete(self) -> int:
        return self.records

    def feed(self, chunk) -> None:
        pending = self._pending
        pending += chunk
        self.size += len(chunk)
        base, end, at = self.size - len(pending), len(pending), 0
        while end - at >= _HEADER:
            if base + at != self._checked:
                header = bytes(pending[at : at + _HEADER])
                if not _header_holds(header):
                    of = f"{self.compression} " if self.compression else ""
                    raise DataError(
                        self.name,
                        f"corrupted {of}TFRecord file: the length header of record {self.records} "
                        "fails its checksum",
                        self.records,
                    )
                self._checked = base + at
            stop = at + _FRAME_EXTRA + _LENGTH.unpack_from(pending, at)[0]
            if stop > end:
                break
            data = bytes(pending[at + _HEADER : stop - 4])
            if _crc32c is not None and _masked(_crc32c(data)) != _CRC.unpack_from(pending, stop - 4)[0]:
                of = f"{self.compression} " if self.compression else ""
                raise DataError(
                    self.name,
                    f"corrupted {of}TFRecord file: the data of record {self.records} fails its checksum",
                    self.records,
                )
            self.out.append(data)
            self.out_bytes += len(data)
            self.records += 1
            at = stop
        if at:
            del pending[:at]

    def take(self) -> list[bytes]:
        """Returns the records cut so far and forgets them."""
        out, self.out, self.out_bytes = self.out, [], 0
        return out

    def finish(self) -> int:
        rest = self._pending
        if len(rest) >= _HEADER:  # a record whose data is cut short: _RecordWalk's state for it
            self._last = bytes(rest[:_HEADER])
            self._next = self.size - len(rest) + _FRAME_EXTRA + _LENGTH.unpack_from(rest)[0]
            self.records += 1
        elif rest:
            self._partial = bytes(rest)
        return super().finish()


def _header_holds(header: bytes) -> bool:
    """Returns whether a 12-byte TFRecord header's length matches its checksum."""
    if _crc32c is None:
        return _is_record_header(header)
    return _masked(_crc32c(header[:8])) == _CRC.unpack_from(header, 8)[0]


def stream_records(uri: str, *, batch: int = STREAM_BATCH) -> Iterator[list[bytes]]:
    """Yields the records of one bucket object, in order, in lists of up to `batch`; memory stays flat.

    The object is streamed (`open_read`, 4 MiB a request), GZIP/ZLIB inflated as it comes (told
    apart by its first bytes, `compression_of`), its frames cut and checked (`_RecordSplit`). An
    object that changed since the latest window listed it, one cut short or damaged, or one that
    is gone is a DataError naming it; an object read whole adds its count to `DataWindow.records`.
    """
    from include.storage.objects import open_read, opened_stat

    uri = BucketURI(uri)
    name = str(uri)
    try:
        handle = open_read(uri, block_size=STREAM_REQUEST)
    except FileNotFoundError:
        raise DataError(name, "cannot read the object: it is gone (removed since it was listed?)") from None
    with handle:
        token = opened_stat(uri, handle).token
        listed = _LISTED.get(name)
        if listed is not None and listed != token:
            raise DataError(
                name,
                f"the object changed since the data window was listed (version {listed}, now {token}): "
                "list the window again",
            )
        chunk = handle.read(READ_BUFFER)
        compression = compression_of(chunk[:_SNIFF_BYTES], name)
        split = _RecordSplit(name, compression)
        inflate = _Inflater(name, compression, split) if compression else None
        while chunk:
            slices = range(0, len(chunk), _INFLATE_SLICE) if inflate else (0,)
            for at in slices:
                if inflate:
                    inflate.feed(memoryview(chunk)[at : at + _INFLATE_SLICE])
                else:
                    split.feed(chunk)
                if len(split.out) >= batch or split.out_bytes >= _STREAM_BATCH_BYTES:
                    yield from _batches(split.take(), batch)
            chunk = handle.read(READ_BUFFER)
        if inflate:
            inflate.finish()
        records = split.finish()
        yield from _batches(split.take(), batch)
    _COUNTED[(name, token)] = records


def _batches(records: list[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]
