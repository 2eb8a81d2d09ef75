"""`python -m include.config schema`: prints the JSON Schema of a pipeline YAML.

docs/pipeline.schema.json is its output, for editors that check the YAML as it is typed.
"""

from __future__ import annotations

import argparse
import json
import sys

from include.config.schema import PipelineConfig


def main(argv: list[str] | None = None) -> int:
    """Runs `python -m include.config schema`: prints the JSON Schema of a pipeline YAML."""
    parser = argparse.ArgumentParser(prog="python -m include.config", description="Pipeline YAML files")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("schema", help="print the JSON Schema of a pipeline YAML (docs/pipeline.schema.json)")
    parser.parse_args(argv)
    print(json.dumps(PipelineConfig.model_json_schema(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
