"""GPU checks of the inference path that CPU-only CI cannot make; run where CUDA is present.

``predict_cube`` on a CUDA device runs the network under ``torch.autocast(AMP_DTYPE)`` from pinned
host memory, with one device copy of the model per process (:mod:`cloudlulc.inference`). This
script maps one simulated AOI (SIMULATED DATA, the demo catalog at ``--size`` px through catalog
pairing and ``build_cube``, as ``benchmarks/inference.py`` does) with the committed demo weights on
the CPU and on the GPU, and checks:

1. ``device="auto"`` resolves to CUDA;
2. the GPU map is the CPU map: the same nodata pixels, at least ``--min-agreement`` of the valid
   pixels in the same class, confidence and optical reliability within a few points (AMP rounding);
3. the process holds one device copy of the model after several runs (no copy per task);
4. the GPU run's wall time (after a warm-up run) and peak GPU memory, printed.

Exit status: 0 when every check holds, 1 when one fails, 2 when CUDA is absent (``--device cpu``
runs the same comparison CPU against CPU, to try the script without a GPU).

Example (the device tool: ``scripts/device_check.sh`` installs what the GPU machine lacks first)::

    python benchmarks/gpu_check.py --size 1024
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def compare_maps(ref, test, min_agreement: float) -> list[str]:
    """Failures (empty when the maps agree) of ``test`` against ``ref`` (computed predict_cube datasets)."""
    from cloudlulc.classes import NODATA

    failures = []
    lulc_ref, lulc = ref["lulc"].values, test["lulc"].values
    nodata_ref, nodata = lulc_ref == NODATA, lulc == NODATA
    if not np.array_equal(nodata_ref, nodata):
        failures.append(f"nodata differs at {int((nodata_ref != nodata).sum())} pixels")
    valid = ~nodata_ref & ~nodata
    agreement = float((lulc_ref[valid] == lulc[valid]).mean()) if valid.any() else 1.0
    print(
        f"  lulc: {agreement:.4%} of {int(valid.sum()):,} valid pixels in the same class "
        f"(nodata pixels: {int(nodata_ref.sum()):,})"
    )
    if agreement < min_agreement:
        failures.append(f"lulc agreement {agreement:.4%} < {min_agreement:.2%}")
    for name, tolerance in (("confidence", 3), ("optical_reliability", 3)):
        a = ref[name].values[valid].astype(np.int16)
        b = test[name].values[valid].astype(np.int16)
        diff = np.abs(a - b)
        worst = int(diff.max()) if diff.size else 0
        within = float((diff <= tolerance).mean()) if diff.size else 1.0
        print(f"  {name}: max |diff| {worst} points, {within:.4%} within {tolerance} points, mean {diff.mean():.3f}")
        if within < min_agreement:
            failures.append(f"{name}: only {within:.4%} of valid pixels within {tolerance} points")
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="device under test (cuda, cuda:1; cpu to try the script)")
    p.add_argument("--size", type=int, default=1024, help="AOI side in pixels of the simulated catalog")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chunk", type=int, default=512, help="cube chunk side")
    p.add_argument("--dask-workers", type=int, default=4)
    p.add_argument("--runs", type=int, default=3, help="GPU runs (the first warms up; the model copy must be reused)")
    p.add_argument("--min-agreement", type=float, default=0.995)
    args = p.parse_args()

    import dask
    import torch
    from inference import catalog_cube, write_benchmark_catalog

    from cloudlulc.inference import AMP_DTYPE, predict_cube, resolve_device
    from cloudlulc.inference.device import _DEVICE_MODELS
    from cloudlulc.model import demo_weights_path, from_pretrained

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here: nothing to check (use --device cpu to try the script)", file=sys.stderr)
        return 2
    failures: list[str] = []
    print(
        f"torch {torch.__version__}, device under test {device}"
        + (f" ({torch.cuda.get_device_name(device)}), AMP dtype {AMP_DTYPE}" if device.type == "cuda" else "")
    )
    auto = resolve_device("auto")
    print(f"device='auto' resolves to {auto}")
    if device.type == "cuda" and auto.type != "cuda":
        failures.append(f"device='auto' resolved to {auto} on a machine with CUDA")

    model = from_pretrained(demo_weights_path()).eval()
    options = {"tile": args.tile, "overlap": args.overlap, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp, dask.config.set(scheduler="threads", num_workers=args.dask_workers):
        cat = write_benchmark_catalog(Path(tmp) / "catalog", args.size)
        cube, _ = catalog_cube(cat, args.chunk, args.size)
        cube = cube.persist()  # both sides classify the same loaded cube: the check is the network's device
        print(
            f"AOI {cube.sizes['y']} x {cube.sizes['x']} px, cube chunks {args.chunk}, tile {args.tile}, "
            f"overlap {args.overlap}, batch {args.batch_size}, {args.dask_workers} Dask threads"
        )
        t = time.perf_counter()
        ref = predict_cube(cube, model, device="cpu", **options).compute()
        print(f"CPU map: {time.perf_counter() - t:.1f} s")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = []
        for _ in range(max(args.runs, 1)):
            t = time.perf_counter()
            test = predict_cube(cube, model, device=str(device), **options).compute()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - t)
        warm = min(seconds[1:]) if len(seconds) > 1 else seconds[0]
        px = cube.sizes["y"] * cube.sizes["x"]
        print(
            f"{device} map: first run {seconds[0]:.2f} s, warm {warm:.2f} s = {px / warm:,.0f} px/s "
            "(cube already in memory: network, blending and products only)"
        )
        if device.type == "cuda":
            print(
                f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB allocated, "
                f"{torch.cuda.max_memory_reserved(device) / 2**20:,.0f} MiB reserved"
            )
    print(f"{device} against the CPU:")
    failures += compare_maps(ref, test, args.min_agreement)
    copies = [key for key in _DEVICE_MODELS if key[1] == str(device)]
    print(f"device copies of the model in this process after {len(seconds)} runs: {len(copies)}")
    if len(copies) != 1:
        failures.append(f"{len(copies)} device copies of one model (expected 1: one per process)")
    for f in failures:
        print(f"FAILED: {f}")
    print("gpu_check:", "OK" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
