# The ngc image: NVIDIA's Triton server image plus the project, started by the project's
# launcher with --target ngc as uid 1000: four GPUs, the native PyTorch and TensorFlow
# backends, the ONNX detector and the pre/post-processing in the Python backend.
#
# NOT BUILT on the machine this repository was made on: nvcr.io cannot be reached from
# there. Build it with `make image TARGET=ngc` (scripts/image.sh: docker or podman) or
# `docker compose build` on a host that can pull the base image, after `make setup`
# (the built models in .cache/models are copied in). Context: the repository root.
#
# 25.02 is the last release whose image still has the TensorFlow backend (deprecated in
# 25.03, removed afterwards); keep in step with configgen.NGC_IMAGE.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.02-py3
FROM ${TRITON_IMAGE}

# nginx: the launcher's front; libjemalloc2: Triton's allocator (the launcher preloads
# it); tini: PID 1, which passes SIGTERM on to the launcher and reaps orphans; `python`
# as the chart's launcher names it (the cpu image's venv has one); curl for health
# checks made from the chart's HTTP probes (podman kube play).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx libjemalloc2 tini curl \
    && rm -rf /var/lib/apt/lists/* \
    && { command -v python >/dev/null || ln -s python3 /usr/bin/python; }

# What the launcher and the Python-backend models import, into the image's Python 3.12
# (the one its Python-backend stub embeds). Ubuntu 24.04 marks that Python as
# externally managed; this image is its only user.
COPY deploy/images/ngc-requirements.txt /tmp/ngc-requirements.txt
RUN PIP_BREAK_SYSTEM_PACKAGES=1 pip install --no-cache-dir -r /tmp/ngc-requirements.txt \
    && rm /tmp/ngc-requirements.txt

# The project where its code expects it (models.toml and .cache/models next to
# ensemble/); the launcher writes the ngc repository into --workdir at start, linking
# these artifacts. PYTHONPATH reaches the Python-backend stubs too.
WORKDIR /opt/triton-detectors
COPY pyproject.toml models.toml ./
COPY ensemble ensemble
COPY client client
COPY .cache/models .cache/models
ENV PYTHONPATH=/opt/triton-detectors
RUN python3 -m compileall -q ensemble client && python3 -m ensemble.server --help >/dev/null

# Non-root: uid 1000 owns only /work. NVIDIA's image may already have a uid 1000
# (triton-server); it is used as it is.
RUN (getent passwd 1000 >/dev/null \
        || useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin triton) \
    && mkdir -p /work && chown 1000:1000 /work
USER 1000
ENV HOME=/work PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

LABEL org.opencontainers.image.title="triton-detectors (ngc)" \
      org.opencontainers.image.description="Object detectors behind Triton ensembles: NVIDIA's Triton 25.02 on GPUs, the project's launcher, its built models" \
      org.opencontainers.image.base.name="nvcr.io/nvidia/tritonserver:25.02-py3"

EXPOSE 8000 8001 8002 8003
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python3", "-m", "ensemble.server", "--host", "0.0.0.0", "--workdir", "/work", \
     "--target", "ngc", "--gpus", "0,1,2,3"]
