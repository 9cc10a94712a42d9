#!/usr/bin/env bash
# Pack what `scripts/gpu_bench.sh` needs on a GPU host that has Python 3.12, torch,
# onnxruntime, opencv and scikit-image but no Triton, no tritonclient, no Flask and no
# network (such as the lent H100 machine). Run it here, after `make setup` (it reads the
# project's .venv and .cache); it writes two archives under .gpu/ (ignored by git):
#
#   .gpu/bundle.tar.xz  (~40 MB)
#     site/      the Triton 2.51 server from the nvidia-pytriton 0.7.0 wheel, laid out as
#                that wheel installs (dist-info, pytriton/tritonserver, nvidia_pytriton.libs)
#                but slimmed: only the Python 3.12 stub and only the bundled libraries that
#                tritonserver, the Python backend, its stub and the local cache need (ldd)
#     perf_analyzer/  .cache/perf_analyzer as bench/perf_analyzer.py lays it out: the
#                perf_analyzer binary of tritonclient 2.51.0 and libcudart.so.12
#     lib/       libb64.so.0d (Debian's libb64-0d), which perf_analyzer links
#     models/    the built nanodet_m and centernet_mobilenetv3 artifacts and manifest.json;
#                ssd_mobilenet_v2/model.savedmodel is an empty placeholder (TensorFlow is not
#                on the GPU host: detect_tensorflow and detect_all are not served there)
#   .gpu/py.tar.xz      (~15 MB) wheels for CPython 3.12 x86-64, unpacked
#     py/        tritonclient 2.73.0 (grpc), python-rapidjson, flask 3.1.3, itsdangerous,
#                blinker (werkzeug, click, jinja2 are on the host)
#     np1/       numpy 1.26.4 (tests removed): the 2.51 Python-backend stub is built with a
#                pybind11 that predates numpy 2, so the server's models get it first on
#                their path ($TRITON_PYTHONPATH); the rest of the benchmark keeps the host's
#     opt/       grpcio 1.85.1 and protobuf 6.33.6, used only if the host's are older than
#                tritonclient 2.73's generated code needs
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TREE=$SITE/pytriton/tritonserver
LIBS=$SITE/nvidia_pytriton.libs
DL=.gpu/downloads
STAGE=.gpu/stage
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
rm -rf "$STAGE"
mkdir -p "$DL" "$STAGE"

# --- Triton server, slimmed ---------------------------------------------------------
S=$STAGE/b/site
mkdir -p "$S/pytriton/tritonserver/backends/python" "$S/pytriton/tritonserver/python_backend_stubs" \
  "$S/nvidia_pytriton.libs" "$S/nvidia_pytriton-0.7.0.dist-info"
cp -a "$TREE/bin" "$TREE/caches" "$S/pytriton/tritonserver/"
cp -a "$TREE/backends/python/libtriton_python.so" "$TREE/backends/python/triton_python_backend_utils.py" \
  "$S/pytriton/tritonserver/backends/python/"
cp -a "$TREE/python_backend_stubs/3.12" "$S/pytriton/tritonserver/python_backend_stubs/"
cp "$SITE"/nvidia_pytriton-0.7.0.dist-info/{METADATA,WHEEL} "$S/nvidia_pytriton-0.7.0.dist-info/"
# The bundled libraries those four binaries need, transitively (by DT_NEEDED).
todo=("$S/pytriton/tritonserver/bin/tritonserver" "$S/pytriton/tritonserver/backends/python/libtriton_python.so"
  "$S/pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub"
  "$S/pytriton/tritonserver/caches/local/libtritoncache_local.so")
while ((${#todo[@]})); do
  f=${todo[-1]}; unset 'todo[-1]'
  for n in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    if [[ -e $LIBS/$n && ! -e $S/nvidia_pytriton.libs/$n ]]; then
      cp -a "$LIBS/$n" "$S/nvidia_pytriton.libs/"
      todo+=("$S/nvidia_pytriton.libs/$n")
    fi
  done
done

# --- perf_analyzer, libb64, models --------------------------------------------------
P=$STAGE/b/perf_analyzer
mkdir -p "$P/tritonclient-2.51.0/bin" "$P/cuda-runtime/nvidia/cuda_runtime/lib" "$STAGE/b/lib"
cp -a .cache/perf_analyzer/tritonclient-2.51.0/bin/perf_analyzer "$P/tritonclient-2.51.0/bin/"
cp -a .cache/perf_analyzer/cuda-runtime/nvidia/cuda_runtime/lib/libcudart.so.12 \
  "$P/cuda-runtime/nvidia/cuda_runtime/lib/"
cp -L /usr/lib/x86_64-linux-gnu/libb64.so.0d "$STAGE/b/lib/"
M=$STAGE/b/models
mkdir -p "$M/nanodet_m" "$M/centernet_mobilenetv3" "$M/ssd_mobilenet_v2/model.savedmodel"
cp -a .cache/models/nanodet_m/model.pt "$M/nanodet_m/"
cp -a .cache/models/centernet_mobilenetv3/model.onnx "$M/centernet_mobilenetv3/"
cp -a .cache/models/manifest.json "$M/"

# --- Python 3.12 wheels, unpacked ---------------------------------------------------
get() {  # get DEST REQUIREMENT...: cp312 manylinux wheels (no dependencies), unpacked into DEST
  local dest=$1; shift
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$DL/$dest" "$@"
  mkdir -p "$STAGE/p/$dest"
  for w in "$DL/$dest"/*.whl; do unzip -q -o "$w" -d "$STAGE/p/$dest"; done
}
get py tritonclient==2.73.0 python-rapidjson==1.25 flask==3.1.3 itsdangerous==2.2.0 blinker==1.9.0
get np1 numpy==1.26.4
get opt grpcio==1.85.1 protobuf==6.33.6
find "$STAGE/p/np1" -type d -name tests -prune -exec rm -rf {} +

tar -C "$STAGE/b" -cf - site perf_analyzer lib models | xz -9e -T2 > .gpu/bundle.tar.xz
tar -C "$STAGE/p" -cf - py np1 opt | xz -9 -T2 > .gpu/py.tar.xz
rm -rf "$STAGE"
ls -l .gpu/bundle.tar.xz .gpu/py.tar.xz
