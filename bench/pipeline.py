"""One detector's whole request path in one process, for the baselines.

The same functions the ensemble's steps call (decode, family preprocess, runtime
runner, family postprocess, pack, draw, JPEG), without Triton in between, so the old
Flask design and the in-process limit run exactly the code the ensembles serve.
Which detector, with which family, artifact and labels, comes from the models file
(``ensemble.registry``), as for the server. Boxes are ``(x1, y1, x2, y2, score,
class_id)`` in pixels of the original image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ensemble import configgen, contract
from ensemble.boxes import pack_detections
from ensemble.imaging import decode_image, draw_detections, encode_jpeg
from ensemble.registry import Detector, ModelsFileError, load_models
from ensemble.spec import DRAWING

# The Triton detectors' ``threads`` parameter on the cpu target, so both sides get the same.
THREADS = configgen.make_target("cpu").detector_threads
# The JPEG quality of the ensembles' annotated images.
JPEG_QUALITY = int(DRAWING["jpeg_quality"])


def detectors_from_arguments(
    parser: argparse.ArgumentParser,
    name: str,
    models: Path | str | None = None,
) -> tuple[Detector, ...]:
    """The detector called ``name`` in the models file ``models`` (default: models.toml).
    A file that cannot be served, or a name it does not have, ends the command with
    ``parser.error``, in one line naming the detectors the file has."""
    try:
        registry = load_models(models)
    except ModelsFileError as e:
        parser.error(str(e))
    try:
        return (registry[name],)
    except KeyError:
        names = ", ".join(d.name for d in registry.detectors)
        parser.error(f"{registry.source} has no detector {name!r} (it has {names})")


class Pipeline:
    """preprocess -> model -> postprocess -> draw for one detector, loaded once."""

    def __init__(self, detector: Detector, threads: int = THREADS, device: str = "cpu") -> None:
        """``device``: "cpu" or "gpu" (GPU 0), where the model runs."""
        from ensemble.runners import Device, TensorNames, load_runner

        self.detector = detector
        self.family = detector.family
        names = TensorNames(
            detector.inputs[0].name,
            tuple(t.name for t in detector.outputs),
            detector.search_path,
        )
        path = detector.artifact_path()
        self.runner = load_runner(detector.runtime, path, names, Device(device), threads)

    def detect_batch(
        self,
        images: list[np.ndarray],
        score_threshold: float = contract.DEFAULT_SCORE_THRESHOLD,
        iou_threshold: float = contract.DEFAULT_IOU_THRESHOLD,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """RGB ``uint8 (h, w, 3)`` images -> per image (detection rows ``[N, 6]`` in
        original pixels, the image with boxes drawn). One model call for the batch;
        pre- and post-processing per image, as the ensemble's steps do."""
        batch = np.stack([self.family.preprocess(im) for im in images])
        outputs = self.runner(batch)
        results = []
        for i, image in enumerate(images):
            raw = {name: value[i] for name, value in outputs.items()}
            rows = self.family.postprocess(raw, image.shape[:2], score_threshold, iou_threshold)
            packed, count = pack_detections(rows)
            detections = packed[:count]
            results.append((detections, draw_detections(image, detections, self.detector.labels)))
        return results

    def serve_files(self, files: list[bytes]) -> None:
        """What one served request costs per photo file: decode, :meth:`detect_batch`
        (one model call for the batch), and the annotated JPEG at the draw steps' quality."""
        decoded = [decode_image(f) for f in files]
        for _, drawn in self.detect_batch(decoded):
            encode_jpeg(drawn, JPEG_QUALITY)
