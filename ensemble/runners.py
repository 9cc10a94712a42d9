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
    # Sets the CPU threads of the next calls (1..the threads it was loaded with), where
    # the framework allows it per call; None: fixed at load time (TensorFlow).
    _set_threads: Callable[[int], None] | None = None

    def __call__(self, batch: np.ndarray) -> Outputs:
        return self._call(batch)

    @property
    def adapts_threads(self) -> bool:
        return self._set_threads is not None

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` intra-op CPU threads from the next call on (no-op where the
        framework fixes them at load time)."""
        if self._set_threads is not None:
            self._set_threads(threads)


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

    def set_threads(n: int) -> None:
        n = max(1, min(threads, n))
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    describe = f"TorchScript with torch {torch.__version__} on {device}"
    return Runner(artifact, device, describe, call, set_threads)


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

    providers: list = ["CPUExecutionProvider"]
    if device.kind == "gpu":
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index}))

    def session_with(n: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads = n
        options.inter_op_num_threads = 1
        # Idle workers sleep instead of spinning: a spinning worker of one instance
        # takes a core from the sibling instance and the pre/post steps.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)

    # onnxruntime fixes a session's threads at creation: one session per thread count
    # used (each holds the weights, 7 MB here), made when first asked for.
    sessions = {threads: session_with(threads)}
    current = [threads]
    session = sessions[threads]
    (inp,) = artifact.inputs
    names = [o.name for o in artifact.outputs]
    # A graph exported with a fixed batch of 1 is run image by image.
    fixed_batch = session.get_inputs()[0].shape[0]
    fixed_batch = fixed_batch if isinstance(fixed_batch, int) else None

    def call(batch: np.ndarray) -> Outputs:
        run = sessions[current[0]].run
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if fixed_batch == 1 and len(batch) != 1:
            parts = [run(names, {inp.name: batch[i : i + 1]}) for i in range(len(batch))]
            return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}
        return dict(zip(names, run(names, {inp.name: batch}), strict=True))

    def set_threads(n: int) -> None:
        n = max(1, min(threads, n))
        if n not in sessions:
            sessions[n] = session_with(n)
        current[0] = n

    used = session.get_providers()[0]
    describe = f"ONNX with onnxruntime {ort.__version__} ({used}) on {device}"
    # On a GPU the CPU threads hardly matter: one session.
    return Runner(artifact, device, describe, call, set_threads if device.kind == "cpu" else None)
