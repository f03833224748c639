# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
# The suite is mostly end-to-end tests that wait on real processes; one pytest process per core
# halves its time. Each test file stays in one process (its fixtures start their own servers).
TEST_PROCS ?= 2
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit clean bench

$(STAMP): pyproject.toml
	@./.ci/ensure-venv "$(PYTHON)" "$(VENV)"
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/routeq demo

lint: $(STAMP)
	$(BIN)/ruff check jobs worker tests bench
	$(BIN)/ruff format --check jobs worker tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	@./.ci/ensure-browser
	$(BIN)/pytest -q -n $(TEST_PROCS) --dist loadfile

unit: $(STAMP)
	$(BIN)/pytest -q -m 'not integration'

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
