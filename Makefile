# Commands, in the order a newcomer runs them. Each depends on `setup`, which is
# cached and quick once done.
PY := .venv/bin/python
HOST ?= 127.0.0.1
TARGET ?= gpu
GPUS ?= 0,1,2,3

.PHONY: setup demo models serve ui test bench lint configs repository

setup:            ## install everything (apt + .venv) and build the models
	@scripts/setup.sh

demo: setup       ## start Triton and the web demo together; prints the demo's URL
	$(PY) -m ui --serve --host $(HOST)

models: setup     ## (re)build the converted detectors; FORCE=1 rebuilds from nothing
	$(PY) -m ensemble.build $(if $(FORCE),--force)

serve: setup      ## start Triton on the CPU (gRPC 8001, HTTP 8000, metrics 8002)
	$(PY) -m ensemble.server --host $(HOST)

ui: setup         ## the web demo alone, on any Triton: make ui TRITON_URL=gpu-host:8001
	$(PY) -m ui --host $(HOST) $(if $(TRITON_URL),--url $(TRITON_URL))

test: setup       ## run the whole test suite against a real server it starts itself
	$(PY) -m pytest

bench: setup      ## perf_analyzer vs the old Flask design vs the limit: make bench [QUICK=1] [URL=host:8001]
	$(PY) -m bench $(if $(QUICK),--quick) $(if $(URL),--url $(URL))

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

configs: setup    ## regenerate model_repository/ from ensemble/spec.py
	$(PY) -m ensemble.configgen --update

repository: setup ## write a deployable repository: make repository TARGET=gpu GPUS=0,1,2,3
	$(PY) -m ensemble.configgen --target $(TARGET) --gpus $(GPUS) --models-dir .cache/models
