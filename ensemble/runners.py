"""Framework runners: execute one converted detector artifact on a batch.

Each runner is built once per Triton model instance and then called with a batch
(numpy, leading batch dimension) of the detector's input; it returns the detector's
outputs by tensor name, as numpy arrays with the same leading batch dimension. The
framework is imported only by the runner that needs it, so a pre-processing step
never pays for importing TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.detectors import DetectorArtifact

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Device:
    """Where a model instance runs: ``kind`` is "cpu" or "gpu", ``index`` the GPU id."""

    kind: str = "cpu"
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"


@dataclass
class Runner:
    artifact: DetectorArtifact
    device: Device
    describe: str  # one line for the log: what was loaded, with what
    _call: Callable[[np.ndarray], Outputs]

    def __call__(self, batch: np.ndarray) -> Outputs:
        return self._call(batch)


def load_runner(artifact: DetectorArtifact, path: Path, device: Device, threads: int) -> Runner:
    loaders = {"pytorch": _torchscript, "tensorflow": _savedmodel, "onnxruntime": _onnx}
    return loaders[artifact.framework.key](artifact, Path(path), device, threads)


def _torchscript(artifact: DetectorArtifact, path: Path, device: Device, threads: int) -> Runner:
    import torch

    torch.set_num_threads(threads)
    target = torch.device("cpu" if device.kind == "cpu" else f"cuda:{device.index}")
    module = torch.jit.load(str(path), map_location=target).eval()
    (output,) = artifact.outputs

    def call(batch: np.ndarray) -> Outputs:
        with torch.inference_mode():
            result = module(torch.from_numpy(np.ascontiguousarray(batch)).to(target))
        return {output.name: result.cpu().numpy()}

    return Runner(artifact, device, f"TorchScript with torch {torch.__version__} on {device}", call)


def _savedmodel(artifact: DetectorArtifact, path: Path, device: Device, threads: int) -> Runner:
    import tensorflow as tf

    # Thread pools and memory growth can only be set before TF initialises its
    # runtime; in a Triton instance that is now. Memory growth keeps each instance
    # from reserving every GPU's whole memory.
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # TF was already initialised in this process (tests load several runners)
    placement = "/CPU:0" if device.kind == "cpu" else f"/GPU:{device.index}"
    with tf.device(placement):
        loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    (inp,) = artifact.inputs
    names = [o.name for o in artifact.outputs]

    def call(batch: np.ndarray) -> Outputs:
        with tf.device(placement):
            result = signature(**{inp.name: tf.constant(batch)})
        return {n: result[n].numpy() for n in names}

    # Keep the loaded object alive: the signature only holds weak references to it.
    call.loaded = loaded  # type: ignore[attr-defined]
    return Runner(
        artifact, device, f"SavedModel with TensorFlow {tf.__version__} on {device}", call
    )


def _onnx(artifact: DetectorArtifact, path: Path, device: Device, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers: list = ["CPUExecutionProvider"]
    if device.kind == "gpu":
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index}))
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    (inp,) = artifact.inputs
    names = [o.name for o in artifact.outputs]
    # A graph exported with a fixed batch of 1 is run image by image.
    fixed_batch = session.get_inputs()[0].shape[0]
    fixed_batch = fixed_batch if isinstance(fixed_batch, int) else None

    def call(batch: np.ndarray) -> Outputs:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if fixed_batch == 1 and len(batch) != 1:
            parts = [session.run(names, {inp.name: batch[i : i + 1]}) for i in range(len(batch))]
            return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}
        return dict(zip(names, session.run(names, {inp.name: batch}), strict=True))

    used = session.get_providers()[0]
    return Runner(
        artifact, device, f"ONNX with onnxruntime {ort.__version__} ({used}) on {device}", call
    )
