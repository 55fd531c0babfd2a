"""A separate process that writes one slice of a random scene into a store, slowly: what the store
fault tests run, kill and race. ``python tests/store_writer_child.py STORE TIME SEED [--delay S]
[--note TEXT] [--wait S] [--stale S]``; STORE may be an object-store URL. Prints
``written <action> <slot>`` when done."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import dask
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_helpers import ContextNet, make_cube, random_scene

from cloudlulc.inference import predict_cube
from cloudlulc.store import write_mosaic

H, W, CHUNK = 64, 80, 16  # 4 x 5 chunks


class SlowNet(ContextNet):
    """ContextNet that takes ``delay`` seconds per forward, so a write lasts long enough to kill."""

    def __init__(self, seed: int, delay: float) -> None:
        super().__init__(seed)
        self.delay = delay

    def forward(self, optical: torch.Tensor, sar: torch.Tensor):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        return super().forward(optical, sar)


def result(seed: int, delay: float):  # type: ignore[no-untyped-def]
    optical, sar, cloud = random_scene(H, W, seed=3)
    cube = make_cube(optical, sar, cloud, CHUNK)
    return predict_cube(cube, SlowNet(seed, delay), tile=16, overlap=4, batch_size=1, device="cpu")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("time")
    ap.add_argument("seed", type=int)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--note", default="")
    ap.add_argument("--wait", type=float, default=60.0, help="lease wait in seconds")
    ap.add_argument("--stale", type=float, default=120.0, help="object-store lease: heartbeat age taken over")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with dask.config.set(scheduler="synchronous"):
        s = write_mosaic(
            result(a.seed, a.delay),
            a.store,
            time=a.time,
            attrs={"model": {"name": f"slow-{a.seed}"}, "note": a.note},
            chunk_size=CHUNK,
            lease_wait_s=a.wait,
            lease_stale_s=a.stale,
        )
    print(f"written {s.action} {s.time_index}", flush=True)


if __name__ == "__main__":
    main()
