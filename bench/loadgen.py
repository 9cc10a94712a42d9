"""Closed-loop load on the old design's REST API (:mod:`bench.old_design`).

``bench.load``'s loop with a ``requests.Session`` (one keep-alive connection) per
thread for ``duration_s`` seconds, against the server :func:`old_design_server` starts
on 127.0.0.1.

Each request is what the old design's client did with a photo file: decode it to an
array, base64 it into the JSON body, POST, then parse the JSON answer and turn the
base64 result back into an image array: float64 for the post's design, uint8 for the
fairer old design (``wire``, see :data:`bench.old_design.WIRES`). That client work is
inside the timed latency (Triton's clients send the file as it is and get a JPEG back,
and the server does the decoding and encoding, inside perf_analyzer's latency).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from bench import REPO
from bench.load import ANSWERED, Load, latency_summary
from bench.old_design import ANSWER_DTYPES, FAIR
from bench.processes import spawn, wait_until

HEADERS = {"Content-Type": "application/json"}
TIMEOUT_S = 120.0  # per request


def request_body(photo: bytes) -> bytes:
    """One photo file as the old design's client sent it: decoded, the raw RGB bytes in
    base64 inside a JSON body."""
    from bench.old_design import encode_array
    from ensemble.imaging import decode_image

    return json.dumps(encode_array(decode_image(photo))).encode()


def read_answer(content: bytes, wire: str = FAIR) -> tuple[np.ndarray, np.ndarray]:
    """The old design's JSON answer as the client used it: (detections ``[N, 6]``, the
    annotated image array, of the ``wire`` format's dtype: float64 for the post's
    design, uint8 for the fairer one)."""
    from bench.old_design import decode_array

    answer = json.loads(content)
    detections = np.asarray(answer["detections"], dtype=np.float32).reshape(-1, 6)
    return detections, decode_array(answer, ANSWER_DTYPES[wire])


def _header_bytes(start_line: str, headers) -> int:
    """Approximate size of an HTTP/1.1 head: start line, ``Name: value`` lines, blank line."""
    return len(start_line) + 2 + sum(len(k) + 2 + len(v) + 2 for k, v in headers.items()) + 2


def run(
    url: str,
    photos: Sequence[bytes],
    concurrency: int,
    duration_s: float,
    wire: str,
) -> dict:
    """``bench.load``'s closed loop against ``url`` (the ``/predict`` endpoint), whose
    answers are in the ``wire`` format (:data:`bench.old_design.WIRES`), after two
    requests per thread that are not counted.

    Returns ``wire``, ``concurrency``, ``requests`` (answered OK), ``errors``,
    ``first_error``, ``duration_s``, ``throughput`` (images per second: OK answers over
    the measured wall time), the latency of OK answers (``bench.load.latency_summary``,
    from sending the request to having read the whole answer), and per request on
    average ``request_bytes``, ``response_bytes`` (bodies) and ``wire_bytes`` (both
    bodies plus both HTTP heads, approximately: TCP/IP framing not counted).
    """
    import requests as http

    path = urlsplit(url).path or "/"
    sizes: list[tuple[int, int, int]] = []  # per OK answer: request, response, on the wire

    def connect():
        session = http.Session()

        def send(target: str, photo: bytes) -> None:
            body = request_body(photo)
            response = session.post(target, data=body, headers=HEADERS, timeout=TIMEOUT_S)
            content = response.content
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {content[:200]!r}")
            read_answer(content, wire)
            head = _header_bytes(f"POST {path} HTTP/1.1", response.request.headers)
            head += _header_bytes(f"HTTP/1.1 {response.status_code} OK", response.headers)
            sizes.append((len(body), len(content), len(body) + len(content) + head))

        return send, session.close

    Load(connect, [url], photos, concurrency, requests=concurrency * 2).run()
    sizes.clear()
    load = Load(connect, [url], photos, concurrency, duration_s=duration_s)
    f = load.run().figures()
    errors = [r.error for r in load.records if r.outcome != ANSWERED]
    size = np.array(sizes, dtype=np.float64) if sizes else np.full((1, 3), np.nan)
    return {
        "wire": wire,
        "concurrency": concurrency,
        "requests": f[ANSWERED],
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "duration_s": round(load.seconds, 2),
        "throughput": f["images_per_s"],
        **latency_summary([r.seconds for r in load.records if r.outcome == ANSWERED]),
        "request_bytes": float(size[:, 0].mean()),
        "response_bytes": float(size[:, 1].mean()),
        "wire_bytes": float(size[:, 2].mean()),
        # Anything else on the machine skews the numbers: this says whether it was busy.
        "loadavg_1m_after": os.getloadavg()[0],
    }


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def old_design_server(
    model: str,
    port: int,
    timeout_s: float = 120.0,
    device: str = "cpu",
    models: Path | str | None = None,
    wire: str = FAIR,
) -> Iterator[str]:
    """Start ``python -m bench.old_design`` for the detector ``model`` of the models file
    ``models`` (default: models.toml) on 127.0.0.1:``port`` (the model on ``device``),
    answering in the ``wire`` format; yield the ``/predict`` URL; stop that process
    (SIGTERM, then SIGKILL) on exit."""
    from ensemble.processes import stop_process

    command = [sys.executable, "-m", "bench.old_design", "--model", model, "--port", str(port)]
    command += ["--device", device, "--wire", wire]
    if models is not None:
        command += ["--models", str(Path(models).resolve())]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    process = spawn(command, None, cwd=REPO, env={**os.environ, "PYTHONPATH": path})
    try:
        wait_until(lambda: listening(port), process, timeout_s, "the old-design server")
        yield f"http://127.0.0.1:{port}/predict"
    finally:
        stop_process(process, 10)
