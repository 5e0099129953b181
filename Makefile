# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint bench clean

$(STAMP): pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@[ -x $(BIN)/python ] || uv venv --quiet --python $(PYTHON) $(VENV)
	uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Start the lab on http://127.0.0.1:8080 with an embedded SQLite database.
run: $(STAMP)
	$(BIN)/servicelab serve

## Install and start what the tests need (PostgreSQL, Docker, Chromium), then run them all.
test: $(STAMP)
	scripts/test.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check servicelab lab_client tests bench
	$(BIN)/mypy servicelab lab_client

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
