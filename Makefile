# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint bench clean integration

# The environment (about 7 GB: torch and torchvision come from this machine's disk).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	# The PGD reference of the tests; its pin of requests~=2.25 clashes with oxenai's
	# requests>=2.32, and it never imports requests, so it goes in without dependencies.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps torchattacks==3.5.1
	# Migrated MLflow and Prefect databases that new workspaces copy (infra/db_templates.py):
	# a new workspace's first command starts about 10 s of CPU sooner.
	$(BIN)/python -m infra.db_templates
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tai demo

# Every test: the unit tests on two processes (as test-fast), then the tests that train or
# talk to MLflow, Prefect or Oxen, also on two processes, each test file kept on one of them
# (a module's trained champion is shared by its tests; each process has its own Prefect
# temporary server and home, and one torch thread: tests/conftest.py).
test: install
	PYTHONFAULTHANDLER=1 $(BIN)/python -m pytest -m "not slow and not integration" -n 2
	PYTHONFAULTHANDLER=1 $(BIN)/python -m pytest -m "slow or integration" -n 2 --dist loadfile

# Unit tests only: nothing trains, nothing talks to MLflow, Prefect or Oxen (tests/markers.py
# fails a test that does without its marker), on two processes.
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not integration" -n 2

lint: install
	$(BIN)/ruff check flows tai callbacks infra tests benchmarks

# The production stack on this machine (PostgreSQL, MLflow and Prefect servers, the work
# pool's worker, `tai webhook`; see infra/stack/), the end-to-end and fault tests on it,
# and the stack stopped again, also when a test fails.
integration: install
	$(BIN)/python -m infra.stack run --env-file tests/integration/stack.env -- \
		$(BIN)/python -m pytest tests/integration -p no:cacheprovider

bench: install
	$(BIN)/python benchmarks/callback_overhead.py
	$(BIN)/python benchmarks/demo_time.py

clean:
	rm -rf .tai .pytest_cache
