"""Peak memory of importing and loading a full-size checkpoint (figures, not a test).

For the full-size 2.7B (Phi-2 + CLIP) or 7B (Llama-2 + DINOv2/SigLIP) preset, with zero weights:
  1. import: a reference .pt with the released model's keys and shapes (its committed manifest), in --pt-dtype,
     through `hybridvla import-checkpoint`;
  2. load: the imported checkpoint with hybridvla_core.model.load_checkpoint in each of --dtypes, as the policy
     node loads it.
Each step runs in a process of its own; printed: its peak memory [GiB] (RssAnon, the process's own pages, sampled
every 10 ms; a mapped weights file is page cache the kernel can reclaim, not counted), beside the weights' size,
and its seconds. Disk: 2.7B ~6 GB .pt + 6-12 GB checkpoint; 7B ~14 + 14-28 GB.

    .venv/bin/python benchmarks/checkpoint_load.py [--preset 2.7b|7b] [--pt-dtype bfloat16|float32]
        [--dtypes float32,bfloat16] [--dir DIR]

Everything is written to a temporary directory, removed afterwards, unless --dir names one to keep.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from hybridvla_core.actions import DatasetStatistics, save_dataset_statistics
from hybridvla_core.model.presets import reference_2_7b_config, reference_7b_config
from hybridvla_core.model.reference_manifest import load_manifest
from hybridvla_core.model.text_tokenizer import reference_shaped_tokenizer

PRESETS = {"2.7b": ("hybridvla-2.7b", reference_2_7b_config, "phi-2"),
           "7b": ("hybridvla-7b", reference_7b_config, "llama-2")}
LOAD = """
import json, sys, torch
from hybridvla_core.model import load_checkpoint
model, _ = load_checkpoint(sys.argv[1], "cpu", getattr(torch, sys.argv[2]))
print(json.dumps(sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**30))
"""


def peak_memory(command: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run `command`; (peak RssAnon [GiB], seconds, the finished process with its output)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                peak = max(peak, next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")))
        except (OSError, StopIteration):  # the process is ending
            pass
        time.sleep(0.01)
    seconds = time.perf_counter() - start
    stdout, stderr = process.communicate()
    return peak / 2**20, seconds, subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def write_import_inputs(preset: str, pt_dtype: torch.dtype, directory: Path) -> list[str]:
    """The zero-weight reference .pt, a tokenizer directory, model config and statistics; the import's arguments.
    np.zeros: pages the kernel maps lazily, so writing the file does not need its size in memory."""
    name, make_config, tokenizer_name = PRESETS[preset]
    _, manifest = load_manifest(name)
    width = torch.empty((), dtype=pt_dtype).element_size()
    zeros = {1: np.int8, 2: np.int16, 4: np.int32}[width]
    model = {group: {key: torch.from_numpy(np.zeros(shape, zeros)).view(pt_dtype) for key, shape in keys.items()}
             for group, keys in manifest.items()}
    directory.mkdir(parents=True)
    torch.save({"model": model}, directory / "step-000000-epoch-00-loss=0.0000.pt")
    reference_shaped_tokenizer(tokenizer_name).save_pretrained(str(directory / "tokenizer"))
    config = make_config().to_dict()
    config["llm"]["tokenizer_path"] = str(directory / "tokenizer")
    (directory / "model.yaml").write_text(yaml.safe_dump(config))
    samples = np.random.default_rng(0).normal(size=(100, 7))
    save_dataset_statistics(directory / "dataset_statistics.json",
                            {"bench": DatasetStatistics.from_samples(samples, samples, 1)})
    return ["import-checkpoint", str(directory / "step-000000-epoch-00-loss=0.0000.pt"), "--model-config",
            str(directory / "model.yaml"), "--statistics", str(directory / "dataset_statistics.json"),
            "--output", str(directory / "checkpoint")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="2.7b", help="full-size model (default 2.7b)")
    parser.add_argument("--pt-dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="dtype of the reference .pt's weights (default bfloat16)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated load dtypes (default: both)")
    parser.add_argument("--dir", type=Path, help="work directory to keep (default: a temporary one, removed)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="hybridvla-load-")) / "work"
    try:
        argv = write_import_inputs(args.preset, getattr(torch, args.pt_dtype), work)
        pt_gib = Path(argv[1]).stat().st_size / 2**30
        peak, seconds, run = peak_memory([sys.executable, "-m", "hybridvla_core.cli", *argv])
        if run.returncode != 0:
            sys.exit(f"import failed (exit {run.returncode}): {run.stderr.strip()[-2000:]}")
        written = (work / "checkpoint" / "model.safetensors").stat().st_size / 2**30
        print(f"{args.preset}: import of a {pt_gib:.2f} GiB {args.pt_dtype} .pt: peak memory {peak:5.2f} GiB, "
              f"{seconds:.0f} s; model.safetensors {written:.2f} GiB")
        for dtype in args.dtypes.split(","):
            peak, seconds, run = peak_memory([sys.executable, "-c", LOAD, str(work / "checkpoint"), dtype])
            if run.returncode != 0:
                print(f"  load as {dtype:9s}: failed (exit {run.returncode}): {run.stderr.strip()[-2000:]}")
                continue
            weights = json.loads(run.stdout.splitlines()[-1])
            print(f"  load as {dtype:9s}: peak memory {peak:5.2f} GiB for {weights:5.2f} GiB of weights, "
                  f"{seconds:.0f} s")
    finally:
        if args.dir is None:
            shutil.rmtree(work.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
