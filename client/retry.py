"""When a request is sent again, and where: the client's retry and failover policy.

Four refusals are worth sending again, each its own way:

- Busy (``errors.is_busy``: a full queue): the same request later, with exponential
  backoff and full jitter (``RetryPolicy``), on the next endpoint; after
  ``attempts`` tries, ``ServerBusy``.
- Recovering (``errors.is_recovering``: the model is being reloaded after one of its
  workers died, which takes seconds; ``errors.is_worker_death``: the request reached
  that worker as it died): the same request about every ``contract.RECOVERY_RETRY_S``
  (the server's hint), on the next endpoint, for up to ``RetryPolicy.recovery_s``
  seconds, then ``ModelNotReady``. A request that met a dying worker is sent again at
  most ``WORKER_DEATH_RETRIES`` times: a request that kills the worker itself would
  otherwise kill it again at each try.
- Unreachable (``errors.is_unreachable``: nothing answered): the next endpoint at
  once, a new round after a backoff (``FailoverPolicy``); the endpoint is left out
  for a cooldown (``EndpointPool``); after the rounds, ``ServerUnavailable`` naming
  every endpoint tried. ``send_failing_over`` does both for one request.
- A request of several images that failed because of one of them: each image alone
  (``run_isolating``), so that only the culprit gets the error.

Inference is idempotent (a request's result depends only on the request), so sending
it twice is safe. Any other refusal is the request's own (a bad image, a missing key,
an unknown model) and is never sent again. Waits are in seconds; the clock, the
sleep and the random numbers are passed in, so that tests need not wait.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tritonclient.utils import InferenceServerException

from client.errors import (
    DetectorError,
    InferenceFailed,
    InvalidImage,
    RequestTooLarge,
    ServerUnavailable,
    first_line,
    is_busy,
    is_recovering,
    is_unreachable,
    is_worker_death,
    map_server_error,
)
from client.results import ImageResult, Outcome
from ensemble.contract import RECOVERY_RETRY_S

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a busy server's refusals are retried.

    ``attempts`` counts every try, the first included (1: never retry). Before retry k
    (1, 2, ...) the client waits a random time between 0 and
    ``min(max_delay_s, first_delay_s * 2**(k-1))`` seconds ("full jitter"), so clients
    refused together do not come back together.

    ``recovery_s``: how long, from its first such refusal, a request is sent again while
    its model is being reloaded after a worker crash (about every
    ``contract.RECOVERY_RETRY_S``); 0: never. A reload takes about 10 s on a loaded
    2-core machine.
    """

    attempts: int = 4
    first_delay_s: float = 0.1
    max_delay_s: float = 2.0
    recovery_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if not 0 <= self.first_delay_s <= self.max_delay_s:
            raise ValueError(
                f"need 0 <= first_delay_s <= max_delay_s, got {self.first_delay_s}, "
                f"{self.max_delay_s}"
            )
        if self.recovery_s < 0:
            raise ValueError(f"recovery_s must be at least 0, got {self.recovery_s}")


NO_RETRY = RetryPolicy(attempts=1, recovery_s=0.0)
# Times a request that met a dying worker is sent again (see the module docstring).
WORKER_DEATH_RETRIES = 2


def backoff_ceilings(policy: RetryPolicy) -> list[float]:
    """The longest wait in seconds before each retry: doubling from ``first_delay_s``,
    capped at ``max_delay_s``; ``attempts - 1`` of them."""
    return [
        min(policy.max_delay_s, policy.first_delay_s * 2**k) for k in range(policy.attempts - 1)
    ]


def backoff_delays(policy: RetryPolicy, rng: random.Random) -> list[float]:
    """The waits in seconds before each retry: uniform in ``[0, ceiling]`` (full jitter)."""
    return [rng.uniform(0.0, ceiling) for ceiling in backoff_ceilings(policy)]


@dataclass(frozen=True)
class FailoverPolicy:
    """How a request goes on when an endpoint does not answer (gRPC UNAVAILABLE, not
    busy: connection refused or reset, a server gone or draining).

    The request is sent to the next endpoint at once; when every endpoint of a round
    failed, the client waits before the next round, with the backoff and full jitter of
    ``RetryPolicy`` (``first_delay_s`` doubling up to ``max_delay_s``), and gives up
    after ``rounds`` rounds: at most ``rounds`` tries per endpoint. With one endpoint a
    round is one try. An endpoint that failed is left out of the rounds of every request
    for ``cooldown_s`` seconds, unless every endpoint is cooling down.
    """

    rounds: int = 4
    first_delay_s: float = 0.1
    max_delay_s: float = 2.0
    cooldown_s: float = 5.0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s must be at least 0, got {self.cooldown_s}")
        self.backoff  # noqa: B018 - checks the delays

    @property
    def backoff(self) -> RetryPolicy:
        """The waits between rounds, as a ``RetryPolicy`` (see ``backoff_delays``)."""
        return RetryPolicy(self.rounds, self.first_delay_s, self.max_delay_s)


@dataclass
class EndpointStats:
    """What one endpoint did for a client: ``sent`` tries, of which ``unreachable`` found
    nothing answering (the rest got a reply, a result or an error), ``busy`` were
    refused as busy and ``recovering`` met a model being brought back after a worker
    crash (or the dying worker): the server's refusals, whether sent again or not."""

    sent: int = 0
    unreachable: int = 0
    busy: int = 0
    recovering: int = 0

    @property
    def answered(self) -> int:
        return self.sent - self.unreachable


class EndpointPool:
    """The rotation over endpoints and their cooldowns; safe to share between threads.

    ``next_round()`` is the order in which one request tries them: the healthy ones (not
    cooling down), starting one further along at each call (round robin), or all of
    them when every one is cooling down. ``failed(e)`` starts ``e``'s cooldown of
    ``cooldown_s`` seconds (``clock`` is in seconds), ``answered(e)`` ends it.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        cooldown_s: float = FailoverPolicy.cooldown_s,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not endpoints:
            raise ValueError("an endpoint pool needs at least one endpoint")
        self.endpoints = tuple(endpoints)
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._turn = 0
        self._cool_until: dict[str, float] = {}
        self._stats = {e: EndpointStats() for e in self.endpoints}

    def next_round(self) -> list[str]:
        with self._lock:
            now = self._clock()
            healthy = [e for e in self.endpoints if self._cool_until.get(e, now) <= now]
            order = healthy or list(self.endpoints)
            start = self._turn % len(order)
            self._turn += 1
        return order[start:] + order[:start]

    def cooling(self) -> list[str]:
        """The endpoints cooling down now."""
        with self._lock:
            now = self._clock()
            return [e for e in self.endpoints if self._cool_until.get(e, now) > now]

    def sent(self, endpoint: str) -> None:
        with self._lock:
            self._stats[endpoint].sent += 1

    def failed(self, endpoint: str) -> None:
        with self._lock:
            self._stats[endpoint].unreachable += 1
            self._cool_until[endpoint] = self._clock() + self.cooldown_s

    def answered(self, endpoint: str, refusal: str | None = None) -> None:
        """``endpoint`` answered (``refusal``: ``"busy"`` or ``"recovering"``, counted)."""
        with self._lock:
            self._cool_until.pop(endpoint, None)
            if refusal is not None:
                stats = self._stats[endpoint]
                setattr(stats, refusal, getattr(stats, refusal) + 1)

    def stats(self) -> dict[str, EndpointStats]:
        """A copy of each endpoint's counts, by endpoint."""
        with self._lock:
            return {e: dataclasses.replace(s) for e, s in self._stats.items()}


def send_failing_over(
    call: Callable[[str], T],
    pool: EndpointPool,
    *,
    failover: FailoverPolicy = FailoverPolicy(),  # noqa: B008 - frozen
    retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen
    error: Callable[[InferenceServerException, str, int], DetectorError] | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    what: str = "request",
) -> T:
    """``call(endpoint)`` on the endpoints of ``pool`` until one answers.

    Only for calls that may be sent twice: an endpoint may have done the work before
    its connection broke. Unreachable (``is_unreachable``): the next endpoint of the
    round, then a new round after a backoff (``failover``); when its rounds are spent,
    ``ServerUnavailable`` naming every endpoint tried and the last reason. Busy
    (``is_busy``): a new round, so the next endpoint, after ``retry``'s backoff; after
    ``retry.attempts`` busy refusals, ``error(exc, endpoint, refusals)``. Recovering
    (``is_recovering``, ``is_worker_death``): a new round after about
    ``RECOVERY_RETRY_S``, for ``retry.recovery_s`` seconds (``clock``), then
    ``error(...)``. Any other refusal is the request's own (a bad image, a missing key,
    an unknown model) and is raised at once as ``error(exc, endpoint, 1)``, never sent
    elsewhere. ``error`` defaults to ``map_server_error``.
    """
    if error is None:

        def error(exc: InferenceServerException, endpoint: str, attempts: int) -> DetectorError:
            return map_server_error(exc, url=endpoint, attempts=attempts)

    rng = rng or random.Random()
    round_waits = backoff_delays(failover.backoff, rng)
    busy_waits = backoff_delays(retry, rng)
    tried: dict[str, None] = {}  # insertion-ordered set
    tries = busy = unreachable_rounds = deaths = 0
    recovering_until: float | None = None
    while True:
        for endpoint in pool.next_round():
            pool.sent(endpoint)
            tries += 1
            try:
                result = call(endpoint)
            except InferenceServerException as e:
                if is_unreachable(e):
                    pool.failed(endpoint)
                    tried[endpoint] = None
                    last, last_reason = endpoint, e.message() or str(e)
                    log.info("%s: %s unreachable (%s)", what, endpoint, first_line(last_reason))
                    continue
                if is_recovering(e) or is_worker_death(e):
                    pool.answered(endpoint, "recovering")
                    deaths += is_worker_death(e)
                    now = clock()
                    if recovering_until is None:
                        recovering_until = now + retry.recovery_s
                    if now >= recovering_until or deaths > WORKER_DEATH_RETRIES:
                        raise error(e, endpoint, tries) from None
                    wait = min(rng.uniform(0.5, 1.0) * RECOVERY_RETRY_S, recovering_until - now)
                    log.info(
                        "%s refused, %s is bringing the model back (%s); again in %.2f s",
                        what, endpoint, first_line(e.message() or str(e)), wait,
                    )  # fmt: skip
                    sleep(wait)
                    break  # a new round: the next endpoint
                if not is_busy(e):
                    pool.answered(endpoint)
                    raise error(e, endpoint, busy + 1) from None
                pool.answered(endpoint, "busy")
                busy += 1
                if busy >= retry.attempts:
                    raise error(e, endpoint, busy) from None
                log.info(
                    "%s refused, %s busy (%s); try %d of %d in %.2f s",
                    what, endpoint, first_line(e.message() or str(e)), busy + 1,
                    retry.attempts, busy_waits[busy - 1],
                )  # fmt: skip
                sleep(busy_waits[busy - 1])
                break  # a new round: the next endpoint
            pool.answered(endpoint)
            return result
        else:  # every endpoint of the round was unreachable
            unreachable_rounds += 1
            if unreachable_rounds >= failover.rounds:
                raise ServerUnavailable(last, last_reason, endpoints=list(tried), attempts=tries)
            sleep(round_waits[unreachable_rounds - 1])


# Failures of a request that may be due to one of its images.
_PER_IMAGE_ERRORS = (InvalidImage, InferenceFailed, RequestTooLarge)


def run_isolating(
    ids: list[int], run: Callable[[list[int]], list[ImageResult]]
) -> dict[int, Outcome]:
    """Outcome per image of sending ``ids`` in one request with ``run``.

    When the request fails (``InvalidImage``, ``InferenceFailed``, ``RequestTooLarge``),
    each image is sent alone so that only the culprits get an error and the others
    still get their result: Triton fails a whole request when one of its images is bad.
    ``ServerUnavailable``, ``ServerBusy``, ``ModelNotReady`` and ``ApiKeyRequired``
    concern every image and propagate.
    """
    try:
        return dict(zip(ids, run(ids), strict=True))
    except _PER_IMAGE_ERRORS as e:
        if len(ids) == 1:
            return {ids[0]: e}
    outcomes: dict[int, Outcome] = {}
    for i in ids:
        try:
            outcomes[i] = run([i])[0]
        except _PER_IMAGE_ERRORS as e:
            outcomes[i] = e
    return outcomes
