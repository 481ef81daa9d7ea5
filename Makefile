# Two commands do everything, each with its own set-up on a fresh machine:
#   make demo   - the whole pipeline end to end on embedded defaults
#   make test   - the test suite (starts PostgreSQL if it is down)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-serial test-fast install lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/inferstream demo

# the suite on 2 pytest-xdist workers, each with its own session Kafka cluster,
# SeaweedFS and Prefect harness; the fault tests that a CPU-starved moment can break
# run one after another on one worker (tests/conftest.py, pytest_xdist_make_scheduler)
test: $(STAMP)
	./.ci/ensure-postgres
	./.ci/ensure-java
	./.ci/ensure-chromium
	./.ci/ensure-promtool
	$(BIN)/python -m pytest -q -n 2 --durations=15

# the same suite in one process (about 33 min on a 2-core machine)
test-serial: $(STAMP)
	./.ci/ensure-postgres
	./.ci/ensure-java
	./.ci/ensure-chromium
	./.ci/ensure-promtool
	$(BIN)/python -m pytest -q --durations=15

# the quick loop while developing: everything but the slow end-to-end and fault tests
test-fast: $(STAMP)
	./.ci/ensure-postgres
	./.ci/ensure-java
	$(BIN)/python -m pytest -q -m "not slow" --durations=10

# the packages `make lint` type-checks (mypy --strict with the pydantic plugin, set in pyproject.toml)
MYPY_PACKAGES := api common consumers warehouse monitoring flows inferstream

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy $(MYPY_PACKAGES)

clean:
	rm -rf $(VENV) data reports .pytest_cache
