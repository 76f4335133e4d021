"""Action tokenizer, diffusion schedule, ensemble and config round trips."""
import json

import numpy as np
import pytest
import torch

from hybridvla_core.model.action_tokenizer import ActionTokenizer
from hybridvla_core.model.config import ModelConfig
from hybridvla_core.model.diffusion import DiffusionSchedule
from hybridvla_core.model.ensemble import ensemble
from hybridvla_core.model.presets import tiny_config


def test_action_tokenizer_round_trip_within_half_a_bin():
    tok = ActionTokenizer(32000)
    values = np.concatenate([np.linspace(-1, 1, 10001), [-1.0, 1.0, 0.0]])
    ids = tok.encode(values)
    assert ids.min() == 32000 - 256 and ids.max() == 31999  # the top 256 ids of the base vocabulary
    assert np.abs(tok.decode(ids) - values).max() <= tok.bin_width / 2 + 1e-12
    torch_decoded = tok.decode_torch(torch.as_tensor(ids)).numpy()
    np.testing.assert_allclose(torch_decoded, tok.decode(ids), atol=1e-6)
    assert tok.encode(5.0) == tok.encode(1.0)  # clipped


def test_ddim_schedule_matches_reference_numbers():
    schedule = DiffusionSchedule(100)
    assert schedule.ddim_timesteps(4) == [75, 50, 25, 0]
    abar = schedule.alphas_cumprod
    assert abar[0] > 0.999 and abar[-1] < 1e-3 and torch.all(abar[1:] < abar[:-1])
    # With the exact noise as the prediction, DDIM recovers the clean sample in any number of steps.
    clean = torch.rand(3, 2, 7) * 2 - 1
    noise = torch.randn_like(clean)
    for steps in (1, 4, 10):
        t0 = schedule.ddim_timesteps(steps)[0]
        x = schedule.add_noise(clean, noise, torch.full((3,), t0))
        for t in schedule.ddim_timesteps(steps):
            eps = (x - abar[t].sqrt().float() * clean) / (1 - abar[t]).sqrt().float()
            x = schedule.ddim_step(x, eps, t, steps)
        torch.testing.assert_close(x, clean, atol=1e-4, rtol=0)


def test_ddim_with_sample_prediction_recovers_the_clean_sample():
    schedule = DiffusionSchedule(100, prediction_type="sample")
    clean = torch.rand(3, 2, 7) * 2 - 1
    noise = torch.randn_like(clean)
    assert torch.equal(schedule.target(clean, noise), clean)
    assert torch.equal(DiffusionSchedule(100).target(clean, noise), noise)
    for steps in (1, 4, 10):
        t0 = schedule.ddim_timesteps(steps)[0]
        x = schedule.add_noise(clean, noise, torch.full((3,), t0))
        assert torch.equal(schedule.predict_clean(x, clean, torch.full((3,), t0)), clean)
        for t in schedule.ddim_timesteps(steps):
            x = schedule.ddim_step(x, clean, t, steps)
        torch.testing.assert_close(x, clean, atol=1e-4, rtol=0)
    # An x_0 off by d moves the result by d: the error is not amplified along the way.
    x = schedule.add_noise(clean, noise, torch.full((3,), 75))
    for t in schedule.ddim_timesteps(4):
        x = schedule.ddim_step(x, clean + 0.01, t, 4)
    torch.testing.assert_close(x, clean + 0.01, atol=1e-4, rtol=0)


def test_trailing_spacing_never_asks_the_denoiser_at_t0():
    schedule = DiffusionSchedule(100, prediction_type="sample", timestep_spacing="trailing")
    assert schedule.ddim_timesteps(4) == [99, 74, 49, 24]
    assert DiffusionSchedule(100).ddim_timesteps(4) == [75, 50, 25, 0]
    clean = torch.rand(3, 1, 7) * 2 - 1
    x = schedule.add_noise(clean, torch.randn_like(clean), torch.full((3,), 99))
    estimates = [clean + 0.1, clean + 0.05, clean - 0.02, clean + 0.01]
    for t, estimate in zip(schedule.ddim_timesteps(4), estimates):
        x = schedule.ddim_step(x, estimate, t, 4)
    torch.testing.assert_close(x, clean + 0.01)  # the x_0 estimate of the last step (t = 24), exactly
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        DiffusionSchedule(100, timestep_spacing="linspace")


def test_unknown_prediction_type_is_refused_in_one_line():
    data = tiny_config().to_dict()
    data["diffusion"]["prediction_type"] = "v_prediction"
    spacing = tiny_config().to_dict()
    spacing["diffusion"]["timestep_spacing"] = "linspace"
    with pytest.raises(ValueError, match=r"^diffusion.timestep_spacing must be one of \('leading', 'trailing'\), got 'linspace'$"):
        ModelConfig.from_dict(spacing)
    with pytest.raises(ValueError, match=r"^diffusion.prediction_type must be one of \('epsilon', 'sample'\), got 'v_prediction'$"):
        ModelConfig.from_dict(data)


def conf(value, dims=7, gripper=1.0):
    c = np.full(dims, value)
    c[6::7] = gripper
    return c


def test_ensemble_threshold_is_strict():
    diffusion = np.array([0.2, 0, 0, 0, 0, 0, 0.9])
    ar = np.array([0.4, 0, 0, 0, 0, 0, 0.8])
    at = ensemble(diffusion, ar, conf(0.96), "hybrid", 0.96)
    assert at.source == "diffusion" and at.action[0] == pytest.approx(0.2)
    above = ensemble(diffusion, ar, conf(0.9601, gripper=0.0), "hybrid", 0.96)  # gripper confidence ignored
    assert above.source == "average" and above.action[0] == pytest.approx(0.3) and above.action[6] == 1.0
    assert ensemble(diffusion, ar, conf(0.5), "autoregressive", 0.96).action[0] == pytest.approx(0.4)


def test_ensemble_gripper_disagreement_averages_to_closed():
    decision = ensemble(np.array([0, 0, 0, 0, 0, 0, 0.7]), np.array([0, 0, 0, 0, 0, 0, 0.2]), conf(0.99), "hybrid", 0.96)
    assert decision.action[6] == 0.0  # 1 and 0 average to 0.5, which is not > 0.5


def test_ensemble_dual_arm():
    diffusion = np.zeros(14)
    diffusion[[6, 13]] = [0.9, 0.1]
    ar = np.full(14, 0.2)
    ar[[6, 13]] = [0.6, 0.4]
    decision = ensemble(diffusion, ar, conf(0.97, 14), "hybrid", 0.96)
    assert decision.source == "average"
    assert decision.action[[6, 13]].tolist() == [1.0, 0.0]
    np.testing.assert_allclose(decision.action[:6], 0.1)
    assert ensemble(diffusion, ar, conf(0.5, 14), "hybrid", 0.96).source == "diffusion"


def test_model_config_json_round_trip_and_errors():
    config = tiny_config(action_dim=14, chunk=3)
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="perfect square"):
        ModelConfig.from_dict({**config.to_dict(), "views": [{"name": "wrist", "tokens": 10}]})
    with pytest.raises(ValueError, match="action_dim"):
        ModelConfig.from_dict({**config.to_dict(), "action_dim": 6})
    with pytest.raises(ValueError, match="ensemble_gripper must be one of"):
        ModelConfig.from_dict({**config.to_dict(), "ensemble_gripper": "vote"})
    older = config.to_dict()
    del older["ensemble_gripper"]  # a checkpoint saved before the field existed: the reference's rule
    assert ModelConfig.from_dict(older).ensemble_gripper == "average"


def test_ensemble_gripper_rule_autoregressive_lets_that_branch_decide():
    diffusion, ar = np.array([0.2, 0, 0, 0, 0, 0, 0.7]), np.array([0.4, 0, 0, 0, 0, 0, 0.2])
    # Diffusion opens, AR closes: both rules close.
    decision = ensemble(diffusion, ar, conf(0.99), "hybrid", 0.96, gripper="autoregressive")
    assert decision.source == "average" and decision.action[0] == pytest.approx(0.3) and decision.action[6] == 0.0
    diffusion[6], ar[6] = 0.2, 0.9  # diffusion closes, AR opens: the average closes, the AR rule opens
    assert ensemble(diffusion, ar, conf(0.99), "hybrid", 0.96).action[6] == 0.0
    assert ensemble(diffusion, ar, conf(0.99), "hybrid", 0.96, gripper="autoregressive").action[6] == 1.0
    # Below theta the diffusion branch is followed whole, its gripper included.
    assert ensemble(diffusion, ar, conf(0.5), "hybrid", 0.96, gripper="autoregressive").action[6] == 0.0
    with pytest.raises(ValueError, match="gripper rule must be one of"):
        ensemble(diffusion, ar, conf(0.99), "hybrid", 0.96, gripper="vote")
