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
--preset reference-7b builds Llama-2-7B + DINOv2-L + SigLIP shapes with random weights (CUDA, bf16).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def bench_config(preset: str, action_dim: int, chunk: int):
    from hybridvla_core.model.config import ModelConfig
    from hybridvla_core.model.presets import reference_7b_config, tiny_llama

    if preset == "reference-7b":
        config = reference_7b_config(views=("front", "wrist"))
        config.views[1].tokens = 64
        return config
    hf_config = {**tiny_llama(hidden=512, layers=8, heads=8), "intermediate_size": 1376}
    return ModelConfig.from_dict({
        "llm": {"family": "llama", "hf_config": hf_config},
        "vision": {"kind": "small", "image_size": 224, "small": {"width": 128, "depth": 2, "heads": 4, "patch": 14}},
        "views": [{"name": "front"}, {"name": "side"}, {"name": "wrist", "tokens": 16}],
        "action_dim": action_dim, "chunk": chunk,
    })


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
              device: str = "cpu", seed: int = 0) -> dict:
    import torch

    from hybridvla_core.actions import DatasetStatistics
    from hybridvla_core.model.checkpoint import build_model
    from hybridvla_core.model.policy import Policy
    from hybridvla_core.model.text_tokenizer import build_byte_tokenizer, reference_shaped_tokenizer

    torch.manual_seed(seed)
    config = bench_config(preset, action_dim, chunk)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = reference_shaped_tokenizer("llama-2") if preset == "reference-7b" else build_byte_tokenizer()
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
                   "state": samples[0], "instruction": "pick up the red cube and place it in the blue bowl"}
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
        "device": device, "dtype": str(dtype).replace("torch.", ""), "torch_threads": torch.get_num_threads(),
        "stage_ms": stage_ms,
    })
    if device.startswith("cuda"):
        results["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--preset", choices=["cpu", "reference-7b"], default="cpu")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]; the 7B preset needs CUDA")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--ddim-steps", type=int, default=4)
    parser.add_argument("--action-dim", type=int, default=7, choices=[7, 14])
    parser.add_argument("--chunk", type=int, default=1, help="action chunk length T")


def run(args: argparse.Namespace) -> int:
    if args.preset == "reference-7b" and not args.device.startswith("cuda"):
        print("hybridvla bench: --preset reference-7b needs --device cuda", file=sys.stderr)
        return 2
    results = run_bench(args.preset, args.repeats, args.ddim_steps, args.action_dim, args.chunk, args.device)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{results['prefix_tokens']} prefix tokens, {results['parameters'] / 1e6:.1f} M parameters, "
          f"{results['device']} {results['dtype']}, {results['ddim_steps']} DDIM steps, chunk {results['chunk']}")
    for name, stages in results["stage_ms"].items():
        print(f"  {name:34s} " + "  ".join(f"{k} {v:.1f} ms" for k, v in stages.items()))
    for key in ("hz_hybrid", "hz_diffusion", "hz_autoregressive", "hz_hybrid_reference_schedule",
                "hz_autoregressive_reference_schedule"):
        print(f"  {key:40s} {results[key]:8.2f} Hz")
    print(f"  cached vs uncached DDIM: {results['cached_vs_uncached_speedup']:.2f}x "
          f"({results['denoise_uncached_ms']:.1f} -> {results['denoise_cached_ms']:.1f} ms), "
          f"max |diff| {results['max_abs_diff_cached_uncached']:.2e}")
    print(f"  single prefill vs reference schedule (hybrid): {results['single_vs_reference_schedule_speedup']:.2f}x")
    return 0
