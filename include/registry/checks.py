"""What a version's data checks and quality gate concluded, as the Models page and `make versions` show it.

An entry may carry `data_checks` (expectations and drift on the data it was trained on) and
`quality_gate` (held-out and per-slice metrics against the baseline); entries of before have only
the gate's verdict, or neither. Both record rows of the same shape
(`kind, subject, statistic, partition, value, threshold, source, verdict`).
"""

from __future__ import annotations

from collections.abc import Iterable

#: Verdicts of a whole check, the one that says most first: a version's verdict is its worst.
VERDICTS = ("blocked", "forced", "passed")
#: Verdicts of a row that a reader must see first (and the pages mark).
FAILING = ("fail", "forced")


def checks_verdict(entry: dict) -> str | None:
    """Returns the worse of an entry's data-check and quality-gate verdicts (None: it records neither)."""
    found = [
        check.get("verdict")
        for check in (entry.get("data_checks"), entry.get("quality_gate"))
        if isinstance(check, dict) and isinstance(check.get("verdict"), str)
    ]
    for verdict in VERDICTS:
        if verdict in found:
            return verdict
    return found[0] if found else None  # a verdict this code does not know yet: shown as written


def check_rows(value: object) -> list[dict]:
    """Returns the rows of a report field (a list of dicts; anything else in it is left out)."""
    return [row for row in value if isinstance(row, dict)] if isinstance(value, list) else []


def failing_first(rows: Iterable[dict]) -> list[dict]:
    """Returns report rows with failing, then forced rows first, each group in its recorded order."""
    order = {verdict: i for i, verdict in enumerate(FAILING)}
    return sorted(rows, key=lambda row: order.get(row.get("verdict"), len(FAILING)))


def failing_subjects(rows: Iterable[dict]) -> set[str]:
    """Returns the subjects (`feature bmi`, `slice sex=F`) of the rows that failed or were forced."""
    return {str(row.get("subject")) for row in rows if row.get("verdict") in FAILING}
