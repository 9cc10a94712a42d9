"""The one reader of Triton's inference statistics, for the page (ui/) and the benchmarks.

Triton keeps cumulative counters per model version since the model was loaded, and
``DetectorClient.inference_statistics()`` returns them as the JSON of
``get_inference_statistics``::

    {"model_stats": [{"name": "pytorch", "version": "1",
                      "inference_count": "8", "execution_count": "5",
                      "inference_stats": {"success": {"count": "5", "ns": "2743273348"},
                                          "queue": {...}, "compute_input": {...},
                                          "compute_infer": {...}, "compute_output": {...},
                                          "fail": {}, "cache_hit": {}, "cache_miss": {}},
                      "batch_stats": [...]}, ...]}

64-bit numbers arrive as strings, and a duration that never counted is ``{}``.
:func:`read_statistics` turns one reply into ``{model: ModelStatistics}`` (versions
summed), and what a model did between two replies is the difference of its two entries
(:func:`between`, or ``after - before`` of two ``ModelStatistics``)::

    before = read_statistics(client.inference_statistics())
    ...  # requests
    after = read_statistics(client.inference_statistics())
    step = between(before, after, "pytorch")
    step.images, step.executions, step.mean_batch          # counts, images per execution
    step.duration("queue").count, step.duration("queue").mean_ms   # runs, ms per run

What the counters mean:

- ``images`` (Triton's ``inference_count``): images answered, each image of a batched
  request counted once;
- ``executions`` (``execution_count``): times the model ran, once per batch the
  dynamic batcher formed;
- a duration of :data:`DURATIONS`: ``count`` requests that went through that phase and
  their ``ns`` nanoseconds in all. A request that the dynamic batcher merged with others
  records the whole batch's duration, so ``mean_ms`` is the time a request spent there.
  ``success`` is a request's time from arrival to response; for an ensemble it is the
  wall time, while its compute phases add up its steps' times. A step's own time is the
  sum of :data:`STEP_PHASES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The durations that make up a step's time on the server, in the order a request goes
# through them: waiting in the model's queue, copying inputs, executing, copying outputs.
STEP_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
# Every duration a reply's ``inference_stats`` may hold: ``success`` and ``fail`` count
# whole requests; the response cache's hits and misses are counted here too.
DURATIONS = ("success", "fail", *STEP_PHASES, "cache_hit", "cache_miss")


@dataclass(frozen=True)
class Duration:
    """One duration's counter: ``count`` requests timed, ``ns`` nanoseconds in all."""

    count: int = 0
    ns: int = 0

    def __sub__(self, earlier: Duration) -> Duration:
        return Duration(self.count - earlier.count, self.ns - earlier.ns)

    def __add__(self, other: Duration) -> Duration:
        return Duration(self.count + other.count, self.ns + other.ns)

    @property
    def mean_ms(self) -> float | None:
        """Milliseconds per request; None when none was counted."""
        return self.ns / self.count / 1e6 if self.count > 0 else None


@dataclass(frozen=True)
class ModelStatistics:
    """One model's counters (its versions summed), or the difference of two readings."""

    images: int = 0  # Triton's inference_count: images answered
    executions: int = 0  # Triton's execution_count: model runs, one per batch
    durations: Mapping[str, Duration] = field(default_factory=dict)  # by DURATIONS name

    def duration(self, name: str) -> Duration:
        """The counter of duration ``name`` (one of :data:`DURATIONS`); zero when the
        reply had none."""
        return self.durations.get(name, Duration())

    @property
    def mean_batch(self) -> float | None:
        """Images per execution; None without executions."""
        return self.images / self.executions if self.executions > 0 else None

    def __sub__(self, earlier: ModelStatistics) -> ModelStatistics:
        """What the model counted since ``earlier``, a reading of the same model."""
        names = self.durations.keys() | earlier.durations.keys()
        return ModelStatistics(
            self.images - earlier.images,
            self.executions - earlier.executions,
            {n: self.duration(n) - earlier.duration(n) for n in names},
        )

    def __add__(self, other: ModelStatistics) -> ModelStatistics:
        names = self.durations.keys() | other.durations.keys()
        return ModelStatistics(
            self.images + other.images,
            self.executions + other.executions,
            {n: self.duration(n) + other.duration(n) for n in names},
        )


def read_statistics(reply: Mapping) -> dict[str, ModelStatistics]:
    """``{model name: ModelStatistics}`` from a ``get_inference_statistics`` JSON reply
    (``DetectorClient.inference_statistics()``), each model's versions summed."""
    models: dict[str, ModelStatistics] = {}
    for stats in reply.get("model_stats", []):
        inference = stats.get("inference_stats", {})
        version = ModelStatistics(
            int(stats.get("inference_count", 0)),
            int(stats.get("execution_count", 0)),
            {
                name: Duration(int(counter.get("count", 0)), int(counter.get("ns", 0)))
                for name, counter in inference.items()
            },
        )
        models[stats["name"]] = models.get(stats["name"], ModelStatistics()) + version
    return models


def between(
    before: Mapping[str, ModelStatistics], after: Mapping[str, ModelStatistics], model: str
) -> ModelStatistics | None:
    """What ``model`` counted between two readings of :func:`read_statistics`; None when
    ``after`` does not list it. A model that ``before`` does not list (loaded in
    between) counts from zero."""
    if model not in after:
        return None
    return after[model] - before.get(model, ModelStatistics())
