"""Parameter count and GFLOPs per 512 x 512 patch for every registered model (prints a table).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on a forward pass (one multiply-add
= 2 FLOPs; convolutions, matmuls and attention are counted, element-wise ops are not). The pass runs on
the ``meta`` device, so no real computation or memory is needed and the script takes seconds on a CPU.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from cloudlulc.model import MODEL_NAMES, build_model


def measure(name: str, size: int = 512) -> tuple[int, float]:
    params = sum(p.numel() for p in build_model(name).parameters())
    with torch.device("meta"):
        model = build_model(name).eval()
        optical, sar = torch.empty(1, 12, size, size), torch.empty(1, 2, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(optical, sar)
    return params, counter.get_total_flops() / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    print(f"| model | parameters | GFLOPs / {args.size}x{args.size} patch |")
    print("|---|---:|---:|")
    for name in MODEL_NAMES:
        params, gflops = measure(name, args.size)
        print(f"| {name} | {params:,} | {gflops:.1f} |")


if __name__ == "__main__":
    main()
