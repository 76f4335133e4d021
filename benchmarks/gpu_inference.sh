#!/usr/bin/env bash
# Full-size inference figures on one CUDA GPU (issue 28): the reference's 7B (Llama-2-7B + DINOv2/SigLIP) and 2.7B
# (Phi-2 + CLIP) with random weights in bf16 (nothing is downloaded), hybrid / diffusion-only / AR-only Hz,
# per-stage ms, peak GPU memory, cached vs uncached DDIM and single-prefill vs reference-schedule ratios.
# Needs only torch (CUDA) and transformers + this repository on the machine; about 3-5 minutes on an H100.
#
#   bash benchmarks/gpu_inference.sh [OUT_DIR]       # writes OUT_DIR/bench_<preset>.json and .txt
#
# On the device tool: run it as `bash benchmarks/gpu_inference.sh $OUT` with timeout_s 540.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-outputs/gpu_bench}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' \
  | tee -a "$OUT/gpu.txt"
# What the bench imports besides torch/transformers; a machine without a registry needs them carried as wheels
# (here: pip download scipy tqdm pyyaml safetensors -d wheels; there: pip install --no-index wheels/*.whl).
"$PY" -c 'import importlib, sys
missing = [m for m in ("numpy", "scipy", "tqdm", "yaml", "safetensors", "tokenizers") if importlib.util.find_spec(m) is None]
sys.exit(f"missing Python packages: {missing}" if missing else 0)' 
for preset in 7b 2.7b; do
  echo "== $preset"
  # One JSON object per preset (the figures), and the same run's human-readable table.
  timeout 240 "$PY" -m hybridvla_core.cli bench --device cuda --dtype bfloat16 --preset "$preset" --random-weights \
    --repeats 10 --json > "$OUT/bench_$preset.json" || echo "bench $preset failed (exit $?)" | tee -a "$OUT/gpu.txt"
  "$PY" - "$OUT/bench_$preset.json" <<'PY' | tee "$OUT/bench_$preset.txt"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['preset']} {r['dtype']} on {r['device']}: {r['parameters'] / 1e9:.2f} B parameters, "
      f"{r['prefix_tokens']} prefix tokens, peak {r.get('peak_memory_gib', float('nan')):.2f} GiB")
for k in ("hz_hybrid", "hz_diffusion", "hz_autoregressive", "hz_hybrid_reference_schedule"):
    print(f"  {k:32s} {r[k]:7.2f} Hz")
for name, stages in r["stage_ms"].items():
    print(f"  {name:34s} " + "  ".join(f"{k} {v:.1f} ms" for k, v in stages.items()))
print(f"  cached vs uncached DDIM {r['cached_vs_uncached_speedup']:.2f}x, single vs reference schedule "
      f"{r['single_vs_reference_schedule_speedup']:.2f}x, max |diff| {r['max_abs_diff_cached_uncached']:.2e}")
PY
done
