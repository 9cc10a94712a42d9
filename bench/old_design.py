"""The old design, rebuilt as a fair baseline: one Flask REST server per model.

This is how the old blog post served its detectors, kept only so the benchmark can
compare it with the Triton ensembles on the same machine and the same models:

- one process per model (``python -m bench.old_design --model pytorch --port 18901``,
  a detector of the models file, ``--models``, default models.toml), started with
  Flask's own development server, ``app.run()`` with its defaults (``threaded=True``:
  one thread per connection, no worker processes);
- the client decodes the image itself and POSTs JSON
  ``{"image": base64 of the raw uint8 RGB bytes, "shape": [h, w, 3]}``;
- the server runs the same preprocess -> model -> postprocess -> draw as the ensemble
  (the project's own functions, the same ``threads=2`` as the Triton detectors) and
  answers JSON ``{"detections": [[x1, y1, x2, y2, score, class_id], ...],
  "image": base64 of the raw annotated RGB bytes, "shape": [h, w, 3]}``, boxes in
  pixels of the original image.

The old design also saved each result to disk; this one writes nothing.

Left as the old design had them, though each would obviously make it faster:

- a production WSGI server (gunicorn / waitress) with several worker processes instead
  of Flask's development server; on 2 cores it mostly buys isolation, not throughput;
- JPEG (or PNG) instead of raw arrays in base64, both ways: a 512x512 photo is 768 KiB
  raw, about 1 MiB as base64 text, against ~50-100 KiB as JPEG;
- a binary body (``application/octet-stream`` or multipart) instead of JSON, which
  costs a base64 encode/decode and a third more bytes;
- batching concurrent requests into one model call, as Triton's dynamic batcher does
  (here each request thread calls the model on its own batch of one; concurrent calls
  run side by side, each with its own 2 framework threads, on the same 2 cores).
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


def encode_array(image: np.ndarray) -> dict:
    """A ``uint8 (h, w, 3)`` array as the old JSON fields ``image`` (base64) and ``shape``."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    return {"image": base64.b64encode(image.tobytes()).decode("ascii"), "shape": list(image.shape)}


def decode_array(fields: dict) -> np.ndarray:
    """The old JSON fields ``image`` and ``shape`` back into a ``uint8`` array."""
    shape = tuple(int(n) for n in fields["shape"])
    if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        raise ValueError(f"shape must be [h, w, 3], got {list(shape)}")
    if shape[0] * shape[1] > contract.MAX_IMAGE_PIXELS:
        raise ValueError(f"image of {shape[1]}x{shape[0]} pixels is over the limit")
    raw = base64.b64decode(fields["image"], validate=True)
    if len(raw) != shape[0] * shape[1] * 3:
        raise ValueError(f"{len(raw)} bytes do not make an array of shape {list(shape)}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def create_app(detector: Detector, threads: int = THREADS, device: str = "cpu"):
    from flask import Flask, jsonify, request

    pipeline = Pipeline(detector, threads, device)
    app = Flask(f"old_design.{detector.name}")

    @app.get("/health")
    def health():
        return jsonify(model=detector.name, ready=True)

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
        return jsonify(detections=detections.tolist(), **encode_array(drawn))

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the detector's name in the models file")
    parser.add_argument("--models", type=Path, help="models file (default: models.toml)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="gpu: GPU 0")
    args = parser.parse_args(argv)
    (detector,) = detectors_from_arguments(parser, args.model, args.models)
    app = create_app(detector, args.threads, args.device)
    print(f"old design: {args.model} on http://{args.host}:{args.port}/predict", flush=True)
    app.run(host=args.host, port=args.port)  # Flask's own server, defaults (threaded=True)


if __name__ == "__main__":
    main()
