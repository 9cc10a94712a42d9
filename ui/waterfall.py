"""The timings of one request as a picture: a waterfall of the ensemble's steps.

Triton's ensemble scheduler runs a step as soon as every tensor it reads exists, so the
step graph in the ensemble's config (each step's ``input_map`` / ``output_map`` values,
the ensemble's own tensor names) says when each step can start. Given each step's mean
duration (``ui.timings``), a step starts when the last of its producers ends and ends
its duration later: the detector chains of ``detect_all`` then lie side by side in
time. The layout is a pure function; the drawing is plain inline SVG (no script), one
bar per step, with a millisecond axis and the client's round trip for comparison.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from client.results import EnsembleStep, ensemble_steps

# --- the step graph ---------------------------------------------------------------


# One step of the ensemble: its model, the tensors it reads and writes.
Step = EnsembleStep


def step_graph(config: Mapping) -> list[Step]:
    """The steps of an ensemble from its config, in the config's order (see
    ``client.results.ensemble_steps``; ``ModelInfo.graph`` holds the same)."""
    return list(ensemble_steps(config))


# --- the layout -------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One step on the time axis, in milliseconds from the request's arrival.

    ``known`` is False when the statistics gave no duration for the step: it is laid out
    as taking no time, and drawn as such.
    """

    model: str
    start_ms: float
    end_ms: float
    known: bool = True

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms


def layout(steps: Sequence[Step], durations_ms: Mapping[str, float | None]) -> list[Bar]:
    """Where each step lies in time: it starts when all the steps producing its inputs
    have ended (0 ms when it reads only the ensemble's inputs) and ends ``durations_ms``
    of its model later. A step whose duration is missing or None takes 0 ms.

    Bars come in the config's order. The scheduler needs producers before consumers
    only in data, not in the config; steps are placed in dependency order whatever
    order the config lists them in. A cycle (which Triton refuses to load) raises
    ``ValueError``.
    """
    producer: dict[str, int] = {}
    for i, step in enumerate(steps):
        for tensor in step.outputs:
            producer[tensor] = i
    deps = [
        {producer[t] for t in step.inputs if t in producer} - {i} for i, step in enumerate(steps)
    ]
    end: dict[int, float] = {}
    bars: dict[int, Bar] = {}
    pending = list(range(len(steps)))
    while pending:
        ready = [i for i in pending if deps[i] <= end.keys()]
        if not ready:
            names = ", ".join(steps[i].model for i in pending)
            raise ValueError(f"the ensemble's steps depend on each other in a cycle: {names}")
        for i in ready:
            start = max((end[d] for d in deps[i]), default=0.0)
            duration = durations_ms.get(steps[i].model)
            known = duration is not None
            end[i] = start + (max(float(duration), 0.0) if known else 0.0)
            bars[i] = Bar(steps[i].model, start, end[i], known)
        pending = [i for i in pending if i not in end]
    return [bars[i] for i in range(len(steps))]


# --- the drawing ------------------------------------------------------------------

ROW_H = 22
BAR_H = 14
LABEL_W = 190
PLOT_W = 440
AXIS_H = 28
COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1")


def _tick_step(span_ms: float) -> float:
    """The smallest round tick interval (1, 2 or 5 times a power of ten ms) that gives
    at most 8 intervals over ``span_ms``."""
    power = 0.1
    while True:
        for factor in (1, 2, 5):
            if span_ms / (factor * power) <= 8:
                return factor * power
        power *= 10


def chain_of(model: str, chains: Sequence[str]) -> int:
    """Colour index: the first of ``chains`` (detector names) that ``model`` names, else 0
    (the shared steps: decoding, fusion)."""
    for i, name in enumerate(chains):
        if name and name in model:
            return i + 1
    return 0


def svg(
    bars: Sequence[Bar],
    round_trip_ms: float | None = None,
    chains: Sequence[str] = (),
    title: str = "",
) -> str:
    """The waterfall as one ``<svg>`` element: a row per bar (``rect.waterfall-bar`` with
    ``data-step`` = the step's model, and its label and duration), an axis in ms, and
    a line for the client's round trip when given. ``chains`` (detector names) colour
    each detector's steps alike."""
    server_ms = max((b.end_ms for b in bars), default=0.0)
    span = max(server_ms, round_trip_ms or 0.0, 1.0)
    scale = PLOT_W / span
    height = AXIS_H + ROW_H * (len(bars) + 1)
    width = LABEL_W + PLOT_W + 70
    esc = html.escape
    parts = [
        # Scales down to its column's width (never up): the text stays in proportion.
        f'<svg xmlns="http://www.w3.org/2000/svg" class="waterfall" width="100%" '
        f'style="max-width:{width}px" viewBox="0 0 {width} {height}" role="img" '
        f'font-family="sans-serif" font-size="11">',
        f"<title>{esc(title or 'Ensemble steps over time (ms)')}</title>",
    ]
    for i, bar in enumerate(bars):
        y = i * ROW_H
        x = LABEL_W + bar.start_ms * scale
        w = max(bar.duration_ms * scale, 1.0)
        colour = COLOURS[chain_of(bar.model, chains) % len(COLOURS)] if bar.known else "#bbb"
        text = f"{bar.duration_ms:.1f} ms" if bar.known else "no runs"
        parts.append(
            f'<text x="{LABEL_W - 6}" y="{y + BAR_H}" text-anchor="end">{esc(bar.model)}</text>'
            f'<rect class="waterfall-bar" data-step="{esc(bar.model)}" '
            f'data-start-ms="{bar.start_ms:.2f}" data-end-ms="{bar.end_ms:.2f}" '
            f'x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{BAR_H}" fill="{colour}">'
            f"<title>{esc(bar.model)}: {bar.start_ms:.1f} to {bar.end_ms:.1f} ms</title></rect>"
            f'<text x="{x + w + 4:.1f}" y="{y + BAR_H}" fill="#444">{text}</text>'
        )
    axis_y = len(bars) * ROW_H + 4
    parts.append(
        f'<line x1="{LABEL_W}" y1="{axis_y}" x2="{LABEL_W + PLOT_W}" y2="{axis_y}" stroke="#888"/>'
    )
    tick = _tick_step(span)
    n = 0
    while n * tick <= span + 1e-9:
        x = LABEL_W + n * tick * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}" stroke="#888"/>'
            f'<text x="{x:.1f}" y="{axis_y + 15}" text-anchor="middle">{n * tick:g}</text>'
        )
        n += 1
    parts.append(f'<text x="{LABEL_W + PLOT_W + 8}" y="{axis_y + 15}">ms</text>')
    legend_y = axis_y + AXIS_H
    legend = f"server steps end at {server_ms:.1f} ms"
    if round_trip_ms is not None:
        x = LABEL_W + round_trip_ms * scale
        parts.append(
            f'<line class="waterfall-round-trip" x1="{x:.1f}" y1="0" x2="{x:.1f}" '
            f'y2="{axis_y}" stroke="#d00" stroke-dasharray="4 3"/>'
        )
        legend += f" · round trip (client, dashed) {round_trip_ms:.1f} ms"
    parts.append(f'<text x="{LABEL_W}" y="{legend_y}" fill="#444">{esc(legend)}</text>')
    parts.append("</svg>")
    return "".join(parts)
