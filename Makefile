# Commands, in the order a newcomer runs them. Each depends on `setup`, which is
# cached and quick once done; `test-unit` needs only the virtual environment.
PY := .venv/bin/python
HOST ?= 127.0.0.1
TARGET ?= gpu
GPUS ?= 0,1,2,3
# The models file to serve: make serve MODELS=my-models.toml
MODELS ?= models.toml
# The native backends' threads on the CPU: make serve PROFILE=latency (default throughput)
PROFILE ?=

.PHONY: setup venv demo models serve ui test test-unit bench bench-native soak clip-soak lint \
	configs repository image chart cluster

setup:            ## install everything (apt + .venv) and build the bundled models
	@scripts/setup.sh

venv:             ## only the virtual environment (no apt, no model build)
	@scripts/setup.sh venv

# A page on another HOST needs a login: DEMO_USERNAME + DEMO_PASSWORD in the environment,
# AUTH_FILE=users.txt (user:password lines), or NO_AUTH=1 to open it on purpose.
demo: setup       ## start Triton and the web demo together; prints the demo's URL
	$(PY) -m ui --serve --models $(MODELS) --host $(HOST) $(if $(PROFILE),--cpu-profile $(PROFILE)) \
		$(if $(AUTH_FILE),--auth-file $(AUTH_FILE)) $(if $(NO_AUTH),--no-auth)

models: setup     ## (re)build the bundled detectors; FORCE=1 rebuilds from nothing
	$(PY) -m ensemble.recipes $(if $(FORCE),--force)

# Beyond localhost: API_KEY_FILE=key.txt (else $$TRITON_API_KEY, else a new build/api-key),
# TLS_CERT=cert.pem TLS_KEY=key.pem for TLS on gRPC and HTTP.
serve: setup      ## start Triton on the CPU (gRPC 8001, HTTP 8000, metrics 8002, supervisor 8003)
	$(PY) -m ensemble.server --models $(MODELS) --host $(HOST) $(if $(PROFILE),--cpu-profile $(PROFILE)) \
		$(if $(API_KEY_FILE),--api-key-file $(API_KEY_FILE)) \
		$(if $(TLS_CERT),--tls-cert $(TLS_CERT) --tls-key $(TLS_KEY))

ui: setup         ## the web demo alone, on any Triton: make ui TRITON_URL=gpu-host:8001
	$(PY) -m ui --host $(HOST) $(if $(TRITON_URL),--url $(TRITON_URL))

test: setup       ## the whole suite, against a real server it starts itself
	$(PY) -m pytest

test-unit: venv   ## the unit tier: no model build, no server; seconds
	$(PY) -m pytest -m unit

bench: setup      ## perf_analyzer vs the old Flask design vs the limit: make bench [QUICK=1] [URL=host:8001]
	$(PY) -m bench $(if $(QUICK),--quick) $(if $(URL),--url $(URL))

bench-native: setup ## native backends vs the Python runners, alternating rounds: make bench-native [ROUNDS=2] [QUICK=1]
	$(PY) -m bench.native $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(QUICK),--quick)

# make soak: minutes of load at a concurrency; KILL=<model> kills its workers at KILL_AT s.
MINUTES ?= 10
CONCURRENCY ?= 16
KILL ?=
KILL_AT ?=
soak: setup       ## load over every ensemble, memory, kill recovery: make soak [MINUTES=10] [CONCURRENCY=16] [KILL=postprocess_pytorch|tritonserver [KILL_AT=120]]
	$(PY) -m bench.soak --minutes $(MINUTES) --concurrency $(CONCURRENCY) --models $(MODELS) \
		$(if $(KILL),--kill $(KILL)) $(if $(KILL_AT),--kill-at $(KILL_AT)) $(if $(URL),--url $(URL))

# make clip-soak: clip uploads through the web demo; memory and temporary files after each.
UPLOADS ?= 50
clip-soak: setup  ## the web demo's memory and temporary files over clip uploads: make clip-soak [UPLOADS=50] [URL=host:8001]
	$(PY) -m bench.clip_uploads --uploads $(UPLOADS) --models $(MODELS) $(if $(URL),--url $(URL))

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

configs: venv     ## regenerate model_repository/ from models.toml
	$(PY) -m ensemble.configgen --update

repository: setup ## write a deployable repository: make repository TARGET=gpu GPUS=0,1,2,3 [MODELS=...]
	$(PY) -m ensemble.configgen --models $(MODELS) --target $(TARGET) --gpus $(GPUS) --link-artifacts

# Scaling out (docs/scaling-out.md): container images, the Helm chart, a local cluster.
image: setup      ## container images: make image TARGET=cpu (podman) | ngc; TARGET=check | kube runs the cpu one
	scripts/image.sh $(if $(filter command line environment,$(origin TARGET)),$(TARGET),cpu)

chart: venv       ## render the Helm chart with each value set; validate it (Kubernetes 1.29-1.33)
	$(PY) -m cluster.chart

REPLICAS ?= 3
cluster: setup    ## replicas behind HAProxy + Prometheus, as the chart runs them: make cluster [REPLICAS=3] [QUICK=1]
	$(PY) -m cluster --replicas $(REPLICAS) $(if $(QUICK),--quick)
