"""`hybridvla bench [--json]`: latency of one control step per stage and mode, KV cache and schedule speed-ups.

Default config (CPU, random weights): 3 views (front and side at 256 tokens each, wrist pooled to 16) and the
byte-tokenised prompt: 628 prefix tokens; Llama-shaped LLM, hidden 512 x 8 layers. Figures:
  cached_vs_uncached_speedup: DDIM (prefix prefill + ddim_steps) with the prefix cached vs recomputed every step
  single_vs_reference_schedule_speedup: hybrid step with one prefill vs the reference schedule (views recomputed
      and a second prefill of the prefix + [random t, fresh noise, <EOD>] for the AR tokens)
  max_abs_diff_cached_uncached: on the same noise, normalised action units
  hz_<mode>: control steps per second of Policy.predict (mode autoregressive also denoises: its tokens are
      conditioned on the denoised action); hz_autoregressive_reference_schedule skips the diffusion.
Figures that are compared are measured in turns (A, B, A, B, ...) and reported as medians, so that a load
change during the run does not favour one side.
--preset 7b (Llama-2-7B + DINOv2-L + SigLIP) and --preset 2.7b (Phi-2 + CLIP-L) build the reference's full-size
shapes with random weights (--random-weights says so explicitly; nothing is downloaded), with a front view and a
wrist view pooled to 64 tokens; --device cuda --dtype bfloat16 is what they are for. --estimate-memory builds a
preset on the meta device (no memory) and prints its weight and KV-cache sizes instead of timing anything.
benchmarks/gpu_inference.sh runs the full-size figures on a GPU machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from hybridvla_core import options

PRESETS = ("cpu", "7b", "2.7b")
FULL_SIZE = {"7b": "llama-2", "2.7b": "phi-2"}  # preset -> the reference-shaped tokenizer it is built with


def bench_config(preset: str, action_dim: int, chunk: int):
    from hybridvla_core.model.config import ModelConfig
    from hybridvla_core.model.presets import reference_2_7b_config, reference_7b_config, tiny_llama

    if preset in FULL_SIZE:
        config = (reference_7b_config if preset == "7b" else reference_2_7b_config)(views=("front", "wrist"))
        config.views[1].tokens = 64
        config.action_dim, config.chunk = action_dim, chunk
        return config
    hf_config = {**tiny_llama(hidden=512, layers=8, heads=8), "intermediate_size": 1376}
    return ModelConfig.from_dict({
        "llm": {"family": "llama", "hf_config": hf_config},
        "vision": {"kind": "small", "image_size": 224, "small": {"width": 128, "depth": 2, "heads": 4, "patch": 14}},
        "views": [{"name": "front"}, {"name": "side"}, {"name": "wrist", "tokens": 16}],
        "action_dim": action_dim, "chunk": chunk,
    })


def _tokenizer(preset: str):
    from hybridvla_core.model.text_tokenizer import build_byte_tokenizer, reference_shaped_tokenizer

    return reference_shaped_tokenizer(FULL_SIZE[preset]) if preset in FULL_SIZE else build_byte_tokenizer()


PROMPT = "pick up the red cube and place it in the blue bowl"


def estimate_memory(preset: str = "7b", action_dim: int = 7, chunk: int = 1) -> dict:
    """Weight and KV-cache bytes of a preset, from the model built on the meta device (no memory is used): the
    parameters per dtype, and the keys/values of one control step's sequence (prefix + step room) per dtype."""
    import torch

    from hybridvla_core.model.hybridvla import HybridVLA

    config = bench_config(preset, action_dim, chunk)
    with torch.device("meta"):
        model = HybridVLA(config, _tokenizer(preset))
    llm = model.llm.config
    prefix = 1 + model.tokens_per_image + len(model.prompt_ids(PROMPT)) + 2  # BOS, views, prompt+sep, <BOD>, state
    tokens = prefix + model.step_room
    head_dim = getattr(llm, "head_dim", None) or llm.hidden_size // llm.num_attention_heads
    kv_values = 2 * llm.num_hidden_layers * llm.num_key_value_heads * head_dim * tokens
    parameters = sum(p.numel() for p in model.parameters())
    groups = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()}
    gib = 2 ** 30
    return {"preset": preset, "parameters": parameters, "parameters_by_group": groups, "prefix_tokens": prefix,
            "step_tokens": tokens, "weights_gib": {"float32": 4 * parameters / gib, "bfloat16": 2 * parameters / gib},
            "kv_cache_gib": {"float32": 4 * kv_values / gib, "bfloat16": 2 * kv_values / gib}}


def _interleaved_median_ms(fns: dict, repeats: int, sync) -> dict:
    """Median milliseconds per function, the functions taking turns within every repeat, so that a change in
    the machine's load during the run shifts all of them alike instead of biasing a ratio between them."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(values) for name, values in times.items()}


def run_bench(preset: str = "cpu", repeats: int = 5, ddim_steps: int = 4, action_dim: int = 7, chunk: int = 1,
              device: str = "cpu", seed: int = 0, dtype: str | None = None) -> dict:
    """dtype: float32 | bfloat16 (default: bfloat16 on CUDA, float32 elsewhere)."""
    import torch

    from hybridvla_core.actions import DatasetStatistics
    from hybridvla_core.model.checkpoint import build_model
    from hybridvla_core.model.policy import Policy

    torch.manual_seed(seed)
    config = bench_config(preset, action_dim, chunk)
    dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    tokenizer = _tokenizer(preset)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build directly in the run dtype (a 7B model would not fit twice)
    try:
        model = build_model(config, tokenizer, device).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    torch.nn.init.normal_(model.final_layer.mlp.fc2.weight, std=0.02)  # zero-init would make eps = 0
    samples = np.random.default_rng(seed).normal(size=(100, action_dim))
    stats = DatasetStatistics.from_samples(samples, samples, 1)
    rng = np.random.default_rng(seed)
    observation = {"images": {v.name: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for v in config.views},
                   "state": samples[0], "instruction": PROMPT}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def policy(mode, schedule="single"):
        return Policy(model, stats, mode=mode, ddim_steps=ddim_steps, ar_schedule=schedule, seed=seed)

    engines = {name: policy(mode, schedule) for name, mode, schedule in [
        ("hybrid", "hybrid", "single"), ("diffusion", "diffusion", "single"),
        ("autoregressive", "autoregressive", "single"), ("hybrid_reference_schedule", "hybrid", "reference"),
        ("autoregressive_reference_schedule", "autoregressive", "reference")]}
    for engine in engines.values():
        engine.predict(observation)  # warm-up
    runs = {name: [] for name in engines}
    for _ in range(repeats):  # the engines take turns (see _interleaved_median_ms)
        for name, engine in engines.items():
            runs[name].append(engine.predict(observation))
    results, stage_ms = {}, {}
    for name, engine_runs in runs.items():
        results[f"hz_{name}"] = 1000.0 / statistics.median(r.timings_ms["total"] for r in engine_runs)
        stage_ms[name] = {k: round(statistics.median(r.timings_ms[k] for r in engine_runs), 3)
                          for k in engine_runs[0].timings_ms}

    engine = policy("diffusion")
    with torch.inference_mode():
        prefix = engine.prefix(engine._validate(observation))
        noise = engine.sample_noise()
        cached_fn = lambda: model.denoise_cached(model.prefill(prefix), noise, ddim_steps)  # noqa: E731
        uncached_fn = lambda: model.denoise_uncached(prefix, noise, ddim_steps)  # noqa: E731
        cached_fn(), uncached_fn()  # warm-up
        medians = _interleaved_median_ms({"cached": cached_fn, "uncached": uncached_fn}, repeats, sync)
        cached_ms, uncached_ms = medians["cached"], medians["uncached"]
        max_diff = float((cached_fn() - uncached_fn()).abs().max())

    results.update({
        "cached_vs_uncached_speedup": uncached_ms / cached_ms,
        "single_vs_reference_schedule_speedup": results["hz_hybrid"] / results["hz_hybrid_reference_schedule"],
        "max_abs_diff_cached_uncached": max_diff,
        "denoise_cached_ms": cached_ms, "denoise_uncached_ms": uncached_ms,
        "prefix_tokens": int(prefix.shape[1]), "ddim_steps": ddim_steps, "chunk": chunk, "action_dim": action_dim,
        "views": [v.name for v in config.views], "parameters": sum(p.numel() for p in model.parameters()),
        "preset": preset, "device": device, "dtype": str(dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "stage_ms": stage_ms,
    })
    if device.startswith("cuda"):
        results["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--preset", choices=PRESETS, default="cpu",
                        help="cpu: a 28 M-parameter Llama-config model for CPU figures (default); 7b: Llama-2-7B + "
                             "DINOv2/SigLIP; 2.7b: Phi-2 + CLIP (full size, random weights: needs --random-weights)")
    parser.add_argument("--random-weights", action="store_true",
                        help="build the 7b / 2.7b preset with random weights (nothing is downloaded; the figures are "
                             "speed and memory, not behaviour)")
    parser.add_argument("--device", type=options.device, default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"],
                        help="weights and activations (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--estimate-memory", action="store_true",
                        help="print the preset's weight and KV-cache memory from a meta-device build, time nothing")
    parser.add_argument("--repeats", type=options.positive_int, default=5,
                        help="timed runs per figure (median; default 5)")
    parser.add_argument("--ddim-steps", type=options.positive_int, default=4,
                        help="DDIM steps of the diffusion branch (default 4)")
    parser.add_argument("--action-dim", type=int, default=7, choices=[7, 14],
                        help="7: one arm, 14: two arms (default 7)")
    parser.add_argument("--chunk", type=options.positive_int, default=1, help="action chunk length T (default 1)")


def _print_memory(estimate: dict) -> None:
    print(f"{estimate['preset']}: {estimate['parameters'] / 1e9:.2f} B parameters "
          f"({', '.join(f'{k} {v / 1e6:.1f} M' for k, v in estimate['parameters_by_group'].items())})")
    print(f"  weights:  {estimate['weights_gib']['bfloat16']:.2f} GiB bf16, {estimate['weights_gib']['float32']:.2f} GiB fp32")
    print(f"  KV cache: {estimate['kv_cache_gib']['bfloat16'] * 1024:.1f} MiB bf16 for one control step's "
          f"{estimate['step_tokens']} tokens ({estimate['prefix_tokens']} prefix + the step's own)")


def run(args: argparse.Namespace) -> int:
    if args.estimate_memory:
        estimate = estimate_memory(args.preset, args.action_dim, args.chunk)
        print(json.dumps(estimate)) if args.json else _print_memory(estimate)
        return 0
    if args.preset in FULL_SIZE and not args.random_weights:
        print(f"hybridvla bench: --preset {args.preset} builds the full-size model: add --random-weights (nothing is "
              f"downloaded), or --estimate-memory to size it without building it", file=sys.stderr)
        return 2
    results = run_bench(args.preset, args.repeats, args.ddim_steps, args.action_dim, args.chunk, args.device,
                        dtype=args.dtype)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{results['preset']}: {results['prefix_tokens']} prefix tokens, {results['parameters'] / 1e6:.1f} M "
          f"parameters, {results['device']} {results['dtype']}, {results['ddim_steps']} DDIM steps, "
          f"chunk {results['chunk']}")
    for name, stages in results["stage_ms"].items():
        print(f"  {name:34s} " + "  ".join(f"{k} {v:.1f} ms" for k, v in stages.items()))
    for key in ("hz_hybrid", "hz_diffusion", "hz_autoregressive", "hz_hybrid_reference_schedule",
                "hz_autoregressive_reference_schedule"):
        print(f"  {key:40s} {results[key]:8.2f} Hz")
    print(f"  cached vs uncached DDIM: {results['cached_vs_uncached_speedup']:.2f}x "
          f"({results['denoise_uncached_ms']:.1f} -> {results['denoise_cached_ms']:.1f} ms), "
          f"max |diff| {results['max_abs_diff_cached_uncached']:.2e}")
    print(f"  single prefill vs reference schedule (hybrid): {results['single_vs_reference_schedule_speedup']:.2f}x")
    if "peak_memory_gib" in results:
        print(f"  peak GPU memory: {results['peak_memory_gib']:.2f} GiB")
    return 0
