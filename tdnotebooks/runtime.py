"""Where and how big things run: device, mixed precision, seeding, and the size switch.

Every notebook and benchmark reads its scale through :func:`size` / :func:`pick`, so a single
environment variable, ``TDN_SIZE``, moves the whole course from the fast CPU defaults
(``small``) to paper-like settings for a GPU (``paper``).
"""

from __future__ import annotations

import os
import random
from typing import Any, TypeVar

import numpy as np

from tdnotebooks.validation import check_choice, check_int

__all__ = [
    "size", "pick", "get_device", "amp_dtype", "seed_everything", "is_distributed", "make_accelerator",
    "environment_report",
]

T = TypeVar("T")

SIZE_ENV_VAR = "TDN_SIZE"
SIZES = ("small", "paper")


def size() -> str:
    """The current size setting: ``"small"`` (default, seconds on a laptop CPU) or ``"paper"``."""
    value = os.environ.get(SIZE_ENV_VAR, "small").strip().lower() or "small"
    return check_choice(SIZE_ENV_VAR, value, SIZES)


def pick(small: T, paper: T) -> T:
    """Return ``small`` or ``paper`` according to :func:`size` (the one place the switch is read)."""
    return paper if size() == "paper" else small


def get_device(device: str | None = None) -> torch.device:  # noqa: F821
    """CUDA when present, else CPU; an explicit ``device`` is checked, not silently replaced."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    allowed = "allowed: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device"
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be None or a device name, {allowed}; got {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError:                        # torch's own list of every device type it knows
        raise ValueError(f"device={device!r} is not supported; {allowed}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but no CUDA GPU is available; use 'cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} was requested but this machine has {torch.cuda.device_count()} CUDA "
                         f"GPU(s) (cuda:0-cuda:{torch.cuda.device_count() - 1})")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was requested but Apple's MPS backend is not available here "
                         "(torch.backends.mps.is_available() is False: it needs a Mac with Apple silicon); "
                         "use 'cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r} is not supported; {allowed}")
    return dev


def amp_dtype(device: Any) -> torch.dtype | None:  # noqa: F821
    """Autocast dtype for ``device``: bf16 on GPUs that support it, else fp16 on CUDA; None on CPU."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all GPUs) in one call."""
    import torch

    seed = check_int("seed", seed, low=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def is_distributed() -> bool:
    """True in a process started by ``torchrun`` / ``accelerate launch`` with several processes."""
    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (torch.distributed.is_available()
                                                          and torch.distributed.is_initialized())


def make_accelerator(cpu: bool, mixed_precision: str = "no") -> Any:
    """An ``accelerate.Accelerator``: DDP across the processes ``torchrun`` started (gloo on CPU), else one.

    In a single process (a notebook) accelerate's process-wide state is reset first: it refuses other
    settings on a second call (e.g. ``cpu=True`` after a CUDA run).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if not is_distributed():
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision)


def environment_report() -> dict[str, str]:
    """Versions and hardware in one dict, for the first cell of every tutorial."""
    import platform

    import torch
    import transformers

    report = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(get_device()),
        "cpu threads": str(torch.get_num_threads()),
        "size (TDN_SIZE)": size(),
    }
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
    return report
