"""A lab's own model code (``runtime = "python"``): runs the YOLO export with ONNX Runtime.

The server builds ``Model(artifact_dir, device, threads)`` once per instance, where
``artifact_dir`` is this file's folder, and calls it with each batch (float32
``[B, 3, 320, 320]``, the ``yolo`` family's input); it returns the outputs by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class Model:
    def __init__(self, artifact_dir: Path, device: str, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        path = Path(artifact_dir) / "models" / "shapes.onnx"
        self.session = ort.InferenceSession(str(path), options, ["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        (output,) = self.session.run(None, {"images": batch.astype(np.float32)})
        return {"output0": output}
