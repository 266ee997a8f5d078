# pec-cutover: two commands do everything on a fresh machine (Debian 12, root):
#   make rehearsal   install, start the sandbox, play the cutover day on it
#   make test        install, run the whole test suite against the sandbox's real servers
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# The suite waits on real servers far more than it computes: three workers, one test file each at a time.
PYTEST_ARGS ?= -n 3 --dist loadfile
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# A flow run in a child process without a server starts Prefect's ephemeral one: on a loaded 2-core machine that
# takes longer than Prefect's default 20 s wait.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export LC_ALL := C.UTF-8
export LANG := C.UTF-8

.PHONY: setup system venv test rehearsal rehearsal-distributed bench bench-scale bench-ui sandbox-down clean

setup: system venv

system:
	bash scripts/install-system.sh

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

rehearsal: setup
	$(BIN)/python -m flows.rehearsal $(REHEARSAL_ARGS)

# The same day copied by two workers (ledger and Prefect server on the sandbox's PostgreSQL); ports 14000+, its own
# sandbox under .sandbox-distributed/ (never clashes with `make rehearsal`). See docs/scale-out.md.
rehearsal-distributed: setup
	$(BIN)/python -m flows.rehearsal_distributed $(REHEARSAL_ARGS)

bench: setup
	$(BIN)/python bench/copy_bench.py $(BENCH_ARGS)

# 1,200 mailboxes x 20 messages, a real Prefect server: readiness, prestage, final deltas (CLI, flow, @20ms), mbsync
bench-scale: setup
	$(BIN)/python bench/scale_bench.py $(BENCH_SCALE_ARGS)

# The Prefect UI rendering a 1,200-mailbox cutover report (goal: under 2 s), against the full-inline old shape.
bench-ui: setup
	$(BIN)/python bench/ui_render.py $(BENCH_ARGS)

sandbox-down:
	$(BIN)/pec-cutover sandbox down
	if [ -f .sandbox-distributed/plan.yaml ]; then $(BIN)/pec-cutover sandbox down --plan .sandbox-distributed/plan.yaml; fi

clean: sandbox-down
	rm -rf .sandbox .sandbox-distributed
