"""A torch Dataset of simulated scenes (SIMULATED DATA) yielding the dataset contract.

For tests, demos and the cloud sweep: no files, deterministic for a seed. Scene ``i`` uses land-cover
seed ``seed + i``; its cloud cover cycles through ``cloud_covers``. Because
:func:`cloudlulc.simulate.simulate_scene` draws the landscape, the clear reflectance, the cloud noise
field and the SAR speckle independently of ``cloud_cover`` (only the cloud threshold changes), two
splits with the same ``seed`` and different covers show the *same* land under nested clouds, which is
what the cloud sweep needs. ``cloud`` is the simulator's *true* cloud/shadow mask, not the SCL with
its simulated errors, so cloud bins and sweep levels are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cloudlulc.simulate import simulate_scene


class SimulatedSplit(Dataset):
    """``n_scenes`` simulated patches of ``shape`` as dicts: optical, sar, label, cloud, optical_clear.

    ``optical``/``optical_clear`` float32 [12,H,W] reflectance, ``sar`` float32 [2,H,W] dB, ``label``
    int64 [H,W] (0..5), ``cloud`` uint8 [H,W] (1 truly under cloud or shadow, 0 clear). Scenes are rendered on
    first access and kept (they are small).
    """

    def __init__(
        self,
        n_scenes: int = 8,
        shape: tuple[int, int] = (64, 64),
        cloud_covers: Sequence[float] = (0.0, 0.2, 0.45, 0.8),
        seed: int = 1000,
        *,
        season: float = 0.5,
    ) -> None:
        if n_scenes < 1:
            raise ValueError(f"n_scenes must be >= 1, got {n_scenes}")
        if not cloud_covers:
            raise ValueError("cloud_covers must list at least one cover fraction in [0, 1]")
        self.n_scenes = int(n_scenes)
        self.shape = (int(shape[0]), int(shape[1]))
        self.cloud_covers = [float(c) for c in cloud_covers]
        self.seed = int(seed)
        self.season = float(season)
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return self.n_scenes

    def cover_of(self, index: int) -> float:
        return self.cloud_covers[index % len(self.cloud_covers)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n_scenes:
            raise IndexError(f"scene {index} out of range (n_scenes={self.n_scenes})")
        if index not in self._cache:
            scene = simulate_scene(self.seed + index, self.shape, self.cover_of(index), season=self.season)
            self._cache[index] = {
                "optical": torch.from_numpy(scene.optical),
                "sar": torch.from_numpy(scene.sar),
                "label": torch.from_numpy(scene.labels.astype(np.int64)),
                "cloud": torch.from_numpy(np.asarray(scene.cloud_true).astype(np.uint8)),
                "optical_clear": torch.from_numpy(scene.optical_clear),
            }
        return self._cache[index]
