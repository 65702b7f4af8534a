# Lockstep: `make run` starts the main job on embedded defaults, `make test` runs lint + tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# `make run` installs what serving needs; `make test` adds the test tools.
SERVE_STAMP := $(VENV)/.installed-server
TEST_STAMP  := $(VENV)/.installed-test
# The GitHub Action's step script is checked like the rest.
SOURCES := engine simulator bench webui tests .github/actions/live-activity/live_activity.py

.PHONY: run test lint unit bench bench-micro simulator clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[server]'
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(SERVE_STAMP)

# `make run PORT=9000 HOST=0.0.0.0 CONFIG=lockstep.toml STATE_DIR=/var/lib/lockstep DEVICES=5
# LOG_FORMAT=json`: each variable set becomes the `lockstep serve` flag of the same name;
# ARGS="..." passes any other flags.
RUN_FLAGS = $(if $(CONFIG),--config $(CONFIG)) $(if $(HOST),--host $(HOST)) \
	$(if $(PORT),--port $(PORT)) $(if $(STATE_DIR),--state-dir $(STATE_DIR)) \
	$(if $(DB),--db $(DB)) $(if $(DEVICES),--devices $(DEVICES)) \
	$(if $(SIM_CONTROL_PORT),--sim-control-port $(SIM_CONTROL_PORT)) \
	$(if $(LOG_FORMAT),--log-format $(LOG_FORMAT)) $(ARGS)

run: $(SERVE_STAMP)
	@echo "lockstep is installed in $(BIN); to run its commands from this shell:"
	@echo "    source $(VENV)/bin/activate"
	$(BIN)/lockstep serve $(strip $(RUN_FLAGS))

simulator: $(SERVE_STAMP)
	$(BIN)/lockstep simulator --devices 3 --apns-dir ./apns-out

lint: $(TEST_STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy $(SOURCES)

# The sans-IO cores: protocol logic free of trio and of clocks, held at 100 % branch coverage
# (a line that cannot be reached carries a `pragma: no cover` saying why).
CORES := engine/apns/protocol.py engine/apns/h2conn.py engine/apns/h2wire.py \
	engine/apns/h2compat.py engine/apns/reasons.py engine/payload.py engine/delivery/coalescer.py \
	engine/delivery/items.py engine/notification.py simulator/validation.py simulator/protocol.py \
	engine/apns/tokens.py engine/apns/sharedtoken.py engine/server/restarts.py
comma := ,
space := $(subst ,, )

# The whole suite with branch coverage (a table per module and the total at the end), then the
# cores' own check.
unit: $(TEST_STAMP)
	HYPOTHESIS_PROFILE=ci $(BIN)/pytest -q --cov --cov-branch --cov-report=term:skip-covered
	$(BIN)/coverage report --include='$(subst $(space),$(comma),$(strip $(CORES)))' --fail-under=100

test: lint unit

# Every scenario of bench/scenarios at full size (SIZE=smoke for a quick pass); JSON lines in
# bench/results/latest.jsonl and a table on stdout.
bench: $(TEST_STAMP)
	$(BIN)/lockstep bench all --size $(or $(SIZE),full)

bench-micro: $(TEST_STAMP)
	$(BIN)/pytest -q tests/micro --benchmark-enable --benchmark-only

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
