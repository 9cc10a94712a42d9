"""Server time per ensemble step, from two snapshots of Triton's statistics.

Triton keeps cumulative counters per model (requests and nanoseconds spent queued and
computing). Every step of an ensemble is a model of its own, so the difference of two
snapshots taken around one request gives the time each step took, averaged over the
runs that happened in between. When several users send requests at once, that window
holds their runs too: the numbers are means over every run during the request, and the
UI labels them so. No lock is needed or held: a snapshot is one gRPC call that only
reads.

Which models are an ensemble's steps is the server's to say: the caller passes the step
model names from the ensemble's own config (``client.ModelInfo.steps``, in the config's
order), so any detector a models file adds is timed like the bundled ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from client.errors import first_line
from client.statistics import STEP_PHASES, ModelStatistics, read_statistics

log = logging.getLogger(__name__)

# An ensemble's own compute phases add up its steps' times (including the steps that
# ran in parallel), so its wall time is ``success``: arrival to response, per request.
# A step's time is the sum of its ``STEP_PHASES`` (client.statistics).
TOTAL_PHASES = ("success",)

ROUND_TRIP = "round trip (client)"

# Every model's counters at one moment: client.statistics.read_statistics of a reply.
Snapshot = dict[str, ModelStatistics]


@dataclass(frozen=True)
class StepRow:
    """One step model of an ensemble: its Triton model name and runs per request."""

    model: str
    runs: int  # how often one request runs it (1 for every step of today's ensembles)

    @property
    def label(self) -> str:
        return self.model if self.runs == 1 else f"{self.model} (×{self.runs}, mean per run)"


def ensemble_steps(steps: Sequence[str]) -> list[StepRow]:
    """The distinct step models of an ensemble whose config lists ``steps`` (step model
    names in the config's order), in the order their last run starts.

    Ordered by last occurrence so that a step an ensemble runs several times comes
    where its final run does (none does today: each result is drawn by the step that
    produces it).
    """
    models = list(steps)
    last = {m: i for i, m in enumerate(models)}
    return [StepRow(m, models.count(m)) for m in sorted(last, key=last.__getitem__)]


def mean_ms(
    before: Snapshot, after: Snapshot, model: str, phases: Sequence[str] = STEP_PHASES
) -> float | None:
    """Mean milliseconds per run of ``model`` between two snapshots; None without runs
    (or when either snapshot lacks the model).

    The mean of each phase over its own runs, summed over ``phases``. A request that a
    dynamic batcher merged with others records the whole batch's duration, so this is
    the time a request spent in the step, not the batch's time divided by its size.
    """
    if model not in before or model not in after:
        return None
    counted = after[model] - before[model]
    means = [counted.duration(phase).mean_ms for phase in phases]
    return None if None in means else sum(means)


def missing_steps(
    before: Snapshot, after: Snapshot, ensemble: str, steps: Sequence[str]
) -> list[str]:
    """Step models of ``ensemble`` (its config's ``steps``), and the ensemble itself,
    that show no completed run between the snapshots."""
    models = [s.model for s in ensemble_steps(steps)] + [ensemble]
    return [m for m in models if mean_ms(before, after, m, TOTAL_PHASES) is None]


def timing_rows(
    round_trip_s: float,
    ensemble: str,
    steps: Sequence[str] = (),
    before: Snapshot | None = None,
    after: Snapshot | None = None,
) -> list[list]:
    """Rows ``[step, ms]`` of the timings table.

    ``round_trip_s`` is the client's wall time in seconds; ``steps`` are the ensemble's
    step model names from its config. First the round trip, then (given both
    snapshots) the ensemble's own time on the server and one row per distinct step
    model, in milliseconds rounded to 0.1; a step with no run in the window has ``None``.
    """
    rows: list[list] = [[ROUND_TRIP, round(round_trip_s * 1000, 1)]]
    if before is None or after is None:
        return rows

    def ms(model: str, phases: Sequence[str]) -> float | None:
        value = mean_ms(before, after, model, phases)
        return None if value is None else round(value, 1)

    rows.append([f"server total ({ensemble})", ms(ensemble, TOTAL_PHASES)])
    rows += [[step.label, ms(step.model, STEP_PHASES)] for step in ensemble_steps(steps)]
    return rows


def step_durations(
    before: Snapshot | None, after: Snapshot | None, steps: Sequence[str]
) -> dict[str, float | None]:
    """Mean milliseconds per run of each distinct step model between the snapshots
    (None for a step without a run, or for all when a snapshot is missing): the
    durations ``ui.waterfall.layout`` lays out."""
    models = [s.model for s in ensemble_steps(steps)]
    if before is None or after is None:
        return dict.fromkeys(models)
    return {m: mean_ms(before, after, m, STEP_PHASES) for m in models}


def snapshot(client: Any) -> Snapshot | None:
    """All models' counters now, from ``client.inference_statistics()`` (a
    ``DetectorClient``); None when the statistics API fails, which is never fatal."""
    try:
        return read_statistics(client.inference_statistics())
    except Exception as e:
        log.warning("server statistics unavailable: %s", first_line(str(e)))
        return None


def settled(
    client: Any,
    before: Snapshot | None,
    model: str,
    steps: Sequence[str],
    retries: int = 5,
    wait_s: float = 0.02,
) -> Snapshot | None:
    """The counters after a request to ``model`` (None when ``before`` is): a step's
    counters are updated as it finishes, which can come a moment after the reply, so a
    snapshot still missing a step is taken again, up to ``retries`` times ``wait_s``
    apart, rather than show a hole."""
    if before is None:
        return None
    after = snapshot(client)
    for _ in range(retries):
        if after is None or not missing_steps(before, after, model, steps):
            break
        time.sleep(wait_s)
        after = snapshot(client)
    return after
