"""The old design, rebuilt as a baseline in two wire formats: one Flask REST server per model.

How the old blog post served its detectors, kept so the benchmark can compare it with
the Triton ensembles on the same machine and models: one process per model
(``python -m bench.old_design --model pytorch --port 18901``, a detector of the models
file), Flask's own server with its defaults (``threaded=True``); the client decodes the
image and POSTs JSON ``{"image": base64 of the raw uint8 RGB bytes, "shape": [h, w,
3]}``; the server runs the project's own preprocess -> model -> postprocess -> draw
(``threads=2``, as the Triton detectors) and answers ``{"detections": [[x1, y1, x2, y2,
score, class_id], ...], "image": ..., "shape": ...}``, boxes in the original's pixels.

The annotated image comes back in one of two wire formats (``--wire``, :data:`WIRES`):
``post``, **the post's design** as published, a float64 array (8 bytes a value: a
768x576 photo is 10.6 MB, 14.2 MB as base64); ``fair``, **the fairer old design**,
uint8 (the request's bytes). The old design also saved each result; this one does not.

Left as the old design had them, though each would make it faster: Flask's development
server (a WSGI server with workers buys isolation, not throughput, on 2 cores); raw
arrays in base64 JSON (a 512x512 photo: 1 MiB of text against 50-100 KiB as JPEG); no
batching of concurrent requests (each thread calls the model with its own 2 threads).
"""

from __future__ import annotations

import argparse
import base64
import binascii
from pathlib import Path

import numpy as np

from bench.pipeline import THREADS, Pipeline, detectors_from_arguments
from ensemble import contract
from ensemble.registry import Detector

# The wire formats (``--wire``) and what the benchmark and its report call each.
POST = "post"
FAIR = "fair"
WIRES = {POST: "the post's design", FAIR: "the fairer old design"}
# dtype of the annotated image in the answer, per wire format (the request is uint8 in both).
ANSWER_DTYPES = {POST: np.dtype(np.float64), FAIR: np.dtype(np.uint8)}


def encode_array(image: np.ndarray, dtype: np.dtype | type = np.uint8) -> dict:
    """An ``(h, w, 3)`` image as the old JSON fields ``image`` (base64 of its raw bytes
    as ``dtype``, native byte order, C order) and ``shape``; pixel values unchanged
    (0-255 also as float64)."""
    image = np.ascontiguousarray(image, dtype=dtype)
    return {"image": base64.b64encode(image.tobytes()).decode("ascii"), "shape": list(image.shape)}


def decode_array(fields: dict, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """The old JSON fields ``image`` and ``shape`` back into an ``(h, w, 3)`` array of
    ``dtype`` (read-only: it views the decoded bytes)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in fields["shape"])
    if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        raise ValueError(f"shape must be [h, w, 3], got {list(shape)}")
    if shape[0] * shape[1] > contract.MAX_IMAGE_PIXELS:
        raise ValueError(f"image of {shape[1]}x{shape[0]} pixels is over the limit")
    raw = base64.b64decode(fields["image"], validate=True)
    if len(raw) != shape[0] * shape[1] * 3 * dtype.itemsize:
        raise ValueError(f"{len(raw)} bytes do not make a {dtype} array of shape {list(shape)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def create_app(detector: Detector, threads: int = THREADS, device: str = "cpu", wire: str = FAIR):
    """The Flask app of one detector; ``wire`` (:data:`WIRES`) picks the annotated
    image's dtype in the answer."""
    from flask import Flask, jsonify, request

    answer_dtype = ANSWER_DTYPES[wire]
    pipeline = Pipeline(detector, threads, device)
    app = Flask(f"old_design.{detector.name}")

    @app.get("/health")
    def health():
        return jsonify(model=detector.name, wire=wire, ready=True)

    @app.post("/predict")
    def predict():
        body = request.get_json(silent=True)
        try:
            image = decode_array(body)
            score = float(body.get("score_threshold", contract.DEFAULT_SCORE_THRESHOLD))
            iou = float(body.get("iou_threshold", contract.DEFAULT_IOU_THRESHOLD))
        except (TypeError, KeyError, ValueError, binascii.Error) as e:
            return jsonify(error=f"bad request: {e}"), 400
        ((detections, drawn),) = pipeline.detect_batch([image], score, iou)
        return jsonify(detections=detections.tolist(), **encode_array(drawn, answer_dtype))

    return app


def add_wire_option(parser: argparse.ArgumentParser) -> None:
    """``--wire``: the answer's format, for the server and for its load alike."""
    parser.add_argument(
        "--wire", choices=list(WIRES), default=FAIR,
        help="annotated image in the answer: post = float64 (the post's design), "
        "fair = uint8 (the fairer old design, default)",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the detector's name in the models file")
    parser.add_argument("--models", type=Path, help="models file (default: models.toml)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="gpu: GPU 0")
    add_wire_option(parser)
    args = parser.parse_args(argv)
    (detector,) = detectors_from_arguments(parser, args.model, args.models)
    app = create_app(detector, args.threads, args.device, args.wire)
    print(
        f"old design ({WIRES[args.wire]}): {args.model} on http://{args.host}:{args.port}/predict",
        flush=True,
    )
    app.run(host=args.host, port=args.port)  # Flask's own server, defaults (threaded=True)


if __name__ == "__main__":
    main()
