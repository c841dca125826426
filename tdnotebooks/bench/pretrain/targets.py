"""The pass/fail targets of the pretraining benchmark (per size), and the verdict of the quality comparison:
is each ScTD - token_drop difference outside the noise of the seeds?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tdnotebooks.bench.pretrain.config import TOKEN_DROP

__all__ = ["QUALITY_DIRECTIONS", "SCTD_LIMIT", "TOKEN_DROP_SLACK", "compare_sctd", "evaluate_targets"]

TOKEN_DROP_SLACK = 0.05     # token_drop / baseline <= FLOPs ratio + 0.05
SCTD_LIMIT = 1.12           # sctd(Fi=10) / token_drop <= 1.12


def evaluate_targets(sizes: Mapping[str, Any], target_fi: int) -> list[dict[str, Any]]:
    """The two targets for every size that was measured (skipped sizes give none)."""
    targets = []
    for name, result in sizes.items():
        modes = result["modes"]
        if result["skipped"] or TOKEN_DROP not in modes:
            continue
        td = modes[TOKEN_DROP]
        threshold = td["flops_ratio"] + TOKEN_DROP_SLACK
        targets.append({"size": name, "target": "token_drop_vs_baseline", "value": td["vs_baseline"],
                        "comparison": "<=", "threshold": threshold, "passed": td["vs_baseline"] <= threshold})
        sctd = modes.get(f"sctd_fi{target_fi}")
        if sctd is not None:
            value = sctd["step_seconds"] / td["step_seconds"]
            targets.append({"size": name, "target": f"sctd_fi{target_fi}_vs_token_drop", "value": value,
                            "comparison": "<=", "threshold": SCTD_LIMIT, "passed": value <= SCTD_LIMIT})
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
