#!/usr/bin/env bash
# The GPU checks of the inference path, as one call of the device tool (a session gets 15 minutes of
# device time, the machine's start included, so everything runs in one prepared command).
#
# Here, first (once per dependency change; .whl/ is git-ignored):
#     .venv/bin/python scripts/device_site.py
# then the device tool's run, from the repository root:
#     command: bash scripts/device_check.sh      carry: [".whl"]      timeout_s: 480
#
# On the GPU machine (Python 3.12 with CUDA PyTorch, no registry) it unpacks the carried packages,
# runs benchmarks/gpu_check.py (GPU map == CPU map, one model copy per process, peak GPU memory)
# and benchmarks/inference.py on CUDA for the tiny and the base network. Logs go to $OUT, which the
# tool brings back. Exit status: 0 when every step succeeded.
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
site=/tmp/cloudlulc-site
if [ ! -f .whl/site.tar.xz ]; then
    echo "no .whl/site.tar.xz: run '.venv/bin/python scripts/device_site.py' here and carry .whl" >&2
    exit 3
fi
mkdir -p "$site" && tar -xJf .whl/site.tar.xz -C "$site" || { echo "unpacking .whl/site.tar.xz failed" >&2; exit 3; }
export PYTHONPATH="$site:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import sys, torch, numpy, xarray, zarr, rasterio; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), "numpy", numpy.__version__, "xarray", xarray.__version__, "zarr", zarr.__version__, "rasterio", rasterio.__version__)' \
    | tee -a "$OUT/gpu.txt" || exit 3

rc=0
step() {  # step NAME TIMEOUT_S CMD...: run CMD with a time limit, its output to the console and $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local status=${PIPESTATUS[0]}
    [ "$status" -eq 0 ] || { echo "== $name FAILED (exit $status)"; rc=1; }
}
step gpu_check 120 python3 benchmarks/gpu_check.py --size 1024 --dask-workers 8
step inference_tiny 150 python3 benchmarks/inference.py --device cuda --skip-memory --rounds 3 --dask-workers 8
step inference_base 150 python3 benchmarks/inference.py --device cuda --model cloudlulc-net-base --tile 512 \
    --batch-size 16 --chunk 2048 --skip-memory --rounds 3 --dask-workers 8
exit $rc
