#!/usr/bin/env bash
# Reproduces the demo's checkpoint (checkpoints/sim_fr3_pick_place/) from nothing but the simulated lab:
#   1. expert demonstrations: PER_VARIANT (default 105) seeds per instruction variant of hybridvla_core.demo
#      (red|blue block x green|yellow bowl), seeds 0..~20*PER_VARIANT (the demo's held-out seeds start at
#      100000; `demo record` refuses a count that would reach them), one MCAP bag each;
#   2. `hybridvla dataset build` (10 Hz, delta translation, absolute Euler rotation, gripper 1=open), one bag
#      at a time, frames resized to the model's 64 px input as they are written (--image-size 64);
#   3. `hybridvla train config/train_demo_fr3.yaml` (on a 2-core machine that others load, OMP_NUM_THREADS=1
#      trains faster than 2), then the final checkpoint copied into the repository.
# Data and runs live outside the repository: /tmp/demo_data (the data.path of config/train_demo_fr3.yaml;
# for 420 episodes ~25 GB of bags and ~0.8 GB of 64 px training set, both in proportion to PER_VARIANT) and
# RUN (default /tmp/demo_train).
# Usage: [PER_VARIANT=1000] scripts/train_demo_policy.sh   (4 variants: 4 x PER_VARIANT episodes)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=/tmp/demo_data
RUN=${RUN:-/tmp/demo_train}
PER_VARIANT=${PER_VARIANT:-105}
PY=${HYBRIDVLA_VENV:-$PWD/.venv}/bin
export MUJOCO_GL=${MUJOCO_GL:-egl}

mkdir -p "$DATA" "$RUN"
# Two recording processes, one per core; each takes every other seed.
"$PY/python" -m hybridvla_core.demo record --out "$DATA/bags" --per-variant "$PER_VARIANT" --part 0/2 &
"$PY/python" -m hybridvla_core.demo record --out "$DATA/bags" --per-variant "$PER_VARIANT" --part 1/2 &
wait
"$PY/hybridvla" dataset build "$DATA/bags/part0" "$DATA/bags/part1" -o "$DATA/dataset" --views front,wrist \
  --rate 10 --chunk 1 --unnorm-key sim_fr3_pick_place --val-fraction 0.05 --image-size 64
"$PY/hybridvla" train config/train_demo_fr3.yaml --output-dir "$RUN/run" 2>&1 | tee "$RUN/train.log"
mkdir -p checkpoints/sim_fr3_pick_place
cp "$RUN/run/final/"* checkpoints/sim_fr3_pick_place/
cp "$DATA/bags/seeds.json" checkpoints/sim_fr3_pick_place/training_seeds.json
echo "checkpoint: checkpoints/sim_fr3_pick_place (training seeds in training_seeds.json)"
