"""Runs the example pipeline end to end through Airflow and prints the published version dir.

Steps: write the example data, run `airflow dags test` for the run dated now (UTC, whole
seconds), check the version dir is complete, print its absolute path as the last line.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from include.config import DEFAULT_PIPELINES_DIR, load_pipeline_config
from include.data import write_example_partitions
from include.savedmodel_dir import missing_parts
from include.versions import version_dir, version_from_date

PIPELINE_FILE = DEFAULT_PIPELINES_DIR / "digits_softmax.yaml"


def main() -> int:
    config = load_pipeline_config(PIPELINE_FILE)
    write_example_partitions(config.data.location)
    logical_date = dt.datetime.now(dt.UTC).replace(microsecond=0)
    airflow = Path(sys.executable).with_name("airflow")
    command = [str(airflow), "dags", "test", config.dag_id, logical_date.isoformat()]
    print("+", " ".join(command), flush=True)
    completed = subprocess.run(command, env=os.environ.copy(), check=False)
    if completed.returncode != 0:
        print(f"airflow dags test failed with exit code {completed.returncode}", file=sys.stderr)
        return completed.returncode
    published = version_dir(config.storage.serving_root, config.model.name, version_from_date(logical_date))
    problems = missing_parts(published)
    if problems:
        print(f"the run ended but {published} is not a complete SavedModel: {problems}", file=sys.stderr)
        return 1
    print(published.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
