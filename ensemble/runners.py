"""Runtime runners: execute one detector artifact on a batch, whatever its framework.

Each runner is built once per Triton model instance and then called with a batch
(numpy, leading batch dimension) of the detector's input; it returns the detector's
outputs by the tensor names its family gives them, as numpy arrays with the same
leading batch dimension. An artifact whose own tensor names differ (a user's export)
is bound by position: its first input, its outputs in order. The framework is imported
only by the runner that needs it, so a pre-processing step never pays for importing
TensorFlow.

A user's own model code (runtime ``python``) is a ``.py`` file with a class ``Model``:
``Model(artifact_dir: Path, device: str, threads: int)``, called with the batch and
returning its outputs as a dict by name, or an array / tuple of arrays in output order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorNames:
    """The names the model config gives the detector's tensors."""

    input: str
    outputs: tuple[str, ...]
    search_path: tuple[str, ...] = ()  # where a python-runtime model imports from


def produced_outputs(
    result: Any, to_numpy: Callable[[Any], np.ndarray] = np.asarray
) -> list[tuple[str, np.ndarray]]:
    """``(name, array)`` pairs of what a model returned: a dict's items, a list or
    tuple's elements named by position, or one array named ``"0"``."""
    if isinstance(result, dict):
        return [(str(name), to_numpy(value)) for name, value in result.items()]
    if isinstance(result, list | tuple):
        return [(str(i), to_numpy(value)) for i, value in enumerate(result)]
    return [("0", to_numpy(result))]


def by_name_or_position(names: tuple[str, ...], produced: list[tuple[str, np.ndarray]]) -> Outputs:
    """The artifact's outputs under the config's names: by name where every name is
    among them, else by position (a user's export names them its own way)."""
    found = dict(produced)
    if all(n in found for n in names):
        return {n: found[n] for n in names}
    if len(produced) < len(names):
        raise RuntimeError(
            f"the model returned {len(produced)} outputs ({', '.join(found)}), the config "
            f"expects {len(names)} ({', '.join(names)})"
        )
    return {n: value for n, (_, value) in zip(names, produced, strict=False)}


@dataclass(frozen=True)
class Device:
    """Where a model instance runs: ``kind`` is "cpu" or "gpu", ``index`` the GPU id."""

    kind: str = "cpu"
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"


@dataclass
class Runner:
    names: TensorNames
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


def load_runner(
    runtime: str, path: Path, names: TensorNames, device: Device, threads: int
) -> Runner:
    """The runner of ``runtime`` (a key of ``ensemble.registry.RUNTIMES``) on ``path``."""
    loaders = {
        "torchscript": _torchscript,
        "savedmodel": _savedmodel,
        "onnx": _onnx,
        "python": _python,
    }
    if runtime not in loaders:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(loaders)}")
    return loaders[runtime](names, Path(path), device, threads)


def _torchscript(names: TensorNames, path: Path, device: Device, threads: int) -> Runner:
    import torch

    torch.set_num_threads(threads)
    target = torch.device("cpu" if device.kind == "cpu" else f"cuda:{device.index}")
    module = torch.jit.load(str(path), map_location=target).eval()

    def call(batch: np.ndarray) -> Outputs:
        with torch.inference_mode():
            result = module(torch.from_numpy(np.ascontiguousarray(batch)).to(target))
        produced = produced_outputs(result, lambda tensor: tensor.cpu().numpy())
        return by_name_or_position(names.outputs, produced)

    def set_threads(n: int) -> None:
        n = max(1, min(threads, n))
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    describe = f"TorchScript with torch {torch.__version__} on {device}"
    return Runner(names, device, describe, call, set_threads)


def _savedmodel(names: TensorNames, path: Path, device: Device, threads: int) -> Runner:
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
    _, keywords = signature.structured_input_signature
    if len(keywords) != 1:
        raise ValueError(f"{path}: serving_default takes {len(keywords)} inputs, not one")
    (input_name, input_spec) = next(iter(keywords.items()))
    # The outputs in the order the signature lists them (its dict is sorted by name).
    output_order = list(signature.structured_outputs)

    def call(batch: np.ndarray) -> Outputs:
        with tf.device(placement):
            result = signature(**{input_name: tf.constant(batch, dtype=input_spec.dtype)})
        produced = [(n, result[n].numpy()) for n in output_order]
        return by_name_or_position(names.outputs, produced)

    # Keep the loaded object alive: the signature only holds weak references to it.
    call.loaded = loaded  # type: ignore[attr-defined]
    return Runner(names, device, f"SavedModel with TensorFlow {tf.__version__} on {device}", call)


def _onnx(names: TensorNames, path: Path, device: Device, threads: int) -> Runner:
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
        # A memory pattern is planned, and kept in the arena, per input shape: CenterNet
        # held 580 MB after runs of batch 1, 4 and 8 with patterns, 420 MB without, at
        # the same speed.
        options.enable_mem_pattern = False
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)

    # onnxruntime fixes a session's threads at creation: one session per thread count
    # used (each holds the weights, 7 MB here), made when first asked for.
    sessions = {threads: session_with(threads)}
    current = [threads]
    session = sessions[threads]
    (model_input,) = session.get_inputs()[:1]
    dtype = _ONNX_DTYPES.get(model_input.type, np.float32)
    own_outputs = [o.name for o in session.get_outputs()]
    fixed_batch = model_input.shape[0]
    fixed_batch = fixed_batch if isinstance(fixed_batch, int) else None

    def run_once(batch: np.ndarray) -> list[np.ndarray]:
        return sessions[current[0]].run(own_outputs, {model_input.name: batch})

    # A graph exported with a fixed batch of 1 is run image by image; on the CPU, a
    # batch runs in slices of ONNX_CPU_RUN_BATCH images (see there).
    step = 1 if fixed_batch == 1 else ONNX_CPU_RUN_BATCH if device.kind == "cpu" else None

    def call(batch: np.ndarray) -> Outputs:
        batch = np.ascontiguousarray(batch, dtype=dtype)
        if step is not None and len(batch) > step:
            parts = [run_once(batch[i : i + step]) for i in range(0, len(batch), step)]
            results = [np.concatenate([p[k] for p in parts]) for k in range(len(own_outputs))]
        else:
            results = run_once(batch)
        return by_name_or_position(names.outputs, list(zip(own_outputs, results, strict=True)))

    def set_threads(n: int) -> None:
        n = max(1, min(threads, n))
        if n not in sessions:
            sessions[n] = session_with(n)
        current[0] = n

    used = session.get_providers()[0]
    describe = f"ONNX with onnxruntime {ort.__version__} ({used}) on {device}"
    # On a GPU the CPU threads hardly matter: one session.
    return Runner(names, device, describe, call, set_threads if device.kind == "cpu" else None)


# The most images one ONNX Runtime run takes on the CPU. Its arena keeps the memory of
# the largest run it has seen for good: CenterNet's two instances held 0.4-0.6 GB each
# after a batch of 8, 216 MB each after load in runs of 2, 175 MB in runs of 1; and a
# CPU gains nothing from batches (in process, 2 threads: 19.2, 20.1, 19.2 and 20.2
# images/s at batch 1, 2, 4 and 8; at c=8 side by side, 21.1 images/s in runs of 1
# against 20.0 in runs of 2).
ONNX_CPU_RUN_BATCH = 1

_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8,
                "tensor(float16)": np.float16, "tensor(int32)": np.int32}  # fmt: skip


def _python(names: TensorNames, path: Path, device: Device, threads: int) -> Runner:
    """A user's own model: class ``Model`` of the ``.py`` file at ``path``."""
    import importlib.util

    from ensemble.families import add_import_path

    add_import_path(names.search_path)
    module_spec = importlib.util.spec_from_file_location(f"user_model_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "Model"):
        raise ImportError(f"{path} has no class Model")
    model = module.Model(path.resolve().parent, str(device), threads)

    def call(batch: np.ndarray) -> Outputs:
        return by_name_or_position(names.outputs, produced_outputs(model(batch)))

    return Runner(names, device, f"Python model {path.resolve().name} on {device}", call)
