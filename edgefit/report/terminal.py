"""Rich terminal rendering of a Footprint."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from edgefit.analysis.footprint import Footprint
from edgefit.analysis.timeline import live_bytes_per_step
from edgefit.report.quantities import format_bytes, format_count


def _shape(shape: list[int] | None) -> str:
    return "unknown" if shape is None else "x".join(str(d) for d in shape) or "scalar"


def _maybe(value: int | None, fmt) -> str:
    return "unknown" if value is None else fmt(value)


def render_footprint(console: Console, fp: Footprint, *, per_layer: bool = False, top: int = 10,
                     tier_line: str | None = None) -> None:
    title = fp.model_path or "model"
    summary = Table(title=f"edgefit analyze: {escape(title)}", show_header=False, title_justify="left")
    summary.add_column("metric", style="bold")
    summary.add_column("value", justify="right")
    summary.add_column("note", style="dim")
    summary.add_row("inputs", escape(", ".join(f"{n} {_shape(s)}" for n, s in fp.inputs.items())), fp.shape_source)
    summary.add_row("outputs", escape(", ".join(f"{n} {_shape(s)}" for n, s in fp.outputs.items())), f"opset {fp.opset}")
    summary.add_row("parameters", f"{fp.params:,}", format_count(fp.params))
    summary.add_row("weight bytes", f"{fp.weight_bytes:,}", format_bytes(fp.weight_bytes) + " as stored")
    summary.add_row("MACs", f"{fp.macs:,}", format_count(fp.macs))
    summary.add_row("FLOPs", f"{fp.flops:,}", format_count(fp.flops))
    summary.add_row("peak activation RAM", f"{fp.peak_activation_bytes:,}",
                    f"{format_bytes(fp.peak_activation_bytes)} arena, best order, {fp.alignment}-byte aligned")
    summary.add_row("  in file order", f"{fp.file_order_peak_bytes:,}", format_bytes(fp.file_order_peak_bytes))
    if fp.shared_storage_peak_bytes is not None:
        summary.add_row("  with shared storage", f"{fp.shared_storage_peak_bytes:,}",
                        format_bytes(fp.shared_storage_peak_bytes) + " (runtimes that alias views / work in place)")
    summary.add_row("  lower bound", f"{fp.activation_lower_bound_bytes:,}",
                    format_bytes(fp.activation_lower_bound_bytes) + " (no schedule can go below)")
    summary.add_row("peak set by", escape(fp.peak_node or "-"), "")
    console.print(summary)
    line = memory_sparkline(fp, width=min(60, max(console.width - 45, 10)),
                            unicode=console.encoding.lower().startswith("utf"))
    if line:
        console.print(line)

    if fp.weight_bytes_by_dtype:
        dtypes = Table(title="Weights by dtype", title_justify="left")
        dtypes.add_column("dtype")
        dtypes.add_column("params", justify="right")
        dtypes.add_column("bytes", justify="right")
        for dtype, nbytes in sorted(fp.weight_bytes_by_dtype.items(), key=lambda kv: -kv[1]):
            dtypes.add_row(dtype, f"{fp.params_by_dtype.get(dtype, 0):,}", format_bytes(nbytes))
        console.print(dtypes)

    if per_layer:
        console.print(_layer_table("Layers (execution order)", fp.layers))
    else:
        by_macs = sorted((l for l in fp.layers if l.macs), key=lambda l: -(l.macs or 0))[:top]
        by_memory = sorted(fp.layers, key=lambda l: -(l.output_bytes or 0))[:top]
        if by_macs:
            console.print(_layer_table(f"Top {len(by_macs)} layers by MACs", by_macs))
        console.print(_layer_table(f"Top {len(by_memory)} layers by output memory", by_memory))

    ops = Table(title="Op histogram", title_justify="left")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, count in fp.op_histogram.items():
        ops.add_row(escape(op), str(count))
    console.print(ops)

    if fp.live_at_peak:
        live = Table(title=f"Tensors live at the peak ({escape(fp.peak_node or '-')})", title_justify="left")
        live.add_column("tensor")
        live.add_column("bytes", justify="right")
        for tensor in fp.live_at_peak[:top]:
            live.add_row(escape(tensor.name), format_bytes(tensor.bytes))
        console.print(live)

    # The outermost control flow last: it decides what the inner lines count.
    shown = fp.control_flow[-top:] if top else ()
    for note in shown:
        console.print(Text(f"control flow: {note}", style="cyan"))
    if len(fp.control_flow) > len(shown):
        console.print(Text(f"control flow: {len(fp.control_flow) - len(shown)} more If/Loop/Scan decisions in --json",
                           style="cyan"))
    for warning in fp.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    for reason in fp.unknowns:
        console.print(Text(f"unknown: {reason}", style="magenta"))
    if tier_line:
        console.print(Text(tier_line, style="bold"))


_BLOCKS = "▁▂▃▄▅▆▇█"
_ASCII_LEVELS = "_.-:=+*#"


def memory_sparkline(fp: Footprint, *, width: int = 60, unicode: bool = True) -> Text | None:
    """Live activation bytes over the execution steps as one line of block characters (ASCII levels where the
    terminal cannot draw them), each character the largest step it covers, so the peak always shows."""
    live = live_bytes_per_step(fp.buffers)
    if not live:
        return None
    edges = [round(i * len(live) / width) for i in range(width + 1)] if len(live) > width else list(range(len(live) + 1))
    values = [max(live[lo:hi]) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    top = max(values) or 1
    levels = _BLOCKS if unicode else _ASCII_LEVELS
    chars = "".join(levels[min(len(levels) - 1, value * len(levels) // (top + 1))] for value in values)
    line = Text("memory  ", style="bold")
    line.append(chars, style="cyan")
    line.append(f"  {len(live):,} steps, peak {format_bytes(top)} live", style="dim")
    return line


def _layer_table(title: str, layers) -> Table:
    table = Table(title=title, title_justify="left")
    for column, justify in (("layer", "left"), ("op", "left"), ("params", "right"), ("MACs", "right"),
                            ("FLOPs", "right"), ("output", "right"), ("dtype", "left")):
        table.add_column(column, justify=justify)
    for layer in layers:
        table.add_row(escape(layer.name), escape(layer.op_type), f"{layer.params:,}", _maybe(layer.macs, format_count),
                      _maybe(layer.flops, format_count), _maybe(layer.output_bytes, format_bytes), layer.dtype)
        for branch, numbers in layer.branches.items():
            detail = ", ".join(f"{k} {v if v is not None else 'unknown'}" for k, v in numbers.items())
            table.add_row(escape(f"  └ {branch}"), "", "", "", "", "", escape(detail))
    return table
