"""Runs an example pipeline end to end through Airflow and prints the published version dir.

Usage: python scripts/demo.py [PIPELINE]   (default digits_softmax; `make demo PIPELINE=diabetes_keras`)

Steps: write the pipeline's example data, run `airflow dags test` for the run dated now (UTC, whole
seconds) with its whole output going to build/demo.log, print one line per task from the
summary lines the tasks log (include/summary.py), check the version dir is complete, then print
the log's path and, as the last line, the version dir's absolute path. When the run fails, the
end of the log is printed instead.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from include.config import DEFAULT_PIPELINES_DIR, PROJECT_ROOT, find_pipeline
from include.savedmodel.files import missing_parts
from include.summary import SUMMARY_MARKER
from include.versions import version_dir, version_from_date
from tools.example_data import write_example_data

DEFAULT_PIPELINE = "digits_softmax"
LOG_FILE = PROJECT_ROOT / "build" / "demo.log"
TAIL_LINES = 40  # of the log, shown when the run fails
TASK_COLUMN = 22  # width of the task id column

_SUMMARY = re.compile(re.escape(SUMMARY_MARKER) + r"(?P<task_id>[\w.-]+): (?P<fact>.*)")
# Airflow's console log renderer colours lines on a terminal and appends the logger's name and
# key=value pairs to a message: `... fact [plugins.savedmodel_tasks] loc=savedmodel_tasks.py:42`.
_ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")
_RENDERER_SUFFIX = re.compile(r"\s+\[[A-Za-z_][\w.]*\](?:\s+[\w.]+=\S*)*\s*$")


def task_summary(line: str) -> tuple[str, str] | None:
    """Returns (task id, fact) of a log line holding a task summary, else None."""
    match = _SUMMARY.search(_ANSI_CODE.sub("", line))
    if match is None:
        return None
    return match["task_id"], _RENDERER_SUFFIX.sub("", match["fact"]).strip()


def summary_printer() -> Callable[[str], None]:
    """Returns a line handler that prints each task summary once, as `  <task id>  <fact>`."""
    seen: set[tuple[str, str]] = set()

    def on_line(line: str) -> None:
        summary = task_summary(line)
        if summary is not None and summary not in seen:
            seen.add(summary)
            task_id, fact = summary
            print(f"  {task_id:<{TASK_COLUMN}}{fact}", flush=True)

    return on_line


def run_logged(command: list[str], log_file: Path, on_line: Callable[[str], None]) -> tuple[int, list[str]]:
    """Returns the exit code and last log lines of `command`, run with its output going to `log_file`.

    stdout and stderr are merged into the log as they come; `on_line` sees every line.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with open(log_file, "w", encoding="utf-8") as log:
        log.write(f"+ {' '.join(command)}\n")
        with subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            text=True,
            errors="replace",
            bufsize=1,
        ) as process:
            for line in process.stdout:
                log.write(line)
                tail.append(line.rstrip("\n"))
                on_line(line)
    return process.returncode, list(tail)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    config = find_pipeline(args[0] if args else DEFAULT_PIPELINE, DEFAULT_PIPELINES_DIR)
    write_example_data(config.name, config.data.location)
    logical_date = dt.datetime.now(dt.UTC).replace(microsecond=0)
    airflow = Path(sys.executable).with_name("airflow")
    command = [str(airflow), "dags", "test", config.dag_id, logical_date.isoformat()]
    print(f"+ airflow dags test {config.dag_id} {logical_date.isoformat()}", flush=True)
    returncode, tail = run_logged(command, LOG_FILE, summary_printer())
    if returncode != 0:
        print(f"airflow dags test failed with exit code {returncode}; the end of its log:", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)
        print(f"full log: {LOG_FILE}", file=sys.stderr)
        return returncode
    published = version_dir(config.storage.serving_root, config.model.name, version_from_date(logical_date))
    problems = missing_parts(published)
    if problems:
        print(f"the run ended but {published} is not a complete SavedModel: {problems}", file=sys.stderr)
        print(f"full log: {LOG_FILE}", file=sys.stderr)
        return 1
    print(f"full log: {LOG_FILE}")
    print(published.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
