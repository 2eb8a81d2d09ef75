"""Task summaries: the one line per task that `make demo` shows of a run's logs.

Each task logs `savedmodel-summary: <task_id>: <fact>`; scripts/demo.py picks these lines out of
Airflow's output by the marker and prints the facts, one line per task.
"""

from __future__ import annotations

#: Marks a summary line in the logs (the one place that spells it; scripts/demo.py searches for it).
SUMMARY_MARKER = "savedmodel-summary: "


def summary_line(task_id: str, fact: str) -> str:
    """Returns the log line that summarises a task, e.g. `savedmodel-summary: train: 29 partitions`."""
    return f"{SUMMARY_MARKER}{task_id}: {fact}"


def metrics_headline(metrics: dict) -> str:
    """Returns the held-out metrics in a few words: accuracy and loss, or (regression) MSE and MAE."""
    if "eval_accuracy" in metrics:
        return f"held-out accuracy {metrics['eval_accuracy']:.4f}, loss {metrics['eval_loss']:.4f}"
    return f"held-out loss (MSE) {metrics['eval_loss']:.4f}, MAE {metrics.get('eval_mae', float('nan')):.4f}"


def data_read(data: dict) -> str:
    """Returns what train read, e.g. `31 files (2 GZIP), 1,797 records` (from its data lineage)."""
    compressed = ", ".join(f"{count} {kind}" for kind, count in data.get("compressed_files", {}).items())
    return f"{data['files']} files{f' ({compressed})' if compressed else ''}, {data['records']:,} records"
