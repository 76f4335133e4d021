"""`hybridvla bench --json` prints one JSON object with the promised figures (values are not timed asserts)."""
import json

from hybridvla_core.cli import main


def test_bench_json(capsys):
    assert main(["bench", "--json", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("cached_vs_uncached_speedup", "single_vs_reference_schedule_speedup", "max_abs_diff_cached_uncached",
                "hz_hybrid", "hz_diffusion", "hz_autoregressive"):
        assert result[key] > 0 or key == "max_abs_diff_cached_uncached", key
    assert result["prefix_tokens"] >= 500 and len(result["views"]) >= 2
    assert result["max_abs_diff_cached_uncached"] <= 1e-4
    assert {"prefill", "denoise", "autoregressive"} <= set(result["stage_ms"]["hybrid"])


def test_full_size_memory_estimate_on_meta(capsys):
    """--estimate-memory sizes the 7B without building it: weights from its parameter count, the KV cache from
    Llama-2-7B's published shape (32 layers x 32 key/value heads x 128 dims, keys and values, 2 bytes in bf16)."""
    assert main(["bench", "--preset", "7b", "--estimate-memory", "--json"]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert estimate["parameters_by_group"]["llm_backbone"] == 6_738_415_616 + 2 * 64 * 4096  # + 64 new rows
    assert estimate["weights_gib"]["bfloat16"] == estimate["parameters"] * 2 / 2**30
    assert estimate["kv_cache_gib"]["bfloat16"] == estimate["step_tokens"] * 2 * 32 * 32 * 128 * 2 / 2**30
    assert estimate["step_tokens"] > estimate["prefix_tokens"] > 256 + 64  # front view + pooled wrist view + text


def test_full_size_presets_need_random_weights_said(capsys):
    assert main(["bench", "--preset", "2.7b"]) == 2
    assert "--random-weights" in capsys.readouterr().err
