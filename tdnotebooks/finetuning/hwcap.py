"""HWCap by profiling: the largest batch per bucket whose forward + backward fits in GPU memory.

Algorithm 2 (Nagarajan & Raghunathan, 2023) caps every bucket's batch at HWCap, "what the hardware holds";
the reference code hard-codes a list. :func:`profile_hwcap` measures it on CUDA at each bucket's longest
length (:func:`~tdnotebooks.finetuning.planning.bucket_upper_lengths`); elsewhere it falls back to a token
budget. The result goes to ``BucketSampler(hwcap=...)``.

Example::

    caps = profile_hwcap(model, bucket_upper_lengths(128, 5), "cuda")
    sampler = BucketSampler(train["length"], bucket_width=5, max_length=128, hwcap=caps)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch

from tdnotebooks.validation import check_int, check_number

__all__ = ["measure_peak_memory", "profile_hwcap"]


def _largest_fitting_batch(measure: Callable[[int], int | None], memory_limit: float, probe_batch: int,
                           max_batch: int) -> int:
    """Largest batch in [1, max_batch] whose peak memory ``measure(b)`` (None: out of memory) fits.

    Measures ``probe_batch`` and ``2 * probe_batch``, extrapolates linearly (peak memory is affine in
    the batch size at a fixed length), checks the guess and the batch above it, and bisects whatever
    remains. Assumes the peak grows with the batch size. Returns 0 when not even batch 1 fits.
    """
    good, bad = 0, max_batch + 1  # largest batch known to fit, smallest known not to
    peaks: dict[int, int] = {}

    def attempt(batch: int) -> None:
        nonlocal good, bad
        if not good < batch < bad:
            return
        peak = measure(batch)
        if peak is not None and peak <= memory_limit:
            good, peaks[batch] = batch, peak
        else:
            bad = batch

    attempt(min(probe_batch, max_batch))
    attempt(min(2 * probe_batch, max_batch))
    if len(peaks) == 2:
        (b1, p1), (b2, p2) = sorted(peaks.items())
        slope = (p2 - p1) / (b2 - b1)
        guess = bad - 1 if slope <= 0 else b2 + math.floor((memory_limit - p2) / slope)
        guess = max(good + 1, min(guess, bad - 1))
        attempt(guess)
        attempt(guess + 1)
    while bad - good > 1:
        attempt((good + bad) // 2)
    return good


def _train_step(model: torch.nn.Module, batch: int, length: int, vocab_size: int, device: torch.device,
                amp_dtype: torch.dtype | None) -> None:
    """One forward + backward on a dummy (batch, length) input; its tensors die when this returns."""
    input_ids = torch.arange(batch * length, device=device).remainder_(vocab_size).view(batch, length)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        loss = getattr(out, "loss", None)
        if loss is None:
            loss = (out.logits if hasattr(out, "logits") else out[0]).float().mean()
    loss.backward()


def measure_peak_memory(model: torch.nn.Module, batch: int, length: int, vocab_size: int, device: torch.device,
                  amp_dtype: torch.dtype | None) -> int | None:
    """Peak allocated bytes of one forward + backward (gradients included); None if it ran out of memory."""
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        _train_step(model, batch, length, vocab_size, device, amp_dtype)
        torch.cuda.synchronize(device)
        peak: int | None = int(torch.cuda.max_memory_allocated(device))
    except torch.cuda.OutOfMemoryError:
        peak = None  # leaving the except block frees the traceback and the tensors it held
    model.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    return peak


def profile_hwcap(
    model: torch.nn.Module,
    bucket_lengths: Sequence[int],
    device: str | torch.device | None = None,
    *,
    memory_limit: int | None = None,
    max_batch: int = 4096,
    probe_batch: int = 8,
    vocab_size: int | None = None,
    amp_dtype: torch.dtype | None = None,
    cpu_token_budget: int = 4096,
) -> list[int]:
    """HWCap per bucket: the largest batch whose forward + backward fits in GPU memory.

    ``bucket_lengths``: each bucket's longest length, e.g. ``bucket_upper_lengths(128, 5)``; the result
    (one batch size per entry) is ready for ``BucketSampler(hwcap=...)``. On CUDA the model (moved to
    ``device``, default: where its parameters are) runs in train mode on dummy ``(batch, length)`` inputs
    and ``torch.cuda.max_memory_allocated`` is read; see :func:`_largest_fitting_batch` for the search.
    ``memory_limit`` (bytes of peak allocated memory) defaults to what is allocated now plus 90 % of the
    free memory. Optimizer state is not created by the probe: build it first (one step) or lower the
    limit. The caps are made non-increasing in length. Gradients of ``model`` are cleared.

    Elsewhere (CPU, MPS) memory cannot be measured: a ``UserWarning`` says so and the caps come from a
    token budget, ``max(1, cpu_token_budget // length)`` (capped at ``max_batch``).
    """
    if len(bucket_lengths) == 0:
        raise ValueError("bucket_lengths is empty: pass each bucket's longest length")
    lengths = [check_int(f"bucket_lengths[{i}]", n, 1) for i, n in enumerate(bucket_lengths)]
    max_batch = check_int("max_batch", max_batch, 1)
    probe_batch = check_int("probe_batch", probe_batch, 1)
    cpu_token_budget = check_int("cpu_token_budget", cpu_token_budget, 1)
    if memory_limit is not None:
        memory_limit = check_number("memory_limit (bytes)", memory_limit, 0, low_open=True)
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    else:  # a device this machine has: get_device refuses 'cuda' without CUDA, 'mps' off a Mac, in plain words
        from tdnotebooks.runtime import get_device

        device = get_device(device)
    device = torch.device(device)

    if device.type != "cuda":
        warnings.warn(f"profile_hwcap cannot measure memory on device {device.type!r}; falling back to a "
                      f"token budget: HWCap = cpu_token_budget ({cpu_token_budget}) // length", UserWarning,
                      stacklevel=2)
        return [max(1, min(max_batch, cpu_token_budget // n)) for n in lengths]

    if vocab_size is None:
        vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
        if vocab_size is None:
            raise ValueError("vocab_size is needed for the dummy inputs: the model has no config.vocab_size")
    vocab_size = check_int("vocab_size", vocab_size, 1)
    model.to(device)
    was_training = model.training
    model.train()
    if memory_limit is None:
        torch.cuda.empty_cache()
        free, _total = torch.cuda.mem_get_info(device)
        memory_limit = torch.cuda.memory_allocated(device) + 0.9 * free
    caps: dict[int, int] = {}
    ceiling = max_batch  # a longer length never gets a larger batch than a shorter one
    try:
        for length in sorted(set(lengths)):
            def measure(batch: int, length: int = length) -> int | None:
                return measure_peak_memory(model, batch, length, vocab_size, device, amp_dtype)

            cap = _largest_fitting_batch(measure, memory_limit, probe_batch, ceiling)
            if cap == 0:
                raise ValueError(f"not even a batch of 1 sequence of length {length} fits in "
                                 f"memory_limit={memory_limit / 2**30:.2f} GiB")
            caps[length] = ceiling = cap
    finally:
        model.train(was_training)
    return [caps[n] for n in lengths]
