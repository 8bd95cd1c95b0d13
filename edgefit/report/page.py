"""One self-contained HTML page for a ModelReport: summary card, memory timeline, arena layout, per-layer bars,
device table and, with a comparison, before -> after.

Offline by construction: inline CSS and SVG, no scripts, fonts or links to anything; hover details are SVG
<title> elements, which every browser shows as a tooltip without JavaScript. Charts of large models are binned so
the page stays a few MB: each bar or step then stands for a run of consecutive layers (their sum, or for memory
their maximum, so the peak survives). Numbers a test or a script may want sit in data-* attributes.
"""

from __future__ import annotations

from html import escape

from edgefit.analysis.footprint import LayerStats
from edgefit.model_report import ModelReport
from edgefit.report.check_text import (
    METRIC_LABELS,
    describe_band,
    describe_latency_basis,
    format_limit,
    format_value,
    render_tier_line,
)
from edgefit.report.quantities import format_bytes, format_count

MAX_BARS = 400            # bars per chart; more layers are binned
MAX_STACKED_RECTS = 20_000   # rectangles in the stacked timeline; beyond it the timeline shows totals only
MAX_ARENA_BUFFERS = 5_000    # buffers drawn in the arena layout (the largest)
WIDTH, HEIGHT, MARGIN = 960, 260, 56
_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
            "#bab0ac")

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1000px;color:#1d1d1f;
line-height:1.4}h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
.sub{color:#666}.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}.card{border:1px solid #ddd;
border-radius:6px;padding:.5em .9em;min-width:9em}.card b{display:block;font-size:1.25em}.card span{color:#666;
font-size:.85em}table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ddd;
padding:.25em .6em;text-align:left}th{background:#f5f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#186a1d}.over{color:#b00020;font-weight:600}.ctx{color:#8a6d00}svg{display:block;margin:.4em 0;
max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#333}.axis{stroke:#999;stroke-width:1}
.bound{stroke:#b00020;stroke-dasharray:6 4;stroke-width:1.5}.arena{stroke:#333;stroke-dasharray:2 3}
.fileorder{fill:none;stroke:#e15759;stroke-width:1.5}.peak{stroke:#000;stroke-width:1}.note{color:#666;
font-size:.88em}.tier{font-weight:600}@media print{body{margin:0;max-width:none}h2{break-after:avoid}
svg,table{break-inside:avoid}}
"""


def _num(value: float) -> str:
    return f"{value:.6g}"


def _chart(chart_id: str, body: list[str], attrs: str = "", height: int = HEIGHT) -> str:
    return (f'<svg id="{chart_id}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
            f'role="img" {attrs}>' + "".join(body) + "</svg>")


def _y_axis(max_value: float, label: str, fmt, height: int = HEIGHT) -> list[str]:
    plot = height - 2 * 20
    parts = [f'<line class="axis" x1="{MARGIN}" y1="20" x2="{MARGIN}" y2="{height - 20}"/>',
             f'<line class="axis" x1="{MARGIN}" y1="{height - 20}" x2="{WIDTH - 8}" y2="{height - 20}"/>',
             f'<text x="4" y="14">{escape(label)}</text>']
    for fraction in (0.5, 1.0):
        y = height - 20 - plot * fraction
        parts.append(f'<text x="4" y="{y + 4:.1f}">{escape(fmt(max_value * fraction))}</text>')
    return parts


def _bins(count: int, bins: int) -> list[tuple[int, int]]:
    """[lo, hi) index ranges splitting `count` items into at most `bins` consecutive runs."""
    if count <= bins:
        return [(i, i + 1) for i in range(count)]
    edges = [round(i * count / bins) for i in range(bins + 1)]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


# ---- sections -----------------------------------------------------------------------------------------

def _summary(report: ModelReport) -> str:
    fp = report.footprint
    cards = [("parameters", format_count(fp.params), f"{fp.params:,}"),
             ("weight bytes", format_bytes(fp.weight_bytes), f"{fp.weight_bytes:,} B as stored"),
             ("MACs", format_count(fp.macs), f"{fp.macs:,}"),
             ("peak activation RAM", format_bytes(fp.peak_activation_bytes), f"{fp.peak_activation_bytes:,} B arena"),
             ("lower bound", format_bytes(fp.activation_lower_bound_bytes),
              f"{fp.activation_lower_bound_bytes:,} B, no order goes below")]
    html = ['<div class="cards" id="summary">']
    html += [f'<div class="card" data-metric="{escape(name)}"><span>{escape(name)}</span><b>{escape(big)}</b>'
             f'<span>{escape(small)}</span></div>' for name, big, small in cards]
    html.append("</div>")
    inputs = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in fp.inputs.items())
    html.append(f'<p class="sub">inputs: {escape(inputs)} · opset {fp.opset} · {len(fp.layers):,} layers · '
                f'shapes from {escape(fp.shape_source)}</p>')
    if report.check is not None:
        html.append(f'<p class="tier" id="tiers">{escape(render_tier_line(report.check.tiers))}</p>')
    for label, items in (("unknown", fp.unknowns), ("warning", fp.warnings)):
        html += [f'<p class="note">{label}: {escape(item)}</p>' for item in items]
    return "\n".join(html)


def _timeline(report: ModelReport) -> str:
    timeline = report.timeline
    if not timeline.steps:
        return "<p>No activation tensors to plan.</p>"
    live = timeline.live_bytes
    ranges = _bins(timeline.steps, MAX_BARS)
    binned = len(ranges) < timeline.steps
    top = max(timeline.arena_bytes, timeline.file_order_arena_bytes if timeline.file_order_live_bytes else 0,
              timeline.peak_live_bytes, 1)
    plot_h, plot_w = HEIGHT - 40, WIDTH - MARGIN - 8
    bar_w = plot_w / len(ranges)

    def y(value: float) -> float:
        return HEIGHT - 20 - plot_h * value / top

    body = _y_axis(top, "live bytes", format_bytes)
    stacked = not binned and sum(b.last - b.first + 1 for b in timeline.buffers) <= MAX_STACKED_RECTS
    if stacked:
        # Each step's live tensors stacked in creation order, one colour per tensor, so a tensor keeps its colour
        # (and, while the tensors below it live on, its height) across the steps it is alive.
        base = [0] * timeline.steps
        for index, buffer in enumerate(timeline.buffers):
            colour = _PALETTE[index % len(_PALETTE)]
            for step in range(buffer.first, buffer.last + 1):
                top_y, bottom_y = y(base[step] + buffer.bytes), y(base[step])
                body.append(f'<rect x="{MARGIN + step * bar_w:.2f}" y="{top_y:.2f}" width="{max(bar_w - 0.5, 0.5):.2f}" '
                            f'height="{bottom_y - top_y:.2f}" fill="{colour}"><title>{escape(buffer.name)}: '
                            f'{format_bytes(buffer.bytes)} (steps {buffer.first}-{buffer.last})</title></rect>')
                base[step] += buffer.bytes
    for index, (lo, hi) in enumerate(ranges):
        value = max(live[lo:hi])
        label = f"step {lo}" if hi - lo == 1 else f"steps {lo}-{hi - 1}"
        fill = 'fill="none"' if stacked else 'fill="#4e79a7"'
        body.append(f'<rect class="step" data-live-bytes="{value}" x="{MARGIN + index * bar_w:.2f}" y="{y(value):.2f}" '
                    f'width="{max(bar_w - 0.5, 0.5):.2f}" height="{y(0) - y(value):.2f}" {fill}>'
                    f'<title>{label}: {format_bytes(value)} live</title></rect>')
    if timeline.file_order_live_bytes:
        points = " ".join(f"{MARGIN + (i + 0.5) * bar_w:.2f},{y(max(timeline.file_order_live_bytes[lo:hi])):.2f}"
                          for i, (lo, hi) in enumerate(_bins(len(timeline.file_order_live_bytes), MAX_BARS)))
        body.append(f'<polyline class="fileorder" points="{points}"><title>file order: arena '
                    f'{format_bytes(timeline.file_order_arena_bytes)}</title></polyline>')
    bound_y, arena_y = y(timeline.lower_bound_bytes), y(timeline.arena_bytes)
    body.append(f'<line class="bound" x1="{MARGIN}" x2="{WIDTH - 8}" y1="{bound_y:.2f}" y2="{bound_y:.2f}"/>'
                f'<text x="{WIDTH - 8}" y="{bound_y - 4:.2f}" text-anchor="end">lower bound '
                f'{format_bytes(timeline.lower_bound_bytes)}</text>')
    body.append(f'<line class="arena" x1="{MARGIN}" x2="{WIDTH - 8}" y1="{arena_y:.2f}" y2="{arena_y:.2f}"/>'
                f'<text x="{MARGIN + 4}" y="{arena_y - 4:.2f}">arena {format_bytes(timeline.arena_bytes)}</text>')
    peak_names = ", ".join(t.name for t in report.footprint.live_at_peak[:6])
    if timeline.peak_step is not None:
        peak_bin = next(i for i, (lo, hi) in enumerate(ranges) if lo <= timeline.peak_step < hi)
        x = MARGIN + (peak_bin + 0.5) * bar_w
        body.append(f'<line class="peak" x1="{x:.2f}" x2="{x:.2f}" y1="20" y2="{HEIGHT - 20}"><title>peak at step '
                    f'{timeline.peak_step}: {escape(peak_names)}</title></line>')
    attrs = (f'data-peak-bytes="{timeline.arena_bytes}" data-peak-live-bytes="{timeline.peak_live_bytes}" '
             f'data-lower-bound-bytes="{timeline.lower_bound_bytes}" data-steps="{timeline.steps}" '
             f'data-bins="{len(ranges)}" data-peak-step="{timeline.peak_step}"')
    caption = (f"Bytes live at each execution step of the planned order ({timeline.steps:,} steps"
               + (f", shown in {len(ranges)} bins, each its largest step" if binned else "")
               + "; bars stacked by tensor)" if stacked else ")")
    notes = [f'<p class="note">{escape(caption)}. Peak at step {timeline.peak_step} '
             f'({escape(report.footprint.peak_node or "-")}): {escape(peak_names)}. Dashed red: the lower bound; '
             f'dotted: the planned arena.'
             + (f' Red line: file order, whose arena is {escape(format_bytes(timeline.file_order_arena_bytes))}.'
                if timeline.file_order_live_bytes else "") + "</p>"]
    return _chart("timeline", body, attrs) + "\n" + "\n".join(notes)


def _arena(report: ModelReport) -> str:
    timeline = report.timeline
    if not timeline.buffers:
        return ""
    height = 300
    plot_h, plot_w = height - 40, WIDTH - MARGIN - 8
    size = max(timeline.arena_bytes, max(b.offset + b.bytes for b in timeline.buffers), 1)
    drawn = sorted(timeline.buffers, key=lambda b: -b.bytes)[:MAX_ARENA_BUFFERS]
    step_w = plot_w / timeline.steps
    body = _y_axis(size, "arena offset", format_bytes, height)
    for index, buffer in enumerate(drawn):
        x, w = MARGIN + buffer.first * step_w, max((buffer.last - buffer.first + 1) * step_w, 0.5)
        top, h = height - 20 - plot_h * (buffer.offset + buffer.bytes) / size, max(plot_h * buffer.bytes / size, 0.5)
        body.append(f'<rect class="buffer" x="{x:.2f}" y="{top:.2f}" width="{w:.2f}" height="{h:.2f}" '
                    f'fill="{_PALETTE[index % len(_PALETTE)]}" fill-opacity="0.85" stroke="#fff" stroke-width="0.5">'
                    f'<title>{escape(buffer.name)}: {format_bytes(buffer.bytes)} at offset {buffer.offset:,}, '
                    f'steps {buffer.first}-{buffer.last}</title></rect>')
    note = (f"Each buffer drawn where the planner put it: x = its lifetime in steps, y = its offset in the "
            f"{format_bytes(size)} arena." + (f" The largest {len(drawn):,} of {len(timeline.buffers):,} buffers "
                                                f"are drawn." if len(drawn) < len(timeline.buffers) else ""))
    return (_chart("arena", body, f'data-arena-bytes="{size}" data-buffers="{len(drawn)}"', height)
            + f'\n<p class="note">{escape(note)}</p>')


def _layer_bars(chart_id: str, title: str, layers: tuple[LayerStats, ...], values: list[float], fmt) -> str:
    ranges = _bins(len(layers), MAX_BARS)
    totals = [sum(values[lo:hi]) for lo, hi in ranges]
    top = max(totals, default=0) or 1
    bar_w = (WIDTH - MARGIN - 8) / max(len(ranges), 1)
    labelled: set[int] = set()
    for index in sorted((i for i in range(len(totals)) if totals[i]), key=lambda i: -totals[i]):
        # The five largest bars get a name, skipping any whose label would overprint one already placed.
        if len(labelled) < 5 and all(abs(index - other) * bar_w > 110 for other in labelled):
            labelled.add(index)
    body = _y_axis(top, title, fmt)
    for index, ((lo, hi), total) in enumerate(zip(ranges, totals)):
        name = layers[lo].name if hi - lo == 1 else f"{layers[lo].name} … {layers[hi - 1].name} ({hi - lo} layers)"
        h = (HEIGHT - 40) * total / top
        x = MARGIN + index * bar_w
        body.append(f'<rect class="bar" data-value="{_num(total)}" data-first-layer="{lo}" data-layers="{hi - lo}" '
                    f'x="{x:.2f}" y="{HEIGHT - 20 - h:.2f}" width="{max(bar_w - 0.5, 0.5):.2f}" height="{h:.2f}" '
                    f'fill="#4e79a7"><title>{escape(name)} ({escape(layers[lo].op_type)}): {escape(fmt(total))}'
                    f'</title></rect>')
        if index in labelled:
            body.append(f'<text x="{x + bar_w / 2:.2f}" y="{HEIGHT - 24 - h:.2f}" text-anchor="middle">'
                        f'{escape(_short(layers[lo].name if hi - lo == 1 else name))}</text>')
    attrs = f'data-layers="{len(layers)}" data-bins="{len(ranges)}" data-total="{_num(sum(values))}"'
    return f"<h3>{escape(title)}</h3>" + _chart(chart_id, body, attrs)


def _short(name: str, length: int = 22) -> str:
    return name if len(name) <= length else "…" + name[-(length - 1):]


def _layers(report: ModelReport) -> str:
    layers = report.footprint.layers
    if not layers:
        return "<p>No layers.</p>"
    charts = [_layer_bars("layer-macs", "MACs", layers, [l.macs or 0 for l in layers], format_count),
              _layer_bars("layer-weights", "weight bytes", layers, [l.weight_bytes for l in layers], format_bytes),
              _layer_bars("layer-outputs", "output bytes", layers, [l.output_bytes or 0 for l in layers],
                          format_bytes)]
    if report.layer_latency_s:
        charts.append(_layer_bars("layer-latency", f"estimated latency on {report.latency_target}", layers,
                                  list(report.layer_latency_s), lambda s: f"{s * 1e3:.3g} ms"))
    binned = len(layers) > MAX_BARS
    note = ('<p class="note">One bar per layer in execution order' + (
        f"; {len(layers):,} layers are shown in {len(_bins(len(layers), MAX_BARS))} bins of consecutive layers "
        f"(each bar their sum)" if binned else "") + ". The five largest bars are labelled; hover for details.</p>")
    return "\n".join(charts) + note


def _devices(report: ModelReport) -> str:
    if report.check is None or not report.check.targets:
        return "<p>No target was checked (pass <code>--target</code> or <code>--all</code>).</p>"
    header = "".join(f"<th>{h}</th>" for h in ("target", "tier", "precision", "RAM", "flash", "latency", "energy",
                                                "fits", "binding constraint"))
    rows = []
    for result in report.check.targets:
        est = result.estimate
        at_least = "&ge; " if est.latency_is_lower_bound else ""   # some layer's MACs are unknown
        failures = result.failures
        binding = max(failures, key=lambda v: v.overshoot) if failures else None
        binding_text = (f"{METRIC_LABELS.get(binding.metric, binding.metric)} {format_value(binding)} > "
                        f"{format_limit(binding)}" if binding else "")
        rows.append(
            f'<tr data-target="{escape(result.profile.name)}" data-fits="{str(result.fits).lower()}">'
            f"<td>{escape(result.profile.display_name)}<br><span class=\"note\">{escape(result.profile.name)}"
            f"</span></td><td>{escape(result.profile.tier)}</td><td>{escape(est.precision)}</td>"
            f'<td class="num">{escape(format_bytes(est.ram_bytes))}</td>'
            f'<td class="num">{escape(format_bytes(est.flash_bytes))}</td>'
            f'<td class="num">{at_least}{est.latency_s * 1e3:.3g} ms{_latency_context(result)}</td>'
            f'<td class="num">{at_least}{est.energy_j * 1e3:.3g} mJ</td>'
            f'<td class="{"ok" if result.fits else "over"}">{"fits" if result.fits else "does not fit"}</td>'
            f"<td>{escape(binding_text)}</td></tr>")
    return (f'<table id="devices"><thead><tr>{header}</tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
            '<p class="note">Latency, energy and power are estimates (see each target\'s basis in '
            "<code>edgefit check --json</code>), not measurements; &ge; marks a lower bound (a layer's MACs are "
            "unknown). A latency under which a tier band is named had no "
            "budget (<code>--max-latency</code>, <code>--rate</code>): it is context and decides nothing.</p>")


def _latency_context(result) -> str:
    """Under a latency nobody set a budget for: how it sits in its tier's typical band (context, not a verdict)."""
    verdict = result.verdict("latency")
    if verdict is None or verdict.kind != "context" or not describe_band(verdict):
        return ""
    return f'<br><span class="ctx">{escape(describe_band(verdict))}</span>'


def _comparison(report: ModelReport) -> str:
    comparison = report.comparison
    if comparison is None:
        return ""
    before, after = report.footprint, comparison.footprint
    rows = []
    for label, a, b, fmt in (("parameters", before.params, after.params, lambda v: f"{v:,}"),
                             ("weight bytes", before.weight_bytes, after.weight_bytes, format_bytes),
                             ("MACs", before.macs, after.macs, format_count),
                             ("peak activation RAM", before.peak_activation_bytes, after.peak_activation_bytes,
                              format_bytes),
                             ("lower bound", before.activation_lower_bound_bytes, after.activation_lower_bound_bytes,
                              format_bytes),
                             ("layers", len(before.layers), len(after.layers), lambda v: f"{v:,}")):
        change = f"{(b - a) / a * 100:+.1f}%" if a else "-"
        rows.append(f'<tr data-figure="{escape(label)}" data-before="{a}" data-after="{b}"><td>{escape(label)}</td>'
                    f'<td class="num">{escape(fmt(a))}</td><td class="num">{escape(fmt(b))}</td>'
                    f'<td class="num">{change}</td></tr>')
    if report.check is not None and comparison.check is not None:
        for mine, theirs in zip(report.check.targets, comparison.check.targets):
            for metric, a, b, fmt in (("RAM", mine.estimate.ram_bytes, theirs.estimate.ram_bytes, format_bytes),
                                      ("flash", mine.estimate.flash_bytes, theirs.estimate.flash_bytes, format_bytes),
                                      ("latency", mine.estimate.latency_s, theirs.estimate.latency_s,
                                       lambda s: f"{s * 1e3:.3g} ms")):
                change = f"{(b - a) / a * 100:+.1f}%" if a else "-"
                rows.append(f"<tr><td>{escape(metric)} on {escape(mine.profile.name)}</td>"
                            f'<td class="num">{escape(fmt(a))}</td><td class="num">{escape(fmt(b))}</td>'
                            f'<td class="num">{change}</td></tr>')
            rows.append(f"<tr><td>fits {escape(mine.profile.name)}</td><td>{'yes' if mine.fits else 'no'}</td>"
                        f"<td>{'yes' if theirs.fits else 'no'}</td><td></td></tr>")
            basis = describe_latency_basis([mine.estimate, theirs.estimate])
            rows.append(f'<tr><td colspan="4" class="note">{escape(basis)} on {escape(mine.profile.name)}</td></tr>')
    html = [f'<p>Before: {escape(str(before.model_path))} → after: {escape(str(after.model_path))}</p>',
            '<table id="compare"><thead><tr><th>figure</th><th>before</th><th>after</th><th>change</th></tr></thead>'
            "<tbody>" + "".join(rows) + "</tbody></table>"]
    if comparison.fidelity is not None:
        f = comparison.fidelity
        items = [("inputs", f"{f.samples} {f.inputs} samples"), ("cosine", f"{f.cosine:.6f}"),
                 ("SQNR", "identical" if f.identical else f"{f.sqnr_db:.1f} dB"),
                 ("max abs error", f"{f.max_abs_error:.3g}")]
        if f.top1_agreement is not None:
            items.append(("top-1 agreement", f"{f.top1_agreement:.2%}"))
        if f.accuracy_before is not None and f.accuracy_after is not None:
            items.append(("accuracy", f"{f.accuracy_before:.2%} → {f.accuracy_after:.2%}"))
        html.append('<table id="fidelity"><tbody>' + "".join(
            f"<tr><td>{escape(k)}</td><td class=\"num\">{escape(v)}</td></tr>" for k, v in items) + "</tbody></table>")
    changed = [d for d in comparison.layers if d.before is None or d.after is None
               or any(d.change(field) for field in ("macs", "weight_bytes", "output_bytes"))]
    changed.sort(key=lambda d: -abs(d.change("weight_bytes") or 0) - abs(d.change("macs") or 0))
    shown = changed[:200]
    if shown:
        cells = []
        for d in shown:
            status = "removed" if d.after is None else "added" if d.before is None else "changed"
            deltas = "".join(f'<td class="num">{_signed(d.change(field), fmt)}</td>' for field, fmt in
                             (("macs", format_count), ("weight_bytes", format_bytes), ("output_bytes", format_bytes)))
            cells.append(f'<tr class="delta" data-layer="{escape(d.name)}"><td>{escape(d.name)}</td>'
                         f"<td>{escape(d.op_type)}</td><td>{status}</td>{deltas}</tr>")
        html.append("<h3>Per-layer changes</h3>" + '<table id="layer-deltas"><thead><tr><th>layer</th><th>op</th>'
                    "<th></th><th>MACs</th><th>weight bytes</th><th>output bytes</th></tr></thead><tbody>"
                    + "".join(cells) + "</tbody></table>"
                    + (f'<p class="note">The {len(shown)} largest of {len(changed):,} changed layers.</p>'
                       if len(shown) < len(changed) else ""))
    else:
        html.append('<p class="note">No layer changed its MACs, weights or output size.</p>')
    return "\n".join(html)


def _signed(value: int | None, fmt) -> str:
    if value is None:
        return "unknown"
    return "0" if value == 0 else ("+" if value > 0 else "−") + escape(fmt(abs(value)))


def render_page(report: ModelReport) -> str:
    """The whole page as one HTML string."""
    title = report.footprint.model_path or "model"
    sections = [("Summary", _summary(report)), ("Memory timeline", _timeline(report)),
                ("Arena layout", _arena(report)), ("Layers", _layers(report)), ("Devices", _devices(report))]
    if report.comparison is not None:
        sections.append(("Before → after", _comparison(report)))
    body = "\n".join(f'<section><h2>{escape(name)}</h2>\n{html}\n</section>' for name, html in sections if html)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>edgefit report: {escape(title)}</title><style>{_STYLE}</style></head><body>\n"
            f"<h1>edgefit report: {escape(title)}</h1>\n{body}\n"
            f'<p class="note">Made by edgefit; every figure is for the resolved input shapes shown above.</p>\n'
            f"</body></html>\n")
