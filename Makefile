# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-slow venv clean sysdeps

venv: $(STAMP)

# System packages the tests need (cross compilers, qemu-user, llvm tools): scripts/sysdeps.sh
# installs whatever is missing (apt-get, as root) and is a no-op when all is there.
sysdeps:
	bash scripts/sysdeps.sh

# torch is pinned exactly: a range would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m sparsec.demo

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
