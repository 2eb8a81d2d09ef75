"""The registry on the command line: a model's versions as a table, and models.config on demand.

Usage: python -m include.registry.cli versions <model dir | pipeline name>
       python -m include.registry.cli rebuild <model dir | pipeline name>
       python -m include.registry.cli models-config <serving root>

A damaged registry (ManifestError) is reported as one message naming the file and what is wrong,
exit status 1; `rebuild` rebuilds it from the version dirs on disk (include/registry/rebuild.py).
A path that is not what the command expects (`rebuild`/`versions` given a version dir, a serving
root, a file or a dir with no registry; `models-config` given a model dir, a version dir or a file)
is refused with exit status 1, naming the path and what was expected, and nothing is written.
In the versions table a published version whose dir is gone reads `missing`; VERDICT is the worse
of its data checks' and quality gate's verdicts (`-` for a version published before either).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from include.config import find_pipeline
from include.errors import ConfigError, ManifestError, RegistryError
from include.registry.checks import checks_verdict
from include.registry.rebuild import rebuild_registry
from include.registry.serving_config import write_models_config
from include.registry.store import (
    MISSING,
    model_dir_problem,
    read_manifest,
    shown_status,
    version_dirs,
)
from include.storage.paths import as_path, lexists

MODEL_HELP = "<serving_root>/<model>, or a pipeline name from include/pipelines"
#: The versions table's columns.
COLUMNS = (
    "VERSION", "LOGICAL DATE", "RUN TYPE", "ACCURACY", "LOSS", "LABELS", "VERDICT", "STATUS", "PUBLISHED AT",
)  # fmt: skip


def _number(value) -> str:
    """Returns a held-out metric for the table: 4 decimals, or "-" when missing or not a number."""
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def versions_table(manifest: dict, on_disk: set[int] | None = None) -> str:
    """Returns the on-call view of a model: version, date, run type, metrics, labels, verdict, status.

    With `on_disk` (the version dirs there), a published version without its dir reads `missing`.
    """
    labels_by_version: dict[int, list[str]] = {}
    for label, version in sorted(manifest["labels"].items()):
        labels_by_version.setdefault(version, []).append(label)
    rows = [COLUMNS]
    for key, entry in sorted(manifest["versions"].items(), key=lambda kv: int(kv[0]), reverse=True):
        metrics = entry.get("metrics") or {}
        rows.append(
            (
                key,
                (entry.get("logical_date") or "-")[:19],
                entry.get("run_type", "-"),
                _number(metrics.get("eval_accuracy")),  # classification only
                _number(metrics.get("eval_loss")),  # cross-entropy, or the MSE of a regression
                ",".join(labels_by_version.get(int(key), [])) or "-",
                checks_verdict(entry) or "-",  # the report is on the version's page
                shown_status(entry.get("status"), on_disk is None or int(key) in on_disk) or "-",
                (entry.get("published_at") or "-")[:19],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    """Runs one registry command; returns the exit status (1: damaged registry, 2: no such model)."""
    parser = argparse.ArgumentParser(description="Inspect the model registry on disk.")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("versions", help="list a model's versions as a table")
    show.add_argument("model_dir", help=MODEL_HELP)
    rebuild = sub.add_parser(
        "rebuild", help="rebuild a damaged registry from the version dirs on disk, keeping readable labels"
    )
    rebuild.add_argument("model_dir", help=MODEL_HELP)
    config = sub.add_parser(
        "models-config", help="(re)write <serving_root>/models.config, e.g. before TF Serving first starts"
    )
    config.add_argument("serving_root")
    args = parser.parse_args(argv)
    try:
        if args.command == "models-config":
            print(write_models_config(Path(args.serving_root)))  # refuses a path that is no serving root
            return 0
        model_dir = find_model_dir(args.model_dir)
        if model_dir is None:
            return 2
        return rebuild_command(model_dir) if args.command == "rebuild" else versions_command(model_dir)
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def find_model_dir(name: str) -> Path | None:
    """Returns the model dir a path or pipeline name stands for (None, with the reason printed, if none).

    An existing path is returned as it is: the commands check that it is a model dir.
    """
    model_dir = as_path(name)
    if lexists(model_dir):
        return model_dir
    try:
        pipeline = find_pipeline(name)
    except ConfigError as err:
        print(
            f"{name} does not exist and is no pipeline name: expected a model dir (<serving_root>/<model>) "
            f"or a pipeline name; nothing was written; {'; '.join(err.problems)}",
            file=sys.stderr,
        )
        return None
    return as_path(pipeline.storage.serving_root) / pipeline.model.name


def rebuild_command(model_dir: Path) -> int:
    """Rebuilds the registry, prints the report and rewrites models.config; returns the exit status."""
    report = rebuild_registry(model_dir, by="registry_cli rebuild")
    print(report.summary())
    try:
        print(f"rewrote {write_models_config(model_dir.parent)}")
    except ManifestError as err:  # another model's registry is damaged too
        print(f"models.config not rewritten: {err}", file=sys.stderr)
        return 1
    return 0


def versions_command(model_dir: Path) -> int:
    """Prints a model's versions table, the missing version dirs and those its registry does not know."""
    problem = model_dir_problem(model_dir) if lexists(as_path(model_dir)) else None
    if problem:  # a model never published yet has no dir: an empty table
        raise RegistryError(f"{model_dir} {problem}: expected a model dir (<serving_root>/<model>)")
    manifest = read_manifest(model_dir)
    on_disk = set(version_dirs(model_dir))
    print(versions_table(manifest, on_disk))
    missing = {
        int(v)
        for v, e in manifest["versions"].items()
        if shown_status(e.get("status"), int(v) in on_disk) == MISSING
    }
    if missing:
        labelled = [f"{k}={v}" for k, v in sorted(manifest["labels"].items()) if v in missing]
        print(
            f"\n{MISSING}: published, but the version dir is gone (deleted by hand?): "
            f"{', '.join(map(str, sorted(missing)))}. TF Serving no longer serves it (models.config "
            "leaves it out from the next publish or label move)"
            + (f"; labels kept in the registry but not served: {', '.join(labelled)}" if labelled else "")
            + ". Restore the dir, or move the label, or run `rebuild` to record it deleted."
        )
    unknown = sorted(on_disk - {int(v) for v in manifest["versions"]})
    if unknown:
        print(f"\nnot in the manifest (not published by this pipeline): {', '.join(map(str, unknown))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
