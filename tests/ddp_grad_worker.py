"""Run by ``torchrun`` from tests/test_train_distributed.py: one DDP backward on this rank's half.

Every rank builds the same seeded tiny network and the same batch (see :func:`make_batch`), keeps
the patches a rank of the sampler would read (``rank::world_size``), runs the forward through
DistributedDataParallel, :func:`cloudlulc.training.compute_loss` and the backward; rank 0 saves the
all-reduced gradients, the loss parts and the updated anchors to ``argv[1]``.
"""

from __future__ import annotations

import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from cloudlulc.model import build_model
from cloudlulc.training import SimulatedDataConfig, SimulatedPatches, TrainConfig, compute_loss, prepare_batch
from cloudlulc.training.distributed import setup, teardown

SMALL = dict(widths=(8, 16, 16, 32), latent_dim=32, decoder_width=16, usmt_heads=4)


def make_batch() -> dict[str, torch.Tensor]:
    """Four patches; patch 0 (rank 0's) has most labels ignored, so the ranks count very different pixels."""
    ds = SimulatedPatches(SimulatedDataConfig(n_patches=4, patch_size=32, cloud_cover=(0.2, 0.8), seed=3))
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    batch["label"][0, :28] = 255
    batch["cloud"][0, :, :20] = 255
    return batch


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cloudlulc-net-tiny", **SMALL).train()


def main() -> None:
    torch.set_num_threads(1)
    ctx = setup("cpu")
    net = make_model()
    model = DistributedDataParallel(net)
    raw = {k: v[ctx.rank :: ctx.world_size] for k, v in make_batch().items()}
    batch = prepare_batch(raw, net, ctx.device)
    out = model(batch["optical"], batch["sar"])
    loss, parts = compute_loss(net, out, batch, TrainConfig(), ctx)
    loss.backward()
    if ctx.is_main:
        grads = {n: p.grad.detach().clone() for n, p in net.named_parameters()}
        torch.save({"grads": grads, "parts": parts, "anchors": net.anchors.anchors.clone()}, sys.argv[1])
    teardown(ctx)


if __name__ == "__main__":
    main()
