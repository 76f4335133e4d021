"""vision.resize "bicubic" resizes as the reference's timm/torchvision transform does on a PIL image
(Resize((S, S), interpolation=BICUBIC), i.e. PIL's antialiased bicubic), checked against PIL itself."""
import numpy as np
import pytest
import torch
from PIL import Image

from hybridvla_core.model.vision import images_to_pixels


@pytest.mark.parametrize("size", [(480, 640), (240, 320), (100, 90)])
def test_bicubic_matches_pil(size):
    rng = np.random.default_rng(0)
    # smooth content plus noise: the filters' overshoot at edges is exercised, not only flat regions
    y, x = np.mgrid[0:size[0], 0:size[1]]
    base = (127 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0))[..., None] + rng.normal(0, 20, (*size, 3))
    frame = np.clip(base, 0, 255).astype(np.uint8)
    pil = np.asarray(Image.fromarray(frame).resize((224, 224), Image.BICUBIC), dtype=np.float64) / 255.0
    ours = images_to_pixels([frame], 224, "cpu", torch.float32, resize="bicubic")[0].permute(1, 2, 0).double().numpy()
    # PIL rounds to 8 bits after each of its two passes (measured here: max 3.7/255, mean 0.31/255).
    assert np.abs(ours - pil).max() <= 4.0 / 255
    assert np.abs(ours - pil).mean() < 0.5 / 255
    bilinear = images_to_pixels([frame], 224, "cpu", torch.float32)[0].permute(1, 2, 0).double().numpy()
    assert np.abs(bilinear - pil).mean() > np.abs(ours - pil).mean()  # the filter choice is what matters here
