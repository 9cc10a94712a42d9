#!/usr/bin/env bash
# `python -m bench --target gpu` on a GPU host that has Python 3.12 with torch (CUDA),
# onnxruntime, opencv-python-headless, scikit-image and matplotlib, but no Triton, no
# tritonclient, no Flask, no TensorFlow and no network (the lent H100 machine was one).
#
#   here:      scripts/gpu_bundle.sh                    # -> .gpu/bundle.tar.xz, .gpu/py.tar.xz
#   GPU host:  scripts/gpu_bench.sh OUT [bench args]    # e.g. results/gpu --quick
#
# Copy the repository with .gpu/ to the GPU host and run this there as root (it puts
# libb64.so.0d in /usr/local/lib when ldconfig does not know it). It unpacks the bundle
# into .gpu/x, points the project at it and runs
#   python -m bench --target gpu --gpus 0 --ensembles detect_pytorch detect_onnxruntime
# The TensorFlow ensembles are left out (no TensorFlow on the host; the repository's
# SavedModel is an empty placeholder that is never loaded: bench starts Triton with only
# the ensembles it measures). ONNX Runtime runs with whatever provider the host's
# onnxruntime has (a CPU-only build: CPUExecutionProvider; Triton's log says which).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:?usage: scripts/gpu_bench.sh OUT_DIR [bench args]}
shift
PY=${PYTHON:-python3}
G=$PWD/.gpu/x
say() { echo "[gpu_bench] $*"; }

if [[ ! -f $G/.unpacked ]]; then
  rm -rf "$G" && mkdir -p "$G"
  tar -xJf .gpu/bundle.tar.xz -C "$G"
  tar -xJf .gpu/py.tar.xz -C "$G"
  touch "$G/.unpacked"
fi

# perf_analyzer where bench/perf_analyzer.py looks for it (.cache/perf_analyzer), and the
# system library it links.
mkdir -p .cache
[[ -d .cache/perf_analyzer ]] || cp -a "$G/perf_analyzer" .cache/perf_analyzer
if ! ldconfig -p | grep -q 'libb64.so.0d'; then
  cp "$G/lib/libb64.so.0d" /usr/local/lib/ && ldconfig
fi

# The models bench and Triton use (ensemble.recipes.models_dir()).
export DETECTOR_MODELS_DIR=$G/models

# The 3.12 Python-backend stub links libpython3.12.so.1.0: find it if ldconfig does not.
if ! ldconfig -p | grep -q 'libpython3.12.so.1.0'; then
  base=$("$PY" -c 'import sys, sysconfig; print(sysconfig.get_config_var("LIBDIR") or sys.base_prefix + "/lib")')
  lib=$(find "$base" /usr/lib /usr/local/lib /opt -name 'libpython3.12.so.1.0' 2>/dev/null | head -1 || true)
  [[ -n $lib ]] || { say "no libpython3.12.so.1.0 on this host: the Python backend cannot start"; exit 3; }
  export LD_LIBRARY_PATH=$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  say "libpython3.12 from $lib"
fi

# A virtual environment layered on the host's Python packages. The Python-backend stub
# runs an isolated interpreter (PYTHONPATH is ignored) that takes its packages from the
# virtual environment of the first `python3` on PATH, which ensemble/server.py makes the
# benchmark's own interpreter; so both see the same path, set by a .pth file here:
# numpy 1.26 (np1: the 2.51 stub predates numpy 2), the server tree (found as the
# nvidia-pytriton distribution), tritonclient and Flask (py), this repository (the
# server's models import `ensemble`), then the host's site-packages.
V=$G/venv
[[ -x $V/bin/python3 ]] || "$PY" -m venv --without-pip "$V"
SITE_PACKAGES=$("$V/bin/python3" -c 'import site; print(site.getsitepackages()[0])')
HOST_SITES=$("$PY" -c 'import site; print("\n".join(f"import site; site.addsitedir({d!r})" for d in site.getsitepackages()))')
write_pth() { # write_pth DIR...: those folders first, then the host's site-packages
  printf '%s\n' "$@" "$HOST_SITES" > "$SITE_PACKAGES/gpu_bench.pth"
}
DIRS=("$G/site" "$G/py" "$PWD")
write_pth "${DIRS[@]}"
# tritonclient 2.73's generated code needs grpcio >= 1.81.1 and protobuf 6 >= 6.33.5.
GRPC_CHECK='
import grpc, google.protobuf as pb
v = lambda s: tuple(int(x) for x in s.split(".")[:3])
assert v(grpc.__version__) >= (1, 81, 1) and (6, 33, 5) <= v(pb.__version__) < (7,)'
if ! "$V/bin/python3" -c "$GRPC_CHECK" 2>/dev/null; then
  say "the host's grpcio/protobuf do not fit tritonclient 2.73: using the bundled ones"
  DIRS=("$G/opt" "${DIRS[@]}")
fi
write_pth "$G/np1" "${DIRS[@]}"
CHECK='import numpy, cv2, torch, onnxruntime, skimage.data, matplotlib.pyplot, tritonclient.grpc, flask'
if ! "$V/bin/python3" -c "$CHECK; assert numpy.__version__ < '2'"; then
  say "the host's packages do not import with numpy 1.26: keeping the host's numpy (the 2.51 stub may fail on it)"
  write_pth "${DIRS[@]}"
  "$V/bin/python3" -c "$CHECK"
fi

"$V/bin/python3" -c 'import numpy, torch, onnxruntime as o, grpc
print("[gpu_bench]", f"numpy {numpy.__version__}, torch {torch.__version__} (CUDA {torch.cuda.is_available()}),",
      f"onnxruntime {o.__version__} {o.get_available_providers()}, grpcio {grpc.__version__}")'
export PYTHONUNBUFFERED=1
"$V/bin/python3" -m bench --target gpu --gpus 0 --ensembles detect_pytorch detect_onnxruntime \
  --out "$OUT_DIR" "$@"
