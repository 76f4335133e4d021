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
