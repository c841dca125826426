"""Where and how big things run: device, mixed precision, seeding, the size switch, and experiment tracking.

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
    "check_report_to", "start_tracking", "end_tracking", "default_run_name", "environment_report",
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


def make_accelerator(cpu: bool, mixed_precision: str = "no", log_with: list[str] | None = None,
                     project_dir: str | None = None) -> Any:
    """An ``accelerate.Accelerator``: DDP across the processes ``torchrun`` started (gloo on CPU), else one.

    ``log_with``: tracker names from :func:`check_report_to` (accelerate's ``log_with``); ``project_dir``: the
    folder of the trackers that write files (TensorBoard). W&B runs go to the project ``$WANDB_PROJECT`` (default
    ``tdnotebooks``), named after the run. In a single process (a notebook) accelerate's process-wide state is
    reset first: it refuses other settings on a second call (e.g. ``cpu=True`` after a CUDA run).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if not is_distributed():
        AcceleratorState._reset_state(reset_partial_state=True)
    trackers: list[Any] = []
    for name in log_with or ():
        if name == "wandb":     # accelerate names the W&B *project* after the run: a project of runs instead
            from accelerate.tracking import WandBTracker

            trackers.append(WandBTracker(os.environ.get("WANDB_PROJECT", "tdnotebooks")))
        else:
            trackers.append(name)
    if not trackers:
        return Accelerator(cpu=cpu, mixed_precision=mixed_precision)
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision, log_with=trackers, project_dir=project_dir)


# ----------------------------------------------------------------------------------------------------------
# Experiment tracking (accelerate's trackers: TensorBoard, W&B, MLflow, ...)
# ----------------------------------------------------------------------------------------------------------

# accelerate's tracker names (LoggerType) and the package each needs
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet-ml",
                    "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab",
                    "trackio": "trackio"}
FILE_TRACKERS = ("tensorboard", "aim")  # accelerate's trackers that need a folder (requires_logging_directory)


def check_report_to(report_to: Any, logging_dir: Any = None, name: str = "report_to") -> list[str]:
    """The trackers ``report_to`` turns on, as accelerate's ``log_with`` names; [] for none.

    ``report_to``: None or ``"none"`` (no tracking), ``"all"`` (every installed tracker), a tracker name
    (``"tensorboard"``, ``"wandb"``, ``"mlflow"``, ...; several: a list or ``"tensorboard,wandb"``). Trackers that
    write files (TensorBoard, Aim) run only with a ``logging_dir``: without one they are left out, so the default
    ``"tensorboard"`` writes nothing until a folder is given. A chosen tracker that will run but whose package is
    not installed is a ValueError naming ``name``, before any work.
    """
    if report_to is None:
        return []
    names = report_to.split(",") if isinstance(report_to, str) else report_to
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{name} must be None, 'none', 'all' or tracker names (a str or a list of str) among "
                         f"{', '.join(map(repr, TRACKER_PACKAGES))}; got {report_to!r}")
    names = [n.strip().lower() for n in names if n.strip()]
    for tracker in names:
        if tracker not in ("none", "all", *TRACKER_PACKAGES):
            raise ValueError(f"{name} must be None, 'none', 'all' or tracker names among "
                             f"{', '.join(map(repr, TRACKER_PACKAGES))}; got {report_to!r}")
    if "none" in names:
        if len(names) > 1:
            raise ValueError(f"{name}='none' cannot be combined with trackers, got {report_to!r}")
        return []
    if logging_dir is None:     # a file tracker without a folder: not run (quiet notebooks); "all" alike
        names = [n for n in names if n not in FILE_TRACKERS]
    if not names:
        return []
    from accelerate.tracking import get_available_trackers

    available = [str(t) for t in get_available_trackers()]
    if "all" in names:
        return [t for t in available if logging_dir is not None or t not in FILE_TRACKERS]
    for tracker in names:
        if tracker not in available:
            raise ValueError(f"{name}={report_to!r} needs the {TRACKER_PACKAGES[tracker]} package, which is not "
                             f"installed (pip install {TRACKER_PACKAGES[tracker]}); or use {name}=None")
    return list(dict.fromkeys(names))


def start_tracking(accelerator: Any, run_name: str, config: dict) -> None:
    """``accelerator.init_trackers(run_name, config)`` with the config flattened to what every tracker stores
    (bools, numbers, str; lists and others as str). TensorBoard writes to ``project_dir/run_name``."""
    if not accelerator.log_with:
        return
    for tracker in accelerator.log_with:
        if getattr(tracker, "name", None) == "wandb":     # make_accelerator's: the W&B run's name
            tracker.init_kwargs.setdefault("name", run_name)
    flat = {k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}
    accelerator.init_trackers(run_name, config=flat)


def end_tracking(accelerator: Any) -> None:
    """Close the trackers (``accelerator.end_training()`` without destroying the process group, which a caller
    running several trainings under ``torchrun`` still needs)."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []


def default_run_name(prefix: str) -> str:
    """``prefix`` and the local time, ``sctd-20250101-120000``: one TensorBoard run per training."""
    import time

    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


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
