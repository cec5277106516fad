# `make run` and `make test` do all the set-up themselves on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

# The repo's config.toml falls back to a published admin token; FASTWEBHOOK_DEMO=1 lets this demo
# serve with it (an installed server refuses it: set FASTWEBHOOK_ADMIN_TOKEN there).
run: $(STAMP)
	FASTWEBHOOK_DEMO=1 $(BIN)/fastwebhook serve -c config.toml

check: $(STAMP)
	FASTWEBHOOK_DEMO=1 $(BIN)/fastwebhook check -c config.toml

# The suite on both cores, then, alone, the few tests that time something by the clock which
# another test beside them could slow (the script pool's V8 threads run at nice 19).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not alone"
	$(BIN)/python -m pytest -q -m alone

bench: $(STAMP)
	$(BIN)/python -m pytest bench -q --benchmark-enable --benchmark-only -p no:cacheprovider
	$(BIN)/python bench/store_costs.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/workflow_load.py
	$(BIN)/python bench/purge_load.py
	$(BIN)/python bench/footprint.py

clean:
	rm -rf $(VENV) *.egg-info fastwebhook.db fastwebhook.db-wal fastwebhook.db-shm
