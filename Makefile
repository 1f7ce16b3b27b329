# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# Every dependency is pinned in constraints.txt so a fresh clone installs what CI tested.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
# `make dist` builds the wheels into $(DIST).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DIST ?= dist
WHEEL := $(DIST)/twilio_conversations-$(VERSION)-py3-none-any.whl

.PHONY: demo test test-stress test-newest newest-venv test-orchestrators orchestrator-venvs lint typecheck bench bench-latency bench-scale emulator dist clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The connector and the emulator are two distributions (pyproject.toml, emulator/pyproject.toml);
# the project's venv holds both, editable.
$(VENV)/.installed: $(BIN)/python pyproject.toml emulator/pyproject.toml constraints.txt
	$(PIP_INSTALL) -e . -e ./emulator
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/twilio-conversations demo

# Lint and types first (seconds), then every test: unit, end-to-end on DuckDB and a throwaway
# PostgreSQL, reliability, recipes, notebook and a benchmark smoke run.
test: lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

# The tests of account concurrency, the throttle and faults, STRESS_RUNS times beside two
# CPU-bound processes (a busy shared CI host): a test whose outcome moves with thread scheduling
# fails here first. E.g. `make test-stress STRESS_RUNS=3 STRESS_TESTS=tests/reliability`.
STRESS_RUNS ?= 10
STRESS_TESTS ?= tests/reliability/test_faults.py tests/twilio_conversations/test_throttle.py \
	tests/emulator/test_account_limit.py
test-stress: $(VENV)/.installed-dev
	bash tests/stress.sh $(STRESS_RUNS) $(BIN)/python -n 2 --dist loadfile $(STRESS_TESTS)

# The suite on the newest releases pyproject.toml's ranges allow (no constraints.txt, every
# dependency upgraded), in a venv of its own: a new dlt, DuckDB, pyarrow or requests release that
# breaks the connector shows here before a user meets it. CI runs it after `make test` on the
# connector's own tests (tests/twilio_conversations: every destination, merge, schema and client
# path), without those marked slow (account-sized runs): the crash, notebook, README and deploy
# scenarios that `make test` has just run on the pinned versions call the same code, and CI
# took 30.3 minutes with them here too.
test-newest: newest-venv
	@.venv-newest/bin/python -c "import dlt, duckdb, pyarrow, requests; print(f'newest: dlt {dlt.__version__}, duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}, requests {requests.__version__}')"
	.venv-newest/bin/python -m pytest -n 2 --dist loadfile -q -m "not slow" tests/twilio_conversations

# Every run upgrades to whatever is newest now (no constraints.txt, eager upgrades).
newest-venv:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)" >&2; exit 1; }
	@test -x .venv-newest/bin/python || $(PYTHON) -m venv .venv-newest
	.venv-newest/bin/python -m pip install --quiet --disable-pip-version-check --upgrade --upgrade-strategy eager -e '.[dev]' -e ./emulator

lint: $(VENV)/.installed-dev
	$(BIN)/ruff format --check pipelines emulator tests benchmarks
	$(BIN)/ruff check pipelines emulator tests benchmarks

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# Airflow and Dagster each in a virtualenv of their own (they pin much of the world); the
# recipe tests in tests/deploy/test_orchestrators.py use them through AIRFLOW_PYTHON and
# DAGSTER_PYTHON and skip, saying so, without them. CI runs `make test-orchestrators`.
# They install the connector's wheel, as a deployment does (`make dist`), reinstalled whenever
# the wheel is rebuilt.
.venv-%/.installed: $(WHEEL) constraints.txt
	@test -x .venv-$*/bin/python || $(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt '$(WHEEL)[$*]'
	.venv-$*/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall '$(WHEEL)'
	@touch $@

orchestrator-venvs: .venv-airflow/.installed .venv-dagster/.installed

test-orchestrators: $(VENV)/.installed-dev orchestrator-venvs
	AIRFLOW_PYTHON=$(CURDIR)/.venv-airflow/bin/python DAGSTER_PYTHON=$(CURDIR)/.venv-dagster/bin/python \
		$(BIN)/python -m pytest -q tests/deploy/test_orchestrators.py tests/deploy/test_dagster_concurrency.py

# The benchmark venv holds the plain install (plus psutil for the harness), as a scheduled job
# does: the dev extras bring pandas, and DuckDB imports it whenever dlt binds a setting (0.3 s a
# run). BENCH_ARGS passes options, e.g. `make bench BENCH_ARGS="--scale"`.
.venv-bench/.installed: pyproject.toml emulator/pyproject.toml constraints.txt
	@test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[bench]' -e ./emulator
	@touch $@

bench: .venv-bench/.installed
	.venv-bench/bin/python -m benchmarks.run $(BENCH_ARGS)

# At Twilio's latency on an account that limits requests in flight (benchmarks/latency.py), e.g.
# `make bench-latency BENCH_ARGS="--latency 100 --users 3000,20000"`.
bench-latency: .venv-bench/.installed
	.venv-bench/bin/python -m benchmarks.latency $(BENCH_ARGS)

# What a run costs as the account grows (benchmarks/scale.py): bookkeeping bytes, memory, re-runs,
# e.g. `make bench-scale BENCH_ARGS="--cases 1000000x1 --compare fcea4f2"`.
bench-scale: .venv-bench/.installed
	.venv-bench/bin/python -m benchmarks.scale $(BENCH_ARGS)

emulator: $(VENV)/.installed
	$(BIN)/twilio-emulator --port 8080

# The two wheels a user installs: the connector's (no emulator in it) and the emulator's, e.g.
# dist/twilio_conversations-0.1.0-py3-none-any.whl. Built from a copy of the sources: setuptools
# packs whatever an earlier build left in build/, and two builds at once would share it.
dist: $(VENV)/.installed
	rm -f $(DIST)/twilio_conversations-*.whl $(DIST)/twilio_emulator-*.whl
	src=$$(mktemp -d) && trap 'rm -rf "$$src"' EXIT && mkdir "$$src/pipelines" && \
		cp -R pyproject.toml README.md "$$src" && cp -R pipelines/twilio_conversations "$$src/pipelines" && \
		cp -R emulator "$$src" && \
		$(BIN)/python -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
			--wheel-dir "$(abspath $(DIST))" "$$src" "$$src/emulator"
	@ls $(DIST)/*.whl

$(WHEEL): $(VENV)/.installed pyproject.toml $(wildcard pipelines/twilio_conversations/*.py)
	$(MAKE) dist

clean:
	rm -rf $(VENV) .venv-airflow .venv-dagster .venv-bench .venv-newest dist twilio_conversations.duckdb .pytest_cache .mypy_cache .ruff_cache
