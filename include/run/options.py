"""The options of one run: trigger params checked again and merged with the pipeline's defaults."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from include.errors import RunParamsError
from include.text import control_character_problem
from include.versions import resolve_version

#: Bounds shared by the trigger form's JSON schema (dag factory) and this module's checks.
MAX_STEPS = 1_000_000
MAX_LEARNING_RATE = 10.0
MAX_REASON_LENGTH = 500


@dataclass(frozen=True)
class RunOptions:
    """What a run does differently from the YAML defaults, and the version it publishes."""

    version: int
    as_of: dt.date
    steps: int | None = None
    learning_rate: float | None = None
    force_publish: bool = False
    force_reason: str = ""
    allow_breaking_change: bool = False

    def to_dict(self) -> dict:
        """Returns JSON-able options (dates as ISO strings)."""
        data = asdict(self)
        data["as_of"] = self.as_of.isoformat()
        return data


def resolve_run_options(
    params: dict, logical_date: dt.datetime | None, run_after: dt.datetime | None
) -> RunOptions:
    """Returns the options of a run; raises RunParamsError naming the bad param.

    The trigger form validates each param on its own; the rules that involve several params
    (force_publish needs force_reason) and anything that bypassed the form are checked here.
    """
    steps = params.get("steps")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS
    ):
        raise RunParamsError(f"steps: expected an integer in 1..{MAX_STEPS} or null, got {steps!r}")
    rate = params.get("learning_rate")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= MAX_LEARNING_RATE
    ):
        raise RunParamsError(
            f"learning_rate: expected a number in (0, {MAX_LEARNING_RATE}] or null, got {rate!r}"
        )
    force = params.get("force_publish", False)
    if not isinstance(force, bool):
        raise RunParamsError(f"force_publish: expected true or false, got {force!r}")
    reason = params.get("force_reason") or ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
        raise RunParamsError(f"force_reason: expected a string of at most {MAX_REASON_LENGTH} characters")
    if problem := control_character_problem("force_reason", reason):  # shown on pages and in mail
        raise RunParamsError(problem)
    allow_breaking = params.get("allow_breaking_change", False)
    if not isinstance(allow_breaking, bool):
        raise RunParamsError(f"allow_breaking_change: expected true or false, got {allow_breaking!r}")
    if force and not reason.strip():
        raise RunParamsError("force_publish: true needs a non-empty force_reason saying why")
    version = resolve_version(logical_date, run_after, params.get("version"))
    when = logical_date or run_after
    if when is None:
        raise RunParamsError("a run needs a logical date or a run-after time to pick its data")
    as_of = when.astimezone(dt.UTC).date()
    return RunOptions(
        version=version,
        as_of=as_of,
        steps=steps,
        learning_rate=float(rate) if rate is not None else None,
        force_publish=force,
        force_reason=reason.strip(),
        allow_breaking_change=allow_breaking,
    )
