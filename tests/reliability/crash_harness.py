"""Crash injection: SIGKILL export + publish at random moments, then check what TF Serving could see.

Runs as its own process (so TensorFlow is imported once, before any session exists, and each
trial is a cheap fork): for every trial a child exports the checkpoint and publishes it; the
parent kills it with SIGKILL after a random delay within the measured duration of a clean run,
then checks the invariants, reruns export + publish to completion and checks again. A second
round does the same to publish alone, with retention and a serving policy on, so that the kills
land in the manifest's writes (entries, history, head) and in retention's deletions.

With SERVING (a `gs://…` or `s3://…` URI) and CONNECTION (the Airflow connection that opens it,
given as an `AIRFLOW_CONN_*` variable in the environment), the exports stay in WORKDIR and every
publish goes to the bucket: `<SERVING>/serving` and `<SERVING>/serving-retention`. The invariants
are then read from the bucket (tests/reliability/bucket_checks.py). A killed publisher's lease is
left until it expires: the leases' TTL is shortened to `CRASH_LEASE_TTL` s (1 by default), a kill
trial starts once the leases left have expired (so that its kill lands in the work, not in a
wait), and a rerun takes them over itself; the figures (lease time left at each rerun's start,
rerun durations) are in the JSON line.

Usage: python -m tests.reliability.crash_harness CONFIG CHECKPOINT WORKDIR TRIALS SEED [SERVING CONNECTION]
Prints one JSON line: {"trials": N, "killed": K, "publish_killed": P, "violations": [...], ...}.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from include.config import load_pipeline_config
from include.registry.store import HISTORY_FILE, MANIFEST_FILE, STAGING_DIR, VERSIONS_DIR, read_manifest
from include.savedmodel.files import missing_parts
from include.storage.connections import filesystem, use_connection
from include.storage.location import BucketURI
from include.versions import is_version_name
from tests.reliability.bucket_checks import (
    LEASE_TTL,
    check_bucket,
    export_sizes,
    lease_left,
    locks_of,
    short_leases,
    wait_out_leases,
)


def export_and_publish(config, checkpoint: str, work: Path, version: int, serving=None) -> None:
    """What the export_savedmodel and publish_version tasks do for one run (to `serving`, if given)."""
    from include.registry.publish import publish_version
    from include.savedmodel.export import export_savedmodel

    export_dir = work / "exports" / str(version)
    export_savedmodel(config, checkpoint, export_dir)
    publish_version(
        export_dir,
        serving or work / "serving",
        config.model.name,
        version,
        record={"run_id": f"trial-{version}"},
    )


def publish_with_retention(export_dir: Path, work: Path, name: str, version: int, serving=None) -> None:
    """What publish_version does for a pipeline with `keep_versions: 3` and `num_latest: 2`."""
    from include.registry.publish import publish_version

    publish_version(
        export_dir,
        serving or work / "serving-retention",
        name,
        version,
        record={"run_id": f"trial-{version}"},
        keep_versions=3,
        serving_policy={"version_policy": "latest", "num_latest": 2},
    )


def run_child(work: Callable[[], None], kill_after: float | None) -> tuple[bool, float]:
    """Forks a child that runs `work`; kills it after `kill_after` s. Returns (killed, secs).

    A clean run (no kill) that fails raises RuntimeError with the child's exception (sent back
    through a pipe), so the violation names what broke.
    """
    started = time.monotonic()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        code = 0
        try:
            work()
        except BaseException:
            os.write(write_end, traceback.format_exc()[-2000:].encode())
            code = 1
        os._exit(code)
    os.close(write_end)
    try:
        if kill_after is not None:
            deadline = started + kill_after
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return False, time.monotonic() - started
                time.sleep(0.002)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return True, time.monotonic() - started
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            with os.fdopen(read_end, "rb", closefd=False) as pipe:
                raise RuntimeError(f"a clean run (no kill) failed: {pipe.read().decode(errors='replace')}")
        return False, time.monotonic() - started
    finally:
        os.close(read_end)


def check(model_dir: Path, *, after_rerun_of: int | None = None) -> list[str]:
    """Returns invariant violations: incomplete numeric dirs, torn manifest files, leftovers."""
    problems = []
    if not model_dir.exists():
        return problems
    for entry in model_dir.iterdir():
        if is_version_name(entry.name) and missing_parts(entry):
            problems.append(f"visible version {entry.name} is incomplete: {missing_parts(entry)}")
    problems += torn_files(model_dir)
    try:
        manifest = read_manifest(model_dir)
    except ValueError as err:
        return [*problems, f"manifest does not read: {err}"]
    for version, entry in manifest["versions"].items():
        if entry.get("status") == "published" and missing_parts(model_dir / version):
            problems.append(f"manifest lists {version} but its dir is incomplete")
    for label, version in manifest["labels"].items():
        if manifest["versions"].get(str(version), {}).get("status") != "published":
            problems.append(f"label {label} points at {version}, which has no published entry")
    if after_rerun_of is not None:
        problems += after_rerun(model_dir, manifest, after_rerun_of)
    return problems


def torn_files(model_dir: Path) -> list[str]:
    """Returns the registry files that do not parse: the head, an entry, a committed history line."""
    problems, head = [], {}
    for path in [model_dir / MANIFEST_FILE, *sorted((model_dir / VERSIONS_DIR).glob("*.json"))]:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except ValueError as err:
            problems.append(f"{path.name} does not parse: {err}")
            continue
        head = data if path.name == MANIFEST_FILE else head
    history = model_dir / HISTORY_FILE
    committed = history.read_bytes()[: head.get("history_bytes", 0)] if history.exists() else b""
    if committed and not committed.endswith(b"\n"):
        problems.append("the committed history ends inside a line")
    for number, line in enumerate(committed.splitlines(), 1):
        try:
            json.loads(line)
        except ValueError as err:
            problems.append(f"committed history line {number} does not parse: {err}")
    return problems


def after_rerun(model_dir: Path, manifest: dict, version: int) -> list[str]:
    """Returns what a completed rerun must have settled: its record, the newest list, no leftovers."""
    problems = []
    if str(version) not in manifest["versions"]:
        problems.append(f"rerun did not record version {version}")
    head = json.loads((model_dir / MANIFEST_FILE).read_text())
    published = [int(v) for v, e in manifest["versions"].items() if e.get("status") == "published"]
    if head["newest"][-1:] != [max(published)]:
        problems.append(f"head's newest {head['newest']} misses the newest version {max(published)}")
    if (model_dir / HISTORY_FILE).stat().st_size != head["history_bytes"]:
        problems.append("uncommitted history bytes after a rerun")
    leftovers = [
        p.name
        for p in model_dir.iterdir()
        if p.name.startswith((".staging-", ".deleting-")) or p.name.endswith(".tmp")
    ]
    leftovers += [f"{STAGING_DIR}/{p.name}" for p in (model_dir / STAGING_DIR).iterdir()]
    if leftovers:
        problems.append(f"stale dirs after rerun: {leftovers}")
    return problems


@dataclass
class Bucket:
    """How a round reads a model dir in a bucket: the invariants, the leases a kill leaves."""

    model_dir: BucketURI
    export_dir: Path  # a complete export: its files and sizes are what a version prefix must hold
    rerun_lease_left: list[float] = field(default_factory=list)  # lease time left as a rerun starts
    rerun_seconds: list[float] = field(default_factory=list)
    settle_seconds: float = 0.0  # waited before kill trials for killed holders' leases to expire
    check_seconds: float = 0.0  # spent reading the bucket for the invariants

    def check(self, after_rerun_of: int | None = None) -> list[str]:
        started = time.monotonic()
        # Read after the calibration run made the export (every export of the checkpoint is alike).
        expected = export_sizes(self.export_dir)
        found = check_bucket(self.model_dir, expected, after_rerun_of=after_rerun_of)
        self.check_seconds += time.monotonic() - started
        return found

    def settle(self) -> None:
        self.settle_seconds += wait_out_leases(*locks_of(self.model_dir))

    def figures(self, prefix: str) -> dict:
        waits, reruns = self.rerun_lease_left or [0.0], self.rerun_seconds or [0.0]
        return {
            f"{prefix}rerun_lease_left_max": round(max(waits), 3),
            f"{prefix}rerun_lease_left_total": round(sum(waits), 3),
            f"{prefix}reruns_after_a_held_lease": sum(1 for w in waits if w > 0),
            f"{prefix}rerun_seconds_max": round(max(reruns), 3),
            f"{prefix}rerun_seconds_mean": round(sum(reruns) / len(reruns), 3),
            f"{prefix}settle_seconds": round(self.settle_seconds, 3),
            f"{prefix}check_seconds": round(self.check_seconds, 3),
        }


def crash_trials(
    run: Callable[[int], Callable[[], None]],
    model_dir: Path,
    trials: int,
    first: int,
    rng: random.Random,
    bucket: Bucket | None = None,
) -> tuple[int, list[str], list[float]]:
    """Kills `run(version)` at random moments, each version twice, then reruns it; returns what broke.

    With `bucket`, the invariants are read from the bucket, and a kill trial first waits out the
    leases a killed holder left (a rerun takes them over itself, timed).

    Returns (kills that interrupted the work, violations, delays).
    """

    def checked(after_rerun_of: int | None = None) -> list[str]:
        if bucket is not None:
            return bucket.check(after_rerun_of)
        return check(model_dir, after_rerun_of=after_rerun_of)

    _, clean = run_child(run(first - 1), None)  # calibration: how long a clean run takes
    killed, violations, delays = 0, [], []
    for trial in range(trials):
        version = first + trial // 2  # every version is crashed twice in a row, then rerun
        delay = rng.uniform(0, clean * 1.2)
        delays.append(delay)
        if bucket is not None:
            bucket.settle()
        was_killed, _ = run_child(run(version), delay)
        killed += was_killed
        violations += [f"trial {trial} after kill at {delay:.3f}s: {p}" for p in checked()]
        if trial % 2 == 1:
            if bucket is not None:
                bucket.rerun_lease_left.append(max(0.0, lease_left(*locks_of(bucket.model_dir))))
            try:
                _, took = run_child(run(version), None)
                if bucket is not None:
                    bucket.rerun_seconds.append(took)
            except RuntimeError as err:
                violations.append(f"trial {trial}: {err}")
            violations += [f"trial {trial} after rerun: {p}" for p in checked(after_rerun_of=version)]
    return killed, violations, [clean, *delays]


def main() -> int:
    config_path, checkpoint, work, trials, seed = sys.argv[1:6]
    serving, connection = [*sys.argv[6:8], None, None][:2]
    import tensorflow  # noqa: F401 - import once in the parent; children are forks

    config = load_pipeline_config(config_path)
    work, trials, rng = Path(work), int(trials), random.Random(int(seed))  # noqa: S311 - not crypto
    name = config.model.name
    roots: tuple = (None, None)
    if serving:
        use_connection(serving, connection)  # bound before forking: every child inherits it
        short_leases()
        # Reads the connection (importing Airflow) and imports gcsfs/s3fs here, once: a child's
        # imports die with it, and the calibration run would time them instead of the work.
        filesystem(BucketURI(serving))
        import include.registry.publish  # noqa: F401

        roots = (BucketURI(serving) / "serving", BucketURI(serving) / "serving-retention")
    exported = work / "exports" / "1"  # the calibration run's export
    buckets = [Bucket(root / name, exported) if root else None for root in roots]
    killed, violations, timings = crash_trials(
        lambda v: lambda: export_and_publish(config, checkpoint, work, v, roots[0]),
        work / "serving" / name,
        trials,
        2,
        rng,
        buckets[0],
    )
    publish_killed, publish_violations, publish_timings = crash_trials(
        lambda v: lambda: publish_with_retention(exported, work, name, v, roots[1]),
        work / "serving-retention" / name,
        trials,
        1001,
        rng,
        buckets[1],
    )
    result = {
        "trials": trials,
        "killed": killed,
        "publish_killed": publish_killed,
        "violations": violations + [f"publish only, {v}" for v in publish_violations],
        "clean_run_seconds": round(timings[0], 3),
        "clean_publish_seconds": round(publish_timings[0], 3),
        "max_delay": round(max(timings[1:]), 3),
    }
    if serving:
        result |= {"serving": serving, "lease_ttl": LEASE_TTL}
        result |= buckets[0].figures("") | buckets[1].figures("publish_only_")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
