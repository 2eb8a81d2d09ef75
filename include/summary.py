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


def describe_check(row: dict) -> str:
    """Returns one check report row in words.

    E.g. `feature sex: oov_fraction 0.53 in dt=2026-10-30 (expected <= 0.05, declared; values 'X' x8)`.
    """
    where = f" in {row['partition']}" if row.get("partition") else ""
    detail = f"; {row['detail']}" if row.get("detail") else ""
    value = row["value"]
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    expected = f"expected {row['threshold']}, {row['source']}{detail}"
    return f"{row['subject']}: {row['statistic']} {shown}{where} ({expected})"


def checks_headline(report: dict | None) -> str:
    """Returns the data checks' verdict in a few words, e.g. `data checks passed (54 against version 3)`."""
    if not report:
        return "no data checks (data_checks.statistics is off)"
    if not report.get("checked"):
        return "no data check applies yet (none declared, no baseline statistics)"
    against = f" against version {report['baseline_version']}" if report.get("baseline_version") else ""
    words = f"data checks {report['verdict']} ({report['checked']} checks{against})"
    if report.get("forced_reason"):
        words += f", forced past {len(report.get('failed', []))}: {report['forced_reason']!r}"
    return words
