# Two commands do all set-up (a cached virtual environment outside the clone, see
# tools/setup_env.sh):  `make demo` runs the main job, `make test` runs the tests.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
SETUP = venv="$$(bash tools/setup_env.sh | tail -n 1)"

.PHONY: demo test test-fast env help

help:
	@echo "make demo   # the whole pipeline on synthetic data on the CPU (minutes)"
	@echo "make test   # the whole test suite (set-up included; what CI runs)"
	@echo "make test-fast  # the fast tier: no slow or multi-process tests (under 3 minutes)"
	@echo "make env    # only create / reuse the virtual environment and print its path"

env:
	@$(SETUP); echo "$$venv"

demo:
	@$(SETUP); "$$venv/bin/python" tools/demo.py $(ARGS)

# -n auto: one pytest worker per core (pytest-xdist); worksteal evens out the long tests
test:
	@$(SETUP); "$$venv/bin/python" -m pytest -n auto --dist worksteal -rs --durations=15 $(ARGS)

test-fast:
	@$(SETUP); "$$venv/bin/python" -m pytest -n auto --dist worksteal -rs -m "not slow and not multiprocess" $(ARGS)
