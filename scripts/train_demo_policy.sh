#!/usr/bin/env bash
# Reproduces the demo's checkpoint (checkpoints/sim_fr3_pick_place/) from nothing but the simulated lab:
#   1. expert demonstrations (`hybridvla sim record-demos`): PER_VARIANT (default 1000) seeds per instruction
#      variant of hybridvla_core.sim.episodes (red|blue block x green|yellow bowl), seeds 0..~16*PER_VARIANT
#      (the demo's held-out seeds start at 100000; record-demos refuses a count that would reach them), one zstd
#      MCAP bag each (~4.3 MB), two recording processes (one per core; ~1.7 s per episode each; an interrupted
#      run continues where it was);
#   2. `hybridvla dataset build` of each half (10 Hz; per-step delta translation, then keyframes in absolute
#      translation; absolute Euler, gripper 1=open),
#      one bag at a time, the front view cut to the table region of the model config (--crop) and every frame
#      resized to the model's 64 px input as it is written (--image-size 64), then `hybridvla dataset merge`;
#   3. `hybridvla train config/train_demo_fr3.yaml` (stage 1, delta translation), then
#      `hybridvla train config/train_demo_fr3_stage2.yaml` (stage 2: fine-tuned on the keyframe set);
#   4. JIT_PER_VARIANT (default 500) more demonstrations per variant from seed 20000 on, built as keyframes, and
#      `hybridvla train config/train_demo_fr3_stage3.yaml --stop-after 4000` (stage 3: stage 2 fine-tuned on
#      them);
#   5. stage 4 (config/train_demo_fr3_stage4.yaml --stop-after 2000: the denoiser switched to predicting x_0)
#      and stage 5 (config/train_demo_fr3_stage5.yaml: the diffusion loss weighted 10x, trailing DDIM
#      timesteps), both on stage 3's data; stage 5's final checkpoint is copied into the repository.
# Every episode starts from a seeded random pose (config/sim_franka.yaml start_jitter). The committed
# checkpoint's stages 1 and 2 were recorded before start_jitter existed, from the home pose only; only stage
# 3's demonstrations have random starts (checkpoints/sim_fr3_pick_place/README.md).
# Data and runs live outside the repository: /tmp/demo_data (the data.path of config/train_demo_fr3.yaml;
# for 4,000 episodes ~17 GB of bags and ~4 GB of training set, both in proportion to PER_VARIANT) and
# RUN (default /tmp/demo_train; stage 2 starts from /tmp/demo_train/stage1/final, its init_from).
# Usage: [PER_VARIANT=1000] scripts/train_demo_policy.sh   (4 variants: 4 x PER_VARIANT episodes)
#
# RECIPE=privileged scripts/train_demo_policy.sh: the one-stage recipe with the privileged-state head (issue 30,
# config/train_demo_fr3_privileged.yaml): PER_VARIANT (default 250) random-start demonstrations from seed 30000,
# each with its /sim/privileged labels, built as keyframes into $DATA/dataset_privileged, trained from nothing,
# then `hybridvla sim probe-targets` and 20 calibration episodes (`hybridvla eval sim --seed 50000`) of the
# result. Nothing is copied into checkpoints/: the committed checkpoint is replaced only by a better one.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=/tmp/demo_data
RUN=${RUN:-/tmp/demo_train}
RECIPE=${RECIPE:-stages}
case "$RECIPE" in
  stages|privileged) ;;
  *) echo "RECIPE must be stages (default) or privileged, got '$RECIPE'" >&2; exit 2;;
esac
if [ "$RECIPE" = privileged ]; then PER_VARIANT=${PER_VARIANT:-250}; else PER_VARIANT=${PER_VARIANT:-1000}; fi
JIT_PER_VARIANT=${JIT_PER_VARIANT:-500}
PY=${HYBRIDVLA_VENV:-$PWD/.venv}/bin
export MUJOCO_GL=${MUJOCO_GL:-egl}

wait_all() {  # wait for every background job; fail if any failed (a bare `wait` hides failures)
  local pid status=0
  for pid in $(jobs -p); do wait "$pid" || status=$?; done
  return "$status"
}

mkdir -p "$DATA" "$RUN"
record() {  # record OUT PER_VARIANT FIRST_SEED: two recording processes, one per core, every other seed each
  for part in 0 1; do
    "$PY/hybridvla" sim record-demos --out "$1" --per-variant "$2" --start "$3" --part "$part/2" &
  done
  wait_all
}
if [ "$RECIPE" = privileged ]; then
  record "$DATA/bags_privileged" "$PER_VARIANT" 30000
fi
# The crop must be the front view's crop in config/train_demo_fr3.yaml (training refuses a set cropped otherwise).
# Two sets of the same demonstrations: per-step delta translation (stage 1) and keyframes in absolute
# translation (stage 2).
build_set() {  # build_set BAGS OUT BUILD-OPTIONS...: both halves in parallel, then merged into OUT
  local bags=$1 out=$2; shift 2
  rm -rf "$DATA/build" "$out"
  for part in 0 1; do
    "$PY/hybridvla" dataset build "$bags/part$part" -o "$DATA/build/part$part" --views front,wrist --rate 10 \
      --chunk 1 "$@" --unnorm-key sim_fr3_pick_place --val-fraction 0.05 --image-size 64 \
      --crop front=0.40,0.86,0.12,0.88 &
  done
  wait_all
  "$PY/hybridvla" dataset merge "$DATA/build/part0" "$DATA/build/part1" -o "$out"
  rm -rf "$DATA/build"
}
if [ "$RECIPE" = privileged ]; then
  build_set "$DATA/bags_privileged" "$DATA/dataset_privileged" --translation absolute --keyframes
  "$PY/hybridvla" train config/train_demo_fr3_privileged.yaml --output-dir "$RUN/privileged" 2>&1 \
    | tee "$RUN/privileged.log"
  "$PY/hybridvla" sim probe-targets "$RUN/privileged/final" --episodes 20 | tee "$RUN/privileged_probe.log"
  "$PY/hybridvla" eval sim "$RUN/privileged/final" --episodes 20 --seed 50000 --mode hybrid \
    | tee "$RUN/privileged_eval.log"
  exit 0
fi
record "$DATA/bags" "$PER_VARIANT" 0
build_set "$DATA/bags" "$DATA/dataset" --translation delta
build_set "$DATA/bags" "$DATA/dataset_kf" --translation absolute --keyframes
# Stage 1 (delta), then stage 2 fine-tunes it on keyframes (init_from: $RUN/stage1/final).
"$PY/hybridvla" train config/train_demo_fr3.yaml --output-dir "$RUN/stage1" 2>&1 | tee "$RUN/stage1.log"
"$PY/hybridvla" train config/train_demo_fr3_stage2.yaml --output-dir "$RUN/stage2" 2>&1 | tee "$RUN/stage2.log"
# Stage 3: new layouts (seeds from 20000), random start poses, keyframes (init_from: $RUN/stage2/final).
record "$DATA/bags_jit" "$JIT_PER_VARIANT" 20000
build_set "$DATA/bags_jit" "$DATA/dataset_jit" --translation absolute --keyframes
"$PY/hybridvla" train config/train_demo_fr3_stage3.yaml --output-dir "$RUN/stage3" --stop-after 4000 2>&1 \
  | tee "$RUN/stage3.log"
# Stages 4 and 5 (init_from: $RUN/stage3/checkpoints/step-00004000, then $RUN/stage4/checkpoints/step-00002000).
"$PY/hybridvla" train config/train_demo_fr3_stage4.yaml --output-dir "$RUN/stage4" --stop-after 2000 2>&1 \
  | tee "$RUN/stage4.log"
"$PY/hybridvla" train config/train_demo_fr3_stage5.yaml --output-dir "$RUN/stage5" 2>&1 | tee "$RUN/stage5.log"
mkdir -p checkpoints/sim_fr3_pick_place
cp "$RUN/stage5/final/"* checkpoints/sim_fr3_pick_place/
"$PY/python" - "$DATA/bags/seeds.json" "$DATA/bags_jit/seeds.json" > checkpoints/sim_fr3_pick_place/training_seeds.json <<'PY'
import json, sys  # every seed any stage trained on: the demo's held-out seeds skip them all
sets = [json.load(open(f)) for f in sys.argv[1:]]
print(json.dumps({"variants": sets[0]["variants"], "seeds": sorted({s for d in sets for s in d["seeds"]})}))
PY
echo "checkpoint: checkpoints/sim_fr3_pick_place (training seeds in training_seeds.json)"
