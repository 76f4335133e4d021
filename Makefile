# The two commands of the README. Both set up everything first (scripts/setup.sh, seconds when up to date).
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export HYBRIDVLA_VENV := $(VENV)

.PHONY: setup test demo bench clean

setup:
	@bash scripts/setup.sh

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

# make demo [EPISODES=10] [SEED=100000] [MODE=all|hybrid|diffusion|autoregressive] [ROBOT=fr3|agilex]
EPISODES ?= 10
SEED ?= 100000
MODE ?= all
ROBOT ?= fr3
demo: setup
	@$(VENV)/bin/hybridvla_demo --episodes $(EPISODES) --seed $(SEED) --mode $(MODE) --robot $(ROBOT)

clean:
	rm -rf $(VENV) build install log
