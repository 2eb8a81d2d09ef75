"""The registry on the command line: a model's versions as a table, and models.config on demand.

Usage: python -m include.registry_cli versions <model dir | pipeline name>
       python -m include.registry_cli models-config <serving root>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from include.config import find_pipeline
from include.errors import ConfigError
from include.manifest import read_manifest
from include.serving_config import write_models_config
from include.versions import is_version_name


def versions_table(manifest: dict) -> str:
    """Returns the on-call view of a model: version, date, run type, accuracy, labels, status."""
    labels_by_version: dict[int, list[str]] = {}
    for label, version in sorted(manifest["labels"].items()):
        labels_by_version.setdefault(version, []).append(label)
    rows = [("VERSION", "LOGICAL DATE", "RUN TYPE", "ACCURACY", "LABELS", "STATUS", "PUBLISHED AT")]
    for key, entry in sorted(manifest["versions"].items(), key=lambda kv: int(kv[0]), reverse=True):
        accuracy = entry.get("metrics", {}).get("eval_accuracy")
        rows.append(
            (
                key,
                (entry.get("logical_date") or "-")[:19],
                entry.get("run_type", "-"),
                f"{accuracy:.4f}" if accuracy is not None else "-",
                ",".join(labels_by_version.get(int(key), [])) or "-",
                entry.get("status", "-"),
                (entry.get("published_at") or "-")[:19],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Inspect the model registry on disk.")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("versions", help="list a model's versions as a table")
    show.add_argument("model_dir", help="<serving_root>/<model>, or a pipeline name from include/pipelines")
    config = sub.add_parser(
        "models-config", help="(re)write <serving_root>/models.config, e.g. before TF Serving first starts"
    )
    config.add_argument("serving_root")
    args = parser.parse_args(argv)
    if args.command == "models-config":
        serving_root = Path(args.serving_root)
        serving_root.mkdir(parents=True, exist_ok=True)
        print(write_models_config(serving_root))
        return 0
    model_dir = Path(args.model_dir)
    if not model_dir.is_dir():
        try:
            pipeline = find_pipeline(args.model_dir)
        except ConfigError as err:
            print(f"{args.model_dir} is no model dir; {'; '.join(err.problems)}", file=sys.stderr)
            return 2
        model_dir = pipeline.storage.serving_root / pipeline.model.name
    manifest = read_manifest(model_dir)
    print(versions_table(manifest))
    on_disk = [p.name for p in model_dir.iterdir() if is_version_name(p.name)] if model_dir.is_dir() else []
    unknown = sorted(set(on_disk) - set(manifest["versions"]))
    if unknown:
        print(f"\nnot in the manifest (not published by this pipeline): {', '.join(unknown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
