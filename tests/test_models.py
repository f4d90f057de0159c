"""FIVA generator and discriminator: shapes, the owned face region, ICNR, weights round trip."""
import pytest
import torch
from conftest import inner_face_detail

from fiva.models import Discriminator, FIVAGenerator, GeneratorConfig, load_generator, save_generator
from fiva.models.layers import UpBlock


def test_generator_outputs_image_mask_and_blend():
    torch.manual_seed(0)
    g = FIVAGenerator()
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    z = torch.randn(2, 128)
    x_a, m, x_hat = g(x, z)
    assert x_a.shape == x.shape and m.shape == (2, 1, 112, 112) and x_hat.shape == x.shape
    assert torch.allclose(x_hat, m * x_a + (1 - m) * x)
    assert (m >= g.ellipse - 1e-6).all()  # the inner face is always generated
    assert m[:, :, 56, 56].min() == 1.0 and m[:, :, 2, 2].max() < 0.5


def test_identity_conditioning_changes_the_output():
    torch.manual_seed(0)
    g = FIVAGenerator()
    torch.nn.init.normal_(g.head.weight, std=0.05)
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    a = g(x, torch.randn(1, 128))[0]
    b = g(x, torch.randn(1, 128))[0]
    assert (a - b).abs().mean() > 1e-4


def test_icnr_starts_pixel_shuffle_as_nearest_neighbour():
    torch.manual_seed(0)
    up = UpBlock(8, 4, 4)
    y = torch.nn.functional.leaky_relu(up.shuffle(up.expand(torch.randn(1, 8, 5, 5))), 0.2)
    assert torch.allclose(y[..., 0::2, 0::2], y[..., 1::2, 1::2]) and torch.allclose(y[..., 0::2, 0::2], y[..., 0::2, 1::2])


def test_discriminator_gives_patch_logits():
    assert Discriminator(112)(torch.zeros(3, 3, 112, 112)).shape == (3, 1, 7, 7)
    assert Discriminator(256, patch=8)(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 8, 8)


def test_fiva_256_config_runs():
    g = FIVAGenerator(GeneratorConfig.named("fiva-256"))
    x_a, m, _ = g(torch.zeros(1, 3, 256, 256), torch.randn(1, 128))
    assert x_a.shape == (1, 3, 256, 256) and m.shape == (1, 1, 256, 256)


def test_weights_round_trip_in_half_precision(tmp_path):
    torch.manual_seed(0)
    g = FIVAGenerator()
    torch.nn.init.normal_(g.head.weight, std=0.05)
    save_generator(g, tmp_path / "g.safetensors")
    h = load_generator(tmp_path / "g.safetensors")
    x, z = torch.rand(1, 3, 112, 112) * 2 - 1, torch.randn(1, 128)
    diff = (g(x, z)[2] - h(x, z)[2]).abs()
    assert diff.mean() < 2e-3 and diff.max() < 0.05  # under 1 and 7 grey levels
    assert h.cfg == g.cfg


def test_modulated_generator_grows_from_a_bottleneck_only_checkpoint_unchanged(tmp_path):
    import torch

    from fiva.models import Discriminator, FIVAGenerator, GeneratorConfig
    from fiva.train.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    small = FIVAGenerator(GeneratorConfig())
    with torch.no_grad():
        small.head.weight.normal_(0, 0.05)  # a trained-looking head, so outputs depend on everything
    D = Discriminator(112)
    save_checkpoint(tmp_path / "ck.safetensors", small, D, 7, half=False)
    grown = FIVAGenerator(GeneratorConfig.named("fiva-112-mod"))
    assert load_checkpoint(tmp_path / "ck.safetensors", grown, Discriminator(112)) == 7
    x, z = torch.rand(2, 3, 112, 112) * 2 - 1, torch.randn(2, 128)
    with torch.no_grad():
        for a, b in zip(small(x, z), grown(x, z)):
            assert torch.allclose(a, b, atol=1e-5)  # zero-initialised FiLM: the same function
        grown.film[0].weight.normal_(0, 0.1)
        assert not torch.allclose(small(x, z)[0], grown(x, z)[0], atol=1e-3)  # and z now reaches the decoder
    with pytest.raises(RuntimeError):  # but a checkpoint missing other weights is still refused
        load_checkpoint(tmp_path / "ck.safetensors", FIVAGenerator(GeneratorConfig(channels=(32, 48, 96, 160, 320))), D)


@pytest.mark.parametrize("name", ["fiva-112-lp8", "fiva-112-lp8w", "fiva-112-lp16w"])
def test_low_pass_generator_never_sees_the_inner_faces_fine_detail_but_keeps_the_rest(name):
    torch.manual_seed(0)
    g = FIVAGenerator(GeneratorConfig.named(name))
    torch.nn.init.normal_(g.head.weight, std=0.05)
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    detail = inner_face_detail(x)
    z = torch.randn(1, 128)
    # float rounding through the low pass and the network moves outputs by ~1e-5 (thread count
    # decides which side of 1e-5); seeing the detail moves them by ~0.3 (the paper's, below)
    assert torch.allclose(g(x, z)[0], g(x + detail, z)[0], atol=1e-4)
    outside = 1 - g.ellipse
    x_far = x.clone()
    x_far[..., :8, :8] += 0.5  # a corner, outside the face: still seen (and kept by the blend)
    assert not torch.allclose(g(x, z)[0] * outside, g(x_far, z)[0] * outside)
    paper = FIVAGenerator()
    assert not torch.allclose(paper(x, z)[0], paper(x + detail, z)[0])  # the paper's generator sees it


def test_prior_generator_sees_only_the_inner_faces_tone_and_ships_its_prior(tmp_path):
    """fiva-112-mf: inside the ellipse the generator sees the prior face in X_t's colours, nothing
    else of X_t there; the prior is saved with the weights and grows into an older checkpoint."""
    from fiva.train.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    g = FIVAGenerator(GeneratorConfig.named("fiva-112-mf"))
    torch.nn.init.normal_(g.head.weight, std=0.05)
    with torch.no_grad():
        g.prior.copy_(torch.rand(1, 3, 112, 112) - 0.5)
    x, z = torch.rand(1, 3, 112, 112) - 0.5, torch.randn(1, 128)
    core = (g.ellipse[0, 0] == 1).flatten()  # full weight: shuffling keeps the weighted mean and spread
    idx = core.nonzero()[:, 0]
    shuffled = x.flatten(2).clone()
    shuffled[..., idx] = shuffled[..., idx[torch.randperm(len(idx))]]
    x_shuffled = shuffled.view_as(x)
    assert not torch.allclose(x, x_shuffled)
    assert torch.allclose(g(x, z)[0], g(x_shuffled, z)[0], atol=1e-4)  # another face of the same tone: same output
    darker = x - 0.3 * g.ellipse  # a darker skin tone reaches the generator
    inner = lambda t: (t * g.ellipse).sum() / g.ellipse.sum() / 3  # noqa: E731
    assert inner(g.conceal(darker)) < inner(g.conceal(x)) - 0.25
    x_far = x.clone()
    x_far[..., :8, :8] += 0.5  # a corner, outside the face: still seen
    assert not torch.allclose(g(x, z)[0] * (1 - g.ellipse), g(x_far, z)[0] * (1 - g.ellipse))

    save_generator(g, tmp_path / "g.safetensors")
    h = load_generator(tmp_path / "g.safetensors")
    assert torch.allclose(h.prior, g.prior, atol=1e-3)  # half precision

    old = FIVAGenerator(GeneratorConfig.named("fiva-112-lp16w"))
    save_checkpoint(tmp_path / "ck.safetensors", old, Discriminator(112), 5, half=False)
    grown = FIVAGenerator(GeneratorConfig.named("fiva-112-mf"))
    assert load_checkpoint(tmp_path / "ck.safetensors", grown, Discriminator(112)) == 5
    assert not grown.prior.any()  # left for training to set (train/generator.py)
