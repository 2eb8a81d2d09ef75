"""Writes the example data set (scikit-learn's digits) into daily TFRecord partitions.

Usage: python scripts/generate_data.py [LOCATION]   (default: the example pipeline's data.location)
"""

from __future__ import annotations

import argparse
import logging

from include.config import DEFAULT_PIPELINES_DIR, load_pipeline_config
from tools.example_data import write_example_partitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("location", nargs="?", help="output folder (default: from digits_softmax.yaml)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    location = (
        args.location or load_pipeline_config(DEFAULT_PIPELINES_DIR / "digits_softmax.yaml").data.location
    )
    partitions = write_example_partitions(location)
    print(f"{len(partitions)} partitions in {location}")


if __name__ == "__main__":
    main()
