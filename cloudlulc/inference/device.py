"""Devices and per-process model copies for inference tasks.

``device="auto"`` is resolved where a task runs (a CPU client can drive GPU workers). The model is
copied to the device once per process and cached by a hash of its weights and configuration, so a
distributed worker receives the weights once and every task on it reuses the copy. One forward at a
time runs per GPU in a process; CPU forwards share the cores between Dask threads.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
from collections import OrderedDict

import torch

from cloudlulc.errors import CloudLULCError
from cloudlulc.model.calibration import calibration_of

log = logging.getLogger(__name__)


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the model's class name and state dict (names, dtypes, shapes, bytes).

    Used as the per-process cache key of device copies and recordable as provenance.
    """
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _model_key(model: torch.nn.Module, weights_key: str | None = None) -> str:
    """Cache key of a model: its weights plus its configuration and simple attributes.

    Two models with equal weights but a different configuration (or behaviour flags) must not share
    a cached device copy.
    """
    config = getattr(model, "config", None)
    dump = getattr(config, "model_dump_json", None)
    config_repr = dump() if callable(dump) else repr(config)
    simple = sorted(
        (k, repr(v))
        for k, v in vars(model).items()
        if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool, type(None), tuple))
    )
    h = hashlib.sha256((weights_key or weights_sha256(model)).encode())
    h.update(config_repr.encode())
    h.update(repr(calibration_of(model)).encode())
    h.update(repr(simple).encode())
    return h.hexdigest()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device to run on: ``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else
    is checked against the devices this process's torch sees (:func:`check_device`)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(check_device(device))


def check_device(device: str) -> str:
    """``device`` when this process's torch can run on it, else a :class:`DeviceError` saying which
    devices exist. ``"auto"`` always passes."""
    text = str(device).strip()
    if text == "auto":
        return text
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"device {text!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return text
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise DeviceError(f"device {text!r}: torch sees no CUDA GPU here; use device='auto' or 'cpu'")
        if dev.index is not None and dev.index >= n:
            raise DeviceError(f"device {text!r}: torch sees {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")
        return text
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"device {text!r}: Apple MPS is not available here; use device='auto' or 'cpu'")
        return text
    raise DeviceError(f"device {text!r} is not supported; use auto, cpu, cuda, cuda:N or mps")


class DeviceError(CloudLULCError, ValueError):
    """A device was asked for that this process's torch cannot run on."""


#: the autocast dtype of CUDA forwards. float16 rather than bfloat16: the demo weights' softmax moves
#: 10x less under it (``tests/test_inference.py::test_amp_dtype_keeps_the_demo_weights_predictions``)
AMP_DTYPE = torch.float16


_CACHE_LOCK = threading.Lock()


_DEVICE_MODELS: OrderedDict[tuple[str, str], torch.nn.Module] = OrderedDict()


_DEVICE_LOCKS: dict[str, threading.Lock] = {}


_MAX_CACHED_MODELS = 4


class ModelHandle:
    """A picklable reference to a model that resolves to a cached per-process, per-device copy.

    It enters the Dask graph once (a single key), so a distributed worker receives the weights once
    and every task on it reuses the same device copy.
    """

    def __init__(self, model: torch.nn.Module, weights_key: str | None = None) -> None:
        self.model = model
        self.weights_key = weights_key or weights_sha256(model)
        self.key = _model_key(model, self.weights_key)

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("cloudlulc-model", self.key)

    def on(self, device: torch.device) -> torch.nn.Module:
        cache_key = (self.key, str(device))
        with _CACHE_LOCK:
            cached = _DEVICE_MODELS.get(cache_key)
            if cached is not None:
                _DEVICE_MODELS.move_to_end(cache_key)
                return cached
            # A private copy: never move the caller's model or flip its train/eval mode.
            m = copy.deepcopy(self.model).to(device).eval()
            _DEVICE_MODELS[cache_key] = m
            while len(_DEVICE_MODELS) > _MAX_CACHED_MODELS:
                _DEVICE_MODELS.popitem(last=False)
            return m


def share_cores_between_forwards(device: str | torch.device = "auto") -> int | None:
    """Cap torch's intra-op threads so that the threaded scheduler's concurrent CPU forwards fit the
    cores: ``cores // Dask threads``, never raising what is set. Returns the thread count, or None
    where nothing applies (a GPU here, or a distributed client, whose worker processes Dask's nanny
    already starts with ``OMP_NUM_THREADS=1``).

    Why: torch sizes its pool to all cores, and every Dask thread's forward would use it, so 2
    threads on 2 cores would run 4 compute threads (docs/performance.md).
    """
    import dask.threaded
    from dask.system import CPU_COUNT

    scheduler = dask.base.get_scheduler()  # None: nothing configured, so arrays use the threaded one
    # the scheduler first: with a distributed client the device is the workers' (a CPU-only flow
    # process may drive GPU workers), so it is not resolved here
    if scheduler not in (None, dask.threaded.get) or resolve_device(device).type != "cpu":
        return None
    workers = dask.config.get("num_workers", None) or CPU_COUNT
    threads = min(torch.get_num_threads(), max(1, CPU_COUNT // workers))
    if threads != torch.get_num_threads():
        log.info(
            "torch intra-op threads %d -> %d: %d Dask threads share %d cores",
            torch.get_num_threads(),
            threads,
            workers,
            CPU_COUNT,
        )
        torch.set_num_threads(threads)
    return threads


def device_lock(device: torch.device) -> threading.Lock | None:
    """One forward at a time per GPU in a process (threads would only contend for memory)."""
    if device.type == "cpu":
        return None
    with _CACHE_LOCK:
        return _DEVICE_LOCKS.setdefault(str(device), threading.Lock())
