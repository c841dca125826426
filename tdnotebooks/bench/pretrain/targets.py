"""The pass/fail targets of the pretraining benchmark (per size), and the verdict of the quality comparison:
is each ScTD - token_drop difference outside the noise of the seeds?

Every time target is relative to the counted FLOPs of the two modes it compares (never a constant): a mode
that runs exactly as fast as its FLOPs allow passes with :data:`TARGET_SLACK` to spare, so no target can be met
only by noise. The verdict reads the ratio of the median step times; ``every_round`` says whether each round's
own ratio agrees with it (False: the rounds straddle the threshold, the verdict is inside the noise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tdnotebooks.bench.pretrain.config import BASELINE, TOKEN_DROP

__all__ = ["QUALITY_DIRECTIONS", "TARGET_SLACK", "compare_sctd", "evaluate_targets", "time_target"]

TARGET_SLACK = 0.05     # step-time ratio <= counted FLOPs ratio + 0.05


def time_target(size: str, target: str, mode: Mapping[str, Any], reference: Mapping[str, Any],
                skipped: str | None = None) -> dict[str, Any]:
    """``mode``'s step time / ``reference``'s <= their counted FLOPs ratio + :data:`TARGET_SLACK`.

    mode, reference: rows with ``flops_per_step``, ``step_seconds`` (the median over the rounds) and optionally
    ``step_seconds_each_round`` (same rounds for both). skipped: the reason the timing did not run (no verdict).
    """
    flops_ratio = mode["flops_per_step"] / reference["flops_per_step"]
    entry: dict[str, Any] = {"size": size, "target": target, "comparison": "<=", "flops_ratio": flops_ratio,
                             "threshold": flops_ratio + TARGET_SLACK, "value": None, "round_min": None,
                             "round_max": None, "every_round": None, "passed": None, "skipped": skipped}
    if skipped is not None:
        return entry
    value = mode["step_seconds"] / reference["step_seconds"]
    each, each_reference = mode.get("step_seconds_each_round") or [], reference.get("step_seconds_each_round") or []
    rounds = [m / r for m, r in zip(each, each_reference, strict=True)] if each and each_reference else [value]
    passed = value <= entry["threshold"]
    entry.update(value=value, round_min=min(rounds), round_max=max(rounds), passed=passed,
                 every_round=all((r <= entry["threshold"]) == passed for r in rounds))
    return entry


def evaluate_targets(sizes: Mapping[str, Any], target_fi: int) -> list[dict[str, Any]]:
    """The two targets of every size: token_drop / baseline and sctd(Fi=target_fi) / token_drop, each against
    its FLOPs ratio + slack. A size whose timing was skipped gives them with ``passed`` None and the reason."""
    targets = []
    for name, result in sizes.items():
        modes = result["modes"]
        sctd = f"sctd_fi{target_fi}"
        for target, mode, reference in (("token_drop_vs_baseline", TOKEN_DROP, BASELINE),
                                        (f"{sctd}_vs_token_drop", sctd, TOKEN_DROP)):
            if mode in modes and reference in modes:
                targets.append(time_target(name, target, modes[mode], modes[reference], result.get("skipped")))
    return targets


# metric: (better when "lower" / "higher")
QUALITY_DIRECTIONS = {"dev_mlm_loss": "lower", "drift": "higher", "probe_last": "higher",
                      "downstream_accuracy": "higher"}


def compare_sctd(runs: Mapping[str, Any], num_seeds: int) -> list[dict[str, Any]]:
    """ScTD - token_drop per quality metric, and whether the difference is outside the noise.

    noise: sqrt(sd_sctd^2 + sd_td^2) / sqrt(seeds) over seeds (None with one seed: no estimate, so no
    difference can be called real). ``sctd_better`` says the direction only; ``outside_noise`` whether it
    exceeds two noise units.
    """
    rows = []
    for metric, better in QUALITY_DIRECTIONS.items():
        sctd, td = runs["sctd"]["mean"][metric], runs["token_drop"]["mean"][metric]
        if sctd is None or td is None:
            continue
        diff = sctd - td
        sds = runs["sctd"]["sd"][metric], runs["token_drop"]["sd"][metric]
        noise = None if None in sds else float((sds[0] ** 2 + sds[1] ** 2) ** 0.5 / num_seeds ** 0.5)
        rows.append({"metric": metric, "better": better, "sctd": sctd, "token_drop": td, "difference": diff,
                     "sctd_better": diff < 0 if better == "lower" else diff > 0, "noise": noise,
                     "outside_noise": noise is not None and abs(diff) > 2 * noise})
    return rows
