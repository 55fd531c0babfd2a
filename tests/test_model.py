"""CloudLULC-Net and baselines: shapes, gradients, ORM behaviour, anchors, overfitting (CPU, small)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cloudlulc.model import MODEL_NAMES, CloudLULCNet, ModelOutput, build_model
from cloudlulc.model.anchors import SemanticAnchors, mode_downsample
from cloudlulc.simulate import simulate_scene
from cloudlulc.training import SimulatedDataConfig, SimulatedPatches, TrainConfig, compute_loss, prepare_batch, train

torch.set_num_threads(1)  # more threads thrash on a shared, loaded CPU
SMALL = dict(widths=(8, 16, 16, 32), latent_dim=32, decoder_width=16, usmt_heads=4)


def inputs(b: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 12, h, w, generator=g) * 0.4, torch.randn(b, 2, h, w, generator=g) * 4 - 14


@pytest.mark.parametrize("hw", [(32, 32), (48, 80), (64, 16)])
def test_cloudlulc_net_output_shapes(hw):
    model = CloudLULCNet().eval()
    h, w = hw
    out = model(*inputs(2, h, w))
    assert isinstance(out, ModelOutput)
    assert model.stride == 16
    assert out.logits.shape == (2, 6, h, w)
    assert out.reliability.shape == (2, 1, h, w)
    assert float(out.reliability.detach().min()) >= 0 and float(out.reliability.detach().max()) <= 1
    assert out.latent.shape == (2, model.config.latent_dim, h // 16, w // 16)
    # pyramid is coarse to fine, one level per encoder stage
    assert [tuple(r.shape[-2:]) for r in out.reliability_pyramid] == [(h // s, w // s) for s in (16, 8, 4, 2)]


def test_indivisible_input_is_refused_with_clear_error():
    model = CloudLULCNet().eval()
    with pytest.raises(ValueError, match="multiples of the network stride 16"):
        model(*inputs(1, 40, 32))


def test_nan_inputs_give_finite_outputs():
    model = CloudLULCNet().eval()
    opt, sar = inputs(1, 32, 32)
    opt[:, :, :8] = float("nan")
    sar[:, 1, 5, 5] = float("nan")
    out = model(opt, sar)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.reliability).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_registered_model_forwards(name):
    overrides = {"widths": (32, 32, 48, 48)} if name == "cloudlulc-net-base" else {}
    model = build_model(name, **overrides).eval()
    out = model(*inputs(1, 32, 48))
    assert out.logits.shape == (1, 6, 32, 48)
    assert 32 % model.stride == 0


def _batch(b=2, size=32, seed=3):
    ds = SimulatedPatches(SimulatedDataConfig(n_patches=b, patch_size=size, cloud_cover=(0.3, 0.6), seed=seed))
    return torch.utils.data.default_collate([ds[i] for i in range(b)])


@pytest.mark.parametrize("name", ["cloudlulc-net-tiny", "reconstruct-then-segment", "unet-early-fusion"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name).train()
    batch = prepare_batch(_batch(), model, torch.device("cpu"))
    out = model(batch["optical"], batch["sar"])
    loss, parts = compute_loss(model, out, batch, TrainConfig(model=name))
    loss.backward()
    if name == "cloudlulc-net-tiny":
        assert {"ce", "anchor", "reliability"} <= set(parts)
    if name == "reconstruct-then-segment":
        assert "reconstruction" in parts
    dead = [n for n, p in model.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert not dead, f"no gradient reaches {dead}"


def test_mode_downsample_majority_and_ignore():
    labels = torch.full((1, 4, 4), 255, dtype=torch.long)
    labels[0, :2, :2] = torch.tensor([[1, 1], [1, 2]])  # majority 1
    labels[0, :2, 2:] = torch.tensor([[3, 255], [255, 255]])  # 1/4 labelled -> ignore
    labels[0, 2:, :2] = torch.tensor([[4, 4], [5, 255]])  # 3/4 labelled, majority 4
    got = mode_downsample(labels, (2, 2), num_classes=6)
    assert got.tolist() == [[[1, 255], [4, 255]]]


def test_anchor_loss_decreases_when_latents_are_optimised():
    torch.manual_seed(0)
    anchors = SemanticAnchors(num_classes=6, dim=16, momentum=0.9, temperature=0.1).train()
    latent = torch.randn(2, 16, 4, 4, requires_grad=True)
    labels = torch.randint(0, 6, (2, 4, 4)).repeat_interleave(8, 1).repeat_interleave(8, 2)  # 32x32
    opt = torch.optim.Adam([latent], lr=0.05)
    losses = []
    for _ in range(40):
        loss = anchors(latent, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert bool(anchors.initialised.all())
    assert losses[-1] < 0.5 * losses[0]
    # the latent now sits next to its class anchor
    assert (anchors.classify(latent.detach()) == mode_downsample(labels, (4, 4), 6)).float().mean() == 1.0


def test_tiny_model_overfits_one_batch_and_anchor_loss_falls():
    torch.manual_seed(0)
    model = build_model("cloudlulc-net-tiny", **SMALL).train()
    batch = prepare_batch(_batch(b=2, size=32, seed=5), model, torch.device("cpu"))
    cfg = TrainConfig(anchor_weight=0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    anchor_losses = []
    for _ in range(60):
        out = model(batch["optical"], batch["sar"])
        loss, parts = compute_loss(model, out, batch, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        anchor_losses.append(parts["anchor"])
    model.eval()
    with torch.no_grad():
        pred = model(batch["optical"], batch["sar"]).logits.argmax(1)
    acc = (pred == batch["label"]).float().mean().item()
    assert acc > 0.9, acc
    assert np.mean(anchor_losses[-5:]) < np.mean(anchor_losses[:5])


def test_orm_reliability_is_lower_under_thick_cloud_after_short_training(tmp_path):
    cfg = TrainConfig(
        model="cloudlulc-net-tiny",
        model_overrides=SMALL,
        train_data=SimulatedDataConfig(n_patches=16, patch_size=32, cloud_cover=(0.3, 0.7), seed=1),
        epochs=1,
        steps_per_epoch=40,
        batch_size=4,
        lr=3e-3,
        warmup_steps=5,
        device="cpu",
        out_dir=tmp_path,
        progress=False,
    )
    model = train(cfg).model.eval()
    cloudy, clear = [], []
    for seed in (101, 102, 103):
        scene = simulate_scene(seed, shape=(64, 64), cloud_cover=0.5)
        with torch.no_grad():
            r = (
                model(torch.from_numpy(scene.optical)[None], torch.from_numpy(scene.sar)[None])
                .reliability[0, 0]
                .numpy()
            )
        thick = scene.cloud_opacity > 0.7
        assert thick.sum() > 50 and (~scene.cloud).sum() > 50
        cloudy.append(r[thick].mean())
        clear.append(r[~scene.cloud].mean())
    assert np.mean(cloudy) + 0.15 < np.mean(clear), (cloudy, clear)


def test_channel_norm_uses_no_spatial_statistics():
    """norm_groups=0: each pixel is normalised over its own channels, so a crop normalises as in the
    whole tile (GroupNorm's spatial statistics made maps depend on the tile size)."""
    from cloudlulc.model.layers import ChannelNorm, group_norm

    x = torch.randn(2, 16, 32, 32) * 3 + 1
    cn = group_norm(16, 0)
    assert isinstance(cn, ChannelNorm)
    assert torch.allclose(cn(x)[..., :8, :8], cn(x[..., :8, :8]), atol=1e-6)
    gn = group_norm(16, 8)
    assert not torch.allclose(gn(x)[..., :8, :8], gn(x[..., :8, :8]), atol=1e-3)
    net = build_model("cloudlulc-net-tiny", norm_groups=0)
    assert sum(p.numel() for p in net.parameters()) == sum(
        p.numel() for p in build_model("cloudlulc-net-tiny").parameters()
    )
