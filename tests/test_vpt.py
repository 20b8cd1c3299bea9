"""Visual prompt tuning: the prompted tower equals the plain one with no prompts, and prompts matter."""

import pytest
import torch

from advsimplex.vpt import PromptedVisionTransformer, add_visual_prompts
from helpers import micro_clip


@pytest.mark.parametrize("pool", ["tok", "avg"])
def test_zero_prompts_reproduce_the_tower(pool):
    model = micro_clip()
    model.visual.pool_type = pool
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = model.encode_image(x)
    add_visual_prompts(model, 0)
    torch.testing.assert_close(model.encode_image(x), expected, rtol=0, atol=0)


def test_prompts_change_the_output_and_receive_gradients():
    model = micro_clip()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    plain = model.encode_image(x).detach()
    prompted = add_visual_prompts(model, 4, init_std=0.5)
    assert prompted.prompts.shape == (4, 16) and prompted.prompts.dtype == torch.float64
    out = model.encode_image(x)
    assert out.shape == plain.shape and not torch.allclose(out, plain)
    out.square().sum().backward()
    assert prompted.prompts.grad is not None and prompted.prompts.grad.abs().sum() > 0


def test_bad_inputs():
    model = micro_clip()
    with pytest.raises(ValueError, match="num_prompts"):
        PromptedVisionTransformer(model.visual, -1)
    with pytest.raises(TypeError, match="VisionTransformer"):
        PromptedVisionTransformer(torch.nn.Linear(2, 2), 2)
    add_visual_prompts(model, 2)
    with pytest.raises(ValueError, match="already"):
        add_visual_prompts(model, 2)
