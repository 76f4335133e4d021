# The two commands of the README. Both set up everything first (scripts/setup.sh, seconds when up to date).
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export HYBRIDVLA_VENV := $(VENV)

.PHONY: setup test demo bench clean

setup:
	@bash scripts/setup.sh

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	@echo "make demo: the simulated-lab demo arrives with the issue 'The demo: a HybridVLA trained in the simulated lab'."
	@echo "Not available yet; nothing was run. 'make test' runs the test suite."

clean:
	rm -rf $(VENV) build install log
