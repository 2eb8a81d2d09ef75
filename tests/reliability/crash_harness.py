"""Crash injection: SIGKILL export + publish at random moments, then check what TF Serving could see.

Runs as its own process (so TensorFlow is imported once, before any session exists, and each
trial is a cheap fork): for every trial a child exports the checkpoint and publishes it; the
parent kills it with SIGKILL after a random delay within the measured duration of a clean run,
then checks the invariants, reruns export + publish to completion and checks again.

Usage: python -m tests.reliability.crash_harness CONFIG CHECKPOINT WORKDIR TRIALS SEED
Prints one JSON line: {"trials": N, "killed": K, "violations": [...], ...}.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

from include.config import load_pipeline_config
from include.manifest import MANIFEST_FILE
from include.savedmodel_dir import missing_parts
from include.versions import is_version_name


def export_and_publish(config, checkpoint: str, work: Path, version: int) -> None:
    """What the export_savedmodel and publish_version tasks do for one run."""
    from include.export import export_savedmodel
    from include.publish import publish_version

    export_dir = work / "exports" / str(version)
    export_savedmodel(config, checkpoint, export_dir)
    publish_version(
        export_dir, work / "serving", config.model.name, version, record={"run_id": f"trial-{version}"}
    )


def run_child(
    config, checkpoint: str, work: Path, version: int, kill_after: float | None
) -> tuple[bool, float]:
    """Forks a child that exports and publishes; kills it after `kill_after` s. Returns (killed, secs)."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            export_and_publish(config, checkpoint, work, version)
        except BaseException:
            code = 1
        os._exit(code)
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
        raise RuntimeError(f"clean export + publish of version {version} failed")
    return False, time.monotonic() - started


def check(model_dir: Path, *, after_rerun_of: int | None = None) -> list[str]:
    """Returns invariant violations: incomplete numeric dirs, torn manifest, leftovers."""
    problems = []
    if not model_dir.exists():
        return problems
    for entry in model_dir.iterdir():
        if is_version_name(entry.name) and missing_parts(entry):
            problems.append(f"visible version {entry.name} is incomplete: {missing_parts(entry)}")
    manifest_path = model_dir / MANIFEST_FILE
    manifest = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as err:
            problems.append(f"manifest does not parse: {err}")
    for version, entry in manifest.get("versions", {}).items():
        if entry.get("status") == "published" and missing_parts(model_dir / version):
            problems.append(f"manifest lists {version} but its dir is incomplete")
    if after_rerun_of is not None:
        if str(after_rerun_of) not in manifest.get("versions", {}):
            problems.append(f"rerun did not record version {after_rerun_of}")
        leftovers = [
            p.name
            for p in model_dir.iterdir()
            if p.name.startswith((".staging-", ".deleting-")) or p.name.endswith(".tmp")
        ]
        if leftovers:
            problems.append(f"stale dirs after rerun: {leftovers}")
    return problems


def main() -> int:
    config_path, checkpoint, work, trials, seed = sys.argv[1:6]
    import tensorflow  # noqa: F401 - import once in the parent; children are forks

    config = load_pipeline_config(config_path)
    work, trials, rng = Path(work), int(trials), random.Random(int(seed))  # noqa: S311 - not crypto
    model_dir = work / "serving" / config.model.name
    _, clean = run_child(config, checkpoint, work, 1, None)  # calibration: how long a clean run takes
    killed, violations, delays = 0, [], []
    for trial in range(trials):
        version = 2 + trial // 2  # every version is crashed twice in a row, then rerun
        delay = rng.uniform(0, clean * 1.2)
        delays.append(delay)
        was_killed, _ = run_child(config, checkpoint, work, version, delay)
        killed += was_killed
        violations += [f"trial {trial} after kill at {delay:.3f}s: {p}" for p in check(model_dir)]
        if trial % 2 == 1:
            try:
                run_child(config, checkpoint, work, version, None)
            except RuntimeError as err:
                violations.append(f"trial {trial}: {err}")
            violations += [
                f"trial {trial} after rerun: {p}" for p in check(model_dir, after_rerun_of=version)
            ]
    print(
        json.dumps(
            {
                "trials": trials,
                "killed": killed,
                "violations": violations,
                "clean_run_seconds": round(clean, 3),
                "max_delay": round(max(delays), 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
