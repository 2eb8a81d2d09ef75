"""The model page's chart: held-out metrics by version as inline SVG, labelled versions marked.

No JavaScript and nothing fetched at run time: one `<svg>` element per page, one panel per metric,
versions evenly spaced oldest to newest. Past `MAX_POINTS` versions each bucket of neighbours is
drawn by its lowest and highest value, so a 10,000-version line stays small and still shows
every dip. Every text is escaped.
"""

from __future__ import annotations

from html import escape

WIDTH = 960
PANEL_HEIGHT = 150
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 26, 28
#: Most points one polyline gets; more versions are drawn by each bucket's min and max.
MAX_POINTS = 800
TITLES = {"eval_accuracy": "held-out accuracy", "eval_loss": "held-out loss"}
COLORS = {"eval_accuracy": "#1f6feb", "eval_loss": "#8250df"}
MARK_COLORS = {"stable": "#1a7f37", "canary": "#bc4c00"}


def metric_chart(series: dict[str, list[tuple[int, float]]], labels: dict[str, int | None]) -> str:
    """Returns an SVG of each metric's (version, value) series with the labelled versions marked."""
    if not series:
        return ""
    panels = [
        _panel(metric, points, labels, top=i * (PANEL_HEIGHT + MARGIN_TOP + MARGIN_BOTTOM))
        for i, (metric, points) in enumerate(series.items())
    ]
    height = len(panels) * (PANEL_HEIGHT + MARGIN_TOP + MARGIN_BOTTOM)
    names = " and ".join(TITLES.get(m, m) for m in series)
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" aria-label="{escape(names)} by version">'
        f"<title>{escape(names)} by version</title>{''.join(panels)}</svg>"
    )


def downsample(
    points: list[tuple[int, float]], limit: int = MAX_POINTS
) -> list[tuple[int, tuple[int, float]]]:
    """Returns (position, point) pairs: all points, or past `limit` each bucket's min and max, in order."""
    if len(points) <= limit:
        return list(enumerate(points))
    buckets, values = limit // 2, [value for _, value in points]
    kept: list[tuple[int, tuple[int, float]]] = []
    for b in range(buckets):
        lo, hi = b * len(points) // buckets, (b + 1) * len(points) // buckets
        if lo >= hi:
            continue
        segment = values[lo:hi]
        ends = {lo + segment.index(min(segment)), lo + segment.index(max(segment))}
        kept.extend((i, points[i]) for i in sorted(ends))
    return kept


def _panel(metric: str, points: list[tuple[int, float]], labels: dict[str, int | None], top: int) -> str:
    """Returns one panel: title, value axis, the line, and a marker per labelled version."""
    values = [v for _, v in points]
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5 * (abs(low) or 1) * 0.01, high + 0.5 * (abs(high) or 1) * 0.01
    plot_top, plot_width = top + MARGIN_TOP, WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    span = max(1, len(points) - 1)

    def x(position: int) -> float:
        return MARGIN_LEFT + (plot_width * position / span if len(points) > 1 else plot_width / 2)

    def y(value: float) -> float:
        return plot_top + PANEL_HEIGHT * (high - value) / (high - low)

    kept = downsample(points)
    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v) in kept)
    parts = [
        f'<g class="panel" data-metric="{escape(metric)}">',
        f'<text x="{MARGIN_LEFT}" y="{top + 16}" font-size="13" font-weight="600">'
        f"{escape(TITLES.get(metric, metric))} by version ({len(points):,} versions)</text>",
        f'<rect x="{MARGIN_LEFT}" y="{plot_top}" width="{plot_width}" height="{PANEL_HEIGHT}" '
        'fill="none" stroke="#d0d7de"/>',
        _axis_text(MARGIN_LEFT - 6, plot_top + 4, f"{high:.4g}", anchor="end"),
        _axis_text(MARGIN_LEFT - 6, plot_top + PANEL_HEIGHT, f"{low:.4g}", anchor="end"),
        _axis_text(MARGIN_LEFT, plot_top + PANEL_HEIGHT + 16, str(points[0][0]), anchor="start"),
        _axis_text(WIDTH - MARGIN_RIGHT, plot_top + PANEL_HEIGHT + 16, str(points[-1][0]), anchor="end"),
        f'<polyline fill="none" stroke="{COLORS.get(metric, "#57606a")}" stroke-width="1.5" '
        f'points="{line}"/>',
    ]
    if len(points) <= 60:
        parts += [
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{COLORS.get(metric, "#57606a")}">'
            f"<title>{version}: {v:.4g}</title></circle>"
            for i, (version, v) in enumerate(points)
        ]
    parts += _marks(points, labels, x, y, plot_top)
    parts.append("</g>")
    return "".join(parts)


def _marks(points, labels: dict[str, int | None], x, y, plot_top: int) -> list[str]:
    """Returns a dashed line, a dot and a caption for each labelled version that has a point."""
    position = {version: i for i, (version, _) in enumerate(points)}
    by_version: dict[int, list[str]] = {}
    for label, version in labels.items():
        if version in position:
            by_version.setdefault(version, []).append(label)
    marks = []
    for n, (version, names) in enumerate(sorted(by_version.items())):
        i, color = position[version], MARK_COLORS.get(names[0], "#57606a")
        value = points[i][1]
        caption = f"{', '.join(names)} {version}"
        anchor = "end" if x(i) > WIDTH * 0.7 else "start"
        shift = -4 if anchor == "end" else 4
        marks.append(
            f'<g class="mark" data-labels="{escape(" ".join(names))}" data-version="{version}">'
            f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{plot_top}" y2="{plot_top + PANEL_HEIGHT}" '
            f'stroke="{color}" stroke-dasharray="4 3"/>'
            f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="4" fill="{color}"/>'
            f'<text x="{x(i) + shift:.1f}" y="{plot_top + 12 + 13 * n}" font-size="11" fill="{color}" '
            f'text-anchor="{anchor}">{escape(caption)}: {value:.4g}</text></g>'
        )
    return marks


def _axis_text(x: float, y: float, text: str, *, anchor: str) -> str:
    """Returns a small grey axis caption."""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" fill="#57606a" text-anchor="{anchor}">'
        f"{escape(text)}</text>"
    )
