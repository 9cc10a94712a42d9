"""The TensorFlow backend's ``TRITONTF_*`` layer, built against the TensorFlow wheel.

NVIDIA's TensorFlow backend reaches TensorFlow only through ``TRITONTF_*`` functions
(``src/tensorflow_backend_tf.h``), which NVIDIA compiles into its own TensorFlow build;
the PyPI wheel has none. The backend's repository keeps NVIDIA's implementation of them
as a reference, ``mirror/tensorflow_backend_tf.cc``. It compiles against TF 2.21's
headers after four changes, made here at build time on the unpacked (pinned) source:

1. the newer Status API: ``ok()`` and ``message()`` replaced ``code()`` and
   ``error_message()``;
2. string tensors hold ``tensorflow::tstring``, not ``std::string``;
3. no GPU allocator and no CUDA pointer check: the wheel is a CPU build without the
   GPU runtime's headers, and every tensor here is host memory;
4. ``tensorflow/cc/saved_model/tag_constants.h``, which the wheel does not ship, comes
   from our own stand-in (``tag_constants.h`` beside this module).

Each change names the text it expects. When an anchor is missing (upstream changed),
:func:`rewrite` raises :class:`ShimError` naming the change, rather than compiling
something half-patched.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

SHIM_SOURCE = Path("mirror") / "tensorflow_backend_tf.cc"  # in tensorflow_backend/
SHIM_HEADER = Path("src") / "tensorflow_backend_tf.h"
TAG_CONSTANTS = Path(__file__).with_name("tag_constants.h")
# The backend links -l<this>; the library sits next to libtriton_tensorflow.so.
SHIM_LIBRARY = "libtritontf.so"


class ShimError(RuntimeError):
    """The reference source is not the one these changes were written for."""


@dataclass(frozen=True)
class Change:
    name: str
    old: str
    new: str
    count: int = 1  # how often ``old`` must occur


CHANGES = (
    Change(
        "status-api: ok()",
        "if (status__.code() != 0) {",
        "if (!status__.ok()) {",
    ),
    Change(
        "status-api: message()",
        "return TRITONTF_ErrorNew(status__.error_message());",
        "return TRITONTF_ErrorNew(std::string(status__.message()));",
    ),
    Change(
        "cpu-only: GPU headers",
        '#include "tensorflow/core/common_runtime/gpu/gpu_id_utils.h"\n'
        '#include "tensorflow/core/common_runtime/gpu/gpu_mem_allocator.h"\n'
        '#include "tensorflow/core/common_runtime/gpu/gpu_process_state.h"\n',
        "",
    ),
    Change(
        "cpu-only: CUDA runtime header",
        '#include "third_party/gpus/cuda/include/cuda_runtime_api.h"\n',
        "",
    ),
    Change(
        "cpu-only: GPU allocator",
        "  // Only request for GPU allocator for supported data type\n"
        "  auto a = ((tf_gpu_id >= 0) && IsGPUFeedAndFetchSupported(dtype))\n"
        "               ? tensorflow::GPUProcessState::singleton()->GetGPUAllocator(\n"
        "                     tensorflow::GPUOptions(), tensorflow::TfGpuId(tf_gpu_id),\n"
        "                     1 << 28 /* total_memory_size */)\n"
        "               : nullptr;\n"
        "  if (a == nullptr) {\n"
        "    tftensor_ = tensorflow::Tensor(ConvertDataType(dtype), tfshape);\n"
        "  } else {\n"
        "    tftensor_ = tensorflow::Tensor(a, ConvertDataType(dtype), tfshape);\n"
        "  }\n",
        "  tftensor_ = tensorflow::Tensor(ConvertDataType(dtype), tfshape);\n",
    ),
    Change(
        "cpu-only: CUDA pointer check",
        "    cudaPointerAttributes attributes;\n"
        "    cudaError_t err = cudaPointerGetAttributes(&attributes, nonstring_base_);\n"
        "    gpu_tensor_ =\n"
        "        ((err == cudaSuccess) && (attributes.type == cudaMemoryTypeDevice));\n",
        "",
    ),
    Change(
        "tstring: declaration",
        "  const std::string& String(size_t idx) const;",
        "  const tensorflow::tstring& String(size_t idx) const;",
    ),
    Change(
        "tstring: definition",
        "const std::string&\nTensorImpl::String(size_t idx) const",
        "const tensorflow::tstring&\nTensorImpl::String(size_t idx) const",
    ),
    Change(
        "tstring: element access",
        "auto flat = tftensor_.flat<std::string>();",
        "auto flat = tftensor_.flat<tensorflow::tstring>();",
        count=2,
    ),
    Change(
        "tstring: TRITONTF_TensorString",
        "const std::string& str = t->String(idx);",
        "const tensorflow::tstring& str = t->String(idx);",
    ),
)


def rewrite(text: str, changes: tuple[Change, ...] | None = None) -> str:
    """``text`` (NVIDIA's reference source) with every change (default: ``CHANGES``)
    applied; ``ShimError`` naming the first change whose anchor is not there exactly
    ``count`` times."""
    for change in CHANGES if changes is None else changes:
        found = text.count(change.old)
        if found != change.count:
            raise ShimError(
                f"TF shim change {change.name!r}: expected its anchor {change.count} time(s) "
                f"in {SHIM_SOURCE}, found {found}: upstream changed, update ensemble/native/"
                f"tf_shim.py ({change.old.strip().splitlines()[0]!r})"
            )
        text = text.replace(change.old, change.new)
    return text


def prepare(backend_tree: Path, out: Path) -> tuple[Path, Path]:
    """Write the rewritten source and an include folder for it under ``out``: the
    backend's header as ``triton/tensorflow_backend_tf.h`` (where the source includes it
    from) and our stand-in for ``tag_constants.h``. Returns (source, include folder)."""
    include = out / "include"
    (include / "triton").mkdir(parents=True, exist_ok=True)
    shutil.copy2(backend_tree / SHIM_HEADER, include / "triton" / SHIM_HEADER.name)
    saved_model = include / "tensorflow" / "cc" / "saved_model"
    saved_model.mkdir(parents=True, exist_ok=True)
    shutil.copy2(TAG_CONSTANTS, saved_model / TAG_CONSTANTS.name)
    source = out / SHIM_SOURCE.name
    source.write_text(rewrite((backend_tree / SHIM_SOURCE).read_text()))
    return source, include
