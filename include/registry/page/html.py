"""The Models pages as HTML: Jinja2 templates (include/registry/page/templates/), autoescaped, no JavaScript.

`render_*` take the dicts of include/registry/page/data.py and the two URL roots: `base`, where the
registry app is mounted (e.g. /registry), and `ui`, the Airflow UI's root (links to DAG runs).
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from urllib.parse import quote

from jinja2 import ChainableUndefined, Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from include.registry.page.chart import metric_chart

TEMPLATES = Path(__file__).with_name("templates")


@functools.cache
def environment() -> Environment:
    """Returns the Jinja2 environment of the templates (autoescaped; missing entry fields render empty)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        metric=format_metric, value=format_value, fraction=format_fraction, when=format_when, path=quote_path
    )
    return env


def render(template: str, **context) -> str:
    """Returns a template rendered with `context`."""
    return environment().get_template(template).render(**context)


def render_models(models: list[dict], *, base: str, ui: str, user: str) -> str:
    """Returns the Models list page."""
    return render("models.html", models=models, base=base, ui=ui, user=user, title="Models")


def render_model(page: dict, *, base: str, ui: str, user: str) -> str:
    """Returns one model's page: the chart, one page of versions, the label history."""
    chart = Markup(metric_chart(page["series"], page["labels"]))  # noqa: S704 - built escaped
    return render("model.html", m=page, chart=chart, base=base, ui=ui, user=user, title=page["model"])


def render_version(page: dict, *, base: str, ui: str, user: str, may_request: bool) -> str:
    """Returns one version's page, with the label-move form when the user may request moves."""
    return render(
        "version.html",
        v=page,
        e=page["entry"],
        base=base,
        ui=ui,
        user=user,
        may_request=may_request,
        title=f"{page['model']} {page['version']}",
    )


def render_requested(request: dict, *, base: str, ui: str, user: str) -> str:
    """Returns the page that confirms a label-move request (the promote run it started)."""
    return render("requested.html", r=request, base=base, ui=ui, user=user, title="Request sent")


def render_error(status: int, message: str, *, base: str, ui: str, user: str | None) -> str:
    """Returns an error page (not found, forbidden, bad request)."""
    return render("error.html", status=status, message=message, base=base, ui=ui, user=user, title="Error")


def format_metric(value: object) -> str:
    """Returns a metric for a table cell: counts in full, rates to 4 significant digits, a dash if missing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def format_value(value: object) -> str:
    """Returns a check's or statistic's value for a cell: numbers as metrics, text as is, a dash if none."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    return format_metric(value) if isinstance(value, int | float) else str(value)


def format_fraction(value: object) -> str:
    """Returns a fraction (0.0123) as a percentage (1.23%), 0 as 0, a dash if missing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return "0" if value == 0 else f"{value * 100:.3g}%"


def format_when(value: object) -> str:
    """Returns an ISO timestamp as `YYYY-MM-DD HH:MM UTC`, or a dash when missing."""
    if not value:
        return "—"
    try:
        when = dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC)
    except ValueError:
        return str(value)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def quote_path(value: object) -> str:
    """Returns a value quoted for one URL path segment (run ids hold ':' and '+')."""
    return quote(str(value), safe="")
