"""The bare baseline: what TF Serving's mnist_saved_model.py does, in one process, no Airflow.

Same data (all partitions before AS_OF), same graph, steps, batch size and export as the
example pipeline. Usage: python bench/bare_tutorial.py PIPELINE_YAML EXPORT_DIR
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
from pathlib import Path

AS_OF = dt.date(2026, 11, 1)


def main() -> None:
    from include.config import load_pipeline_config
    from include.savedmodel.export import write_savedmodel
    from include.train.training import train_model

    config = load_pipeline_config(sys.argv[1])
    with tempfile.TemporaryDirectory() as work:
        result = train_model(config, AS_OF, Path(work))
        write_savedmodel(config, result.checkpoint, Path(sys.argv[2]))


if __name__ == "__main__":
    main()
