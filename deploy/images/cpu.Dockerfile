# The cpu image: Debian 12, the Triton 2.51 server of the nvidia-pytriton wheel with
# the native backends built for it, the project and its built detectors, started by the
# project's launcher as uid 1000.
#
# Build it with `make image TARGET=cpu` (scripts/image.sh): it fetches the wheelhouse
# this file installs from (build/image/wheels, the .venv's versions) and, where no
# registry is reachable, makes debian:bookworm-slim with debootstrap. Context: the
# repository root (.dockerignore lets in only what the image needs).
#
#   podman run --rm --network=host --shm-size=1g -e TRITON_API_KEY=... \
#       localhost/triton-detectors:cpu
#
# listens on 0.0.0.0 (8000 HTTP, 8001 gRPC, 8002 metrics, 8003 supervisor) and writes
# only to /work (the generated repository, logs, the front's files) and /tmp.
FROM debian:bookworm-slim AS base

# python3.11 + libpython3.11: the venv's interpreter, and the library the wheel's
# Python-backend stub links; nginx: the launcher's front; libjemalloc2: Triton's and its
# workers' allocator (the launcher preloads it); tini: PID 1, which passes SIGTERM on to
# the launcher (it drains, then stops Triton) and reaps what Triton's workers leave;
# curl: podman kube play turns the chart's HTTP probes into `curl -f` health checks.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv libpython3.11 nginx libjemalloc2 tini ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log

# The run-time packages at the .venv's versions, from the wheelhouse scripts/image.sh
# made on the host: no index, no network, no layer holding the 1.6 GB of wheels.
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN --mount=type=bind,source=build/image/wheels,target=/wheels \
    python3.11 -m venv $VIRTUAL_ENV \
    && pip install --no-cache-dir --no-index --find-links /wheels \
        --disable-pip-version-check --quiet -r /wheels/requirements.txt

# The project where its code expects it: models.toml, .cache/models and .cache/triton
# next to ensemble/ (the launcher finds them from its own path), on the venv's path
# (a .pth: the Python-backend stub imports ensemble.adapters through the venv too).
WORKDIR /opt/triton-detectors
COPY pyproject.toml models.toml ./
COPY ensemble ensemble
COPY client client
COPY .cache/models .cache/models
# The Triton tree with this interpreter's Python-backend stub (.cache/triton), prepared
# now so that nothing under /opt needs to be written at run time.
RUN echo /opt/triton-detectors > $VIRTUAL_ENV/lib/python3.11/site-packages/triton-detectors.pth \
    && python -m compileall -q ensemble client \
    && python -c "from ensemble.server import triton_home; print('triton:', triton_home()[0])" \
    && python -m ensemble.server --help >/dev/null

# Triton's native pytorch, onnxruntime and tensorflow backends, built against this
# image's own venv in a stage of their own, so that the compiler and the sources stay
# out of the image (python3.11-dev: the pytorch backend's CMake wants Python's headers).
# The sources come from build/image/native-sources (scripts/image.sh
# copies $TRITON_BACKEND_SOURCES there), else from GitHub at the pinned commits; without
# either, the detectors run on their Python runners and the launcher says so.
FROM base AS native
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        cmake g++ make rapidjson-dev googletest patchelf git python3.11-dev \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,source=build/image/native-sources,target=/sources \
    if [ -d /sources/triton-r24.10 ]; then export TRITON_BACKEND_SOURCES=/sources; fi \
    && python -m ensemble.native

FROM base
# The built backends; the server's --backend-directory prepared now (it links the
# Python backend beside them), so that nothing under /opt is written at run time.
COPY --from=native /opt/triton-detectors/.cache/native .cache/native
RUN python -c "from ensemble.server import backend_directory; print('backends:', backend_directory())"

# Non-root: uid 1000 owns only /work (a Kubernetes pod mounts an emptyDir there).
RUN useradd --uid 1000 --user-group --home-dir /work --no-create-home --shell /usr/sbin/nologin triton \
    && mkdir -p /work && chown triton:triton /work
USER 1000:1000
ENV HOME=/work PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

LABEL org.opencontainers.image.title="triton-detectors (cpu)" \
      org.opencontainers.image.description="Object detectors behind Triton ensembles: the pytriton wheel's Triton 2.51 on the CPU, the project's launcher, its built models" \
      org.opencontainers.image.base.name="debian:bookworm-slim"

EXPOSE 8000 8001 8002 8003
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "ensemble.server", "--host", "0.0.0.0", "--workdir", "/work"]
