# Lockstep: `make run` starts the main job on embedded defaults, `make test` runs lint + tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint unit bench bench-micro simulator clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lockstep serve

simulator: $(STAMP)
	$(BIN)/lockstep simulator --devices 3 --apns-dir ./apns-out

lint: $(STAMP)
	$(BIN)/ruff check engine simulator bench tests
	$(BIN)/mypy engine simulator

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint unit

# Every scenario of bench/scenarios at full size (SIZE=smoke for a quick pass); JSON lines in
# bench/results/latest.jsonl and a table on stdout.
bench: $(STAMP)
	$(BIN)/lockstep bench all --size $(or $(SIZE),full)

bench-micro: $(STAMP)
	$(BIN)/pytest -q tests/micro --benchmark-enable --benchmark-only

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
