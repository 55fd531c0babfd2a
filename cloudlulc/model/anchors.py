"""Semantic anchor-guided optimisation.

Why: the cross-entropy loss only constrains the decoder output; under cloud the latent of a pixel can
drift towards whatever the corrupted optical signal suggests. Class *anchors* — one prototype per
LULC class in the USMT latent space, derived from the labels — give the latent an explicit target:
each token is pulled towards its class anchor and pushed away from the others, so cloudy and clear
pixels of the same class share one representation and the decoder sees consistent semantics.

Design:

* labels are reduced to the latent resolution by majority vote (mode) over each cell, ignoring 255;
  cells with fewer than ``min_valid`` labelled pixels are ignored;
* anchors are EMA prototypes (non-trainable buffers, saved with the weights): after each training
  batch, ``a_k <- m a_k + (1 - m) mean(z | label = k)`` on L2-normalised latents; a class seen for the
  first time is initialised with its batch mean;
* the loss is an InfoNCE / prototype cross-entropy on cosine similarities with temperature tau:
  ``-log softmax_k(cos(z, a_k) / tau)[label]``; anchors are detached (they are targets), classes never
  seen yet are excluded from the softmax.

The total training loss is ``CE(logits, y) + lambda_anchor * L_anchor (+ lambda_rel * L_ORM)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: sums a tensor over the processes of a data-parallel run (identity in one process)
Reduce = Callable[[torch.Tensor], torch.Tensor]


def mode_downsample(
    labels: torch.Tensor, size: tuple[int, int], num_classes: int, ignore_index: int = 255, min_valid: float = 0.5
) -> torch.Tensor:
    """Majority class of each cell of ``labels`` [B,H,W] at ``size`` (h, w); ``ignore_index`` if too few labels."""
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    one_hot = F.one_hot(safe.long(), num_classes).permute(0, 3, 1, 2).float() * valid[:, None].float()
    counts = F.adaptive_avg_pool2d(one_hot, size)  # class fractions per cell
    frac_valid, mode = counts.sum(1), counts.argmax(1)
    return torch.where(frac_valid >= min_valid, mode, torch.full_like(mode, ignore_index))


class SemanticAnchors(nn.Module):
    """Class anchors in latent space (EMA buffers) and the anchor-guided contrastive loss."""

    anchors: torch.Tensor
    initialised: torch.Tensor

    def __init__(
        self, num_classes: int, dim: int, momentum: float = 0.95, temperature: float = 0.1, ignore_index: int = 255
    ) -> None:
        super().__init__()
        self.num_classes, self.momentum, self.temperature, self.ignore_index = (
            num_classes,
            momentum,
            temperature,
            ignore_index,
        )
        self.register_buffer("anchors", torch.zeros(num_classes, dim))
        self.register_buffer("initialised", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, z: torch.Tensor, y: torch.Tensor, reduce: Reduce | None = None) -> None:
        """EMA update from normalised latents ``z`` [N,D] with labels ``y`` [N] (all valid, N may be 0).

        ``reduce`` sums the per-class statistics over the processes of a data-parallel run (the
        trainer passes an all-reduce), so every process moves its anchors by the global batch's class
        means, exactly as one process holding the whole batch would.
        """
        k = self.num_classes
        sums = torch.zeros(k, self.anchors.shape[1], device=z.device, dtype=torch.float32)
        sums.index_add_(0, y, z.float())
        counts = torch.bincount(y, minlength=k).to(sums.dtype)
        stats = torch.cat([sums, counts[:, None]], dim=1)
        if reduce is not None:
            stats = reduce(stats)
        sums, counts = stats[:, :-1], stats[:, -1]
        seen = counts > 0
        mean = F.normalize(sums / counts.clamp_min(1)[:, None], dim=1).to(self.anchors.dtype)
        ema = F.normalize(self.momentum * self.anchors + (1 - self.momentum) * mean, dim=1)
        new = torch.where(self.initialised[:, None], ema, mean)
        self.anchors.copy_(torch.where(seen[:, None], new, self.anchors))
        self.initialised |= seen

    def loss_terms(
        self, latent: torch.Tensor, labels: torch.Tensor, reduce: Reduce | None = None
    ) -> tuple[torch.Tensor, int]:
        """The anchor loss summed over the labelled latent cells, and how many cells that is.

        In training mode the anchors are updated first (from detached latents, statistics summed
        by ``reduce``; see :meth:`update`). A data-parallel trainer divides the sum by the cell count
        of the whole global batch, so the mean matches a single process.
        """
        size = (latent.shape[-2], latent.shape[-1])
        y = mode_downsample(labels, size, self.num_classes, self.ignore_index).flatten()
        z = F.normalize(latent.float().permute(0, 2, 3, 1).reshape(-1, latent.shape[1]), dim=1)
        keep = y != self.ignore_index
        z, y = z[keep], y[keep]
        if self.training:
            self.update(z.detach(), y, reduce)  # every process takes part, even with no labelled cell
        if y.numel() == 0:
            return latent.sum() * 0.0, 0
        logits = z @ self.anchors.detach().t() / self.temperature
        logits = logits.masked_fill(~self.initialised[None, :], float("-inf"))
        return F.cross_entropy(logits, y, reduction="sum"), int(y.numel())

    def forward(self, latent: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Anchor loss (mean over labelled cells) for ``latent`` [B,D,h,w] and full-resolution ``labels`` [B,H,W].

        In training mode the anchors are updated first (from detached latents), then the loss is computed.
        """
        total, n = self.loss_terms(latent, labels)
        return total / max(n, 1)

    @torch.no_grad()
    def classify(self, latent: torch.Tensor) -> torch.Tensor:
        """Nearest-anchor class per latent cell [B,h,w] (a diagnostic of the latent space)."""
        z = F.normalize(latent.float(), dim=1)
        sim = torch.einsum("bdhw,kd->bkhw", z, self.anchors)
        sim = sim.masked_fill(~self.initialised[None, :, None, None], float("-inf"))
        return sim.argmax(1)
