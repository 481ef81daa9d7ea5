# Two commands do everything, each with its own set-up on a fresh machine:
#   make demo   - the whole pipeline end to end on embedded defaults
#   make test   - the test suite (starts PostgreSQL if it is down)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-parallel test-fast install lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/inferstream demo

test: $(STAMP)
	./.ci/ensure-postgres
	./.ci/ensure-java
	./.ci/ensure-chromium
	./.ci/ensure-promtool
	$(BIN)/python -m pytest -q --durations=15

# the suite on 2 workers, each with its own session Kafka cluster, SeaweedFS and Prefect
# harness: 372 passed in 21:56 on the 2-core machine where `make test` takes 33-35 min,
# but in another run a heartbeat session expired in a fault test while both workers and
# other work starved it of CPU (1 failed). pytest 9.2 ignores xdist 3.8's --dist loadgroup
# (it renames item._nodeid, which Node.nodeid no longer reads), so the fault tests cannot
# yet be kept off each other; until they are, `make test` stays serial.
test-parallel: $(STAMP)
	./.ci/ensure-postgres
	./.ci/ensure-java
	./.ci/ensure-chromium
	./.ci/ensure-promtool
	$(BIN)/python -m pytest -q -n 2 --durations=15

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
