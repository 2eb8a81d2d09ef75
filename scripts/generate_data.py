"""Writes the example data sets (scikit-learn's digits and diabetes) into daily TFRecord partitions.

Usage: python scripts/generate_data.py [PIPELINE [LOCATION]]
(default: every example pipeline, each into its YAML's data.location)
"""

from __future__ import annotations

import argparse
import logging

from include.config import DEFAULT_PIPELINES_DIR, find_pipeline
from tools.example_data import EXAMPLE_PIPELINES, write_example_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", nargs="?", choices=EXAMPLE_PIPELINES, help="one example pipeline")
    parser.add_argument("location", nargs="?", help="output folder (default: from the pipeline's YAML)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in [args.pipeline] if args.pipeline else EXAMPLE_PIPELINES:
        location = args.location or find_pipeline(name, DEFAULT_PIPELINES_DIR).data.location
        partitions = write_example_data(name, location)
        print(f"{name}: {len(partitions)} partitions in {location}")


if __name__ == "__main__":
    main()
