# The two commands of the README. Both set up everything first (scripts/setup.sh, seconds when up to date).
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export HYBRIDVLA_VENV := $(VENV)

.PHONY: setup test demo bench clean

setup:
	@bash scripts/setup.sh

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

# make demo [EPISODES=10] [SEED=100000] [MODE=all|hybrid|diffusion|autoregressive]: `hybridvla demo`, the FR3
# simulated lab through the whole ROS graph
EPISODES ?= 10
SEED ?= 100000
MODE ?= all
demo: setup
	@$(VENV)/bin/hybridvla demo --episodes $(EPISODES) --seed $(SEED) --mode $(MODE)

# make bench: `hybridvla bench` with its CPU preset (the 28 M-parameter model; figures printed, nothing asserted)
bench: setup
	@$(VENV)/bin/hybridvla bench --preset cpu

clean:
	rm -rf $(VENV) build install log
