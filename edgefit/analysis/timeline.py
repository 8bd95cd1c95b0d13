"""The activation memory of one inference over time: bytes live at every execution step, and where the arena
planner put each buffer. What `edgefit report` draws and `analyze` sketches as a sparkline.

A step is one node of the planned execution order. Live bytes at a step are the buffers whose lifetime
[first, last] covers it; the arena is at least their sum at every step and the planner's fragmentation makes up the
rest. Graphs with more steps than a chart can show are summarised in bins: each bin keeps the largest live total of
the steps it covers, so the peak survives binning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgefit.analysis.footprint import Footprint
from edgefit.analysis.memory import Buffer, plan_arena


@dataclass(frozen=True)
class PlacedBuffer:
    name: str
    bytes: int
    first: int       # step that creates it
    last: int        # last step that reads it
    offset: int      # where the planner put it in the arena


@dataclass(frozen=True)
class MemoryTimeline:
    steps: int                              # execution steps (nodes) of the planned order
    live_bytes: tuple[int, ...]             # bytes live at each step, planned order
    file_order_live_bytes: tuple[int, ...] | None   # the same in file order; None when file order is the plan
    peak_step: int | None                   # step with the most live bytes (earliest of equals)
    peak_live_bytes: int
    arena_bytes: int                        # the planned arena (>= peak_live_bytes)
    file_order_arena_bytes: int
    lower_bound_bytes: int
    buffers: tuple[PlacedBuffer, ...]       # sorted by first step

    def binned(self, values: Sequence[int], bins: int) -> tuple[int, ...]:
        """`values` (one per step) reduced to at most `bins` values, each the maximum of the steps it covers."""
        if len(values) <= bins:
            return tuple(values)
        edges = np.linspace(0, len(values), bins + 1).astype(int)
        return tuple(int(np.max(values[lo:hi])) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo)

    def to_dict(self) -> dict[str, object]:
        return {"steps": self.steps, "peak_step": self.peak_step, "peak_live_bytes": self.peak_live_bytes,
                "arena_bytes": self.arena_bytes, "file_order_arena_bytes": self.file_order_arena_bytes,
                "lower_bound_bytes": self.lower_bound_bytes, "live_bytes": list(self.live_bytes),
                "file_order_live_bytes": None if self.file_order_live_bytes is None
                else list(self.file_order_live_bytes)}


def live_bytes_per_step(buffers: Sequence[Buffer]) -> tuple[int, ...]:
    """Bytes live at every step, by a difference array: O(buffers + steps) however long the lifetimes are."""
    if not buffers:
        return ()
    steps = max(b.last for b in buffers) + 1
    delta = np.zeros(steps + 1, dtype=np.int64)
    np.add.at(delta, [b.first for b in buffers], [b.bytes for b in buffers])
    np.add.at(delta, [b.last + 1 for b in buffers], [-b.bytes for b in buffers])
    return tuple(int(v) for v in np.cumsum(delta[:-1]))


def memory_timeline(footprint: Footprint) -> MemoryTimeline:
    """Live bytes per step in the planned order (and in file order when that differs) and the arena layout."""
    buffers = footprint.buffers
    live = live_bytes_per_step(buffers)
    file_order = None
    if footprint.file_order_peak_bytes != footprint.peak_activation_bytes:
        file_order = live_bytes_per_step(footprint.file_order_buffers())
    offsets = plan_arena(buffers, footprint.alignment).offsets
    placed = tuple(sorted((PlacedBuffer(b.name, b.bytes, b.first, b.last, offsets[b.name]) for b in buffers),
                          key=lambda b: (b.first, b.offset)))
    peak_step = int(np.argmax(live)) if live else None
    return MemoryTimeline(
        steps=len(live), live_bytes=live, file_order_live_bytes=file_order, peak_step=peak_step,
        peak_live_bytes=max(live, default=0), arena_bytes=footprint.peak_activation_bytes,
        file_order_arena_bytes=footprint.file_order_peak_bytes,
        lower_bound_bytes=footprint.activation_lower_bound_bytes, buffers=placed)
