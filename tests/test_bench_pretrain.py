"""The pretraining benchmark on a minimal configuration: JSON structure, invariants, counted FLOPs against the
analytic ratios, the interleaved timing rounds, the Fi-weighted step time, targets relative to the FLOPs ratios,
the FLOPs row of a size whose timing is skipped, and command-line errors. No timing is asserted."""

import json
import math
from dataclasses import replace

import pytest
import torch

from tdnotebooks.bench import build_parser, main
from tdnotebooks.bench.common import interleaved_orders, spread_summary, write_results
from tdnotebooks.bench.pretrain import (
    BASELINE,
    HF_PEER,
    QUALITY_DIRECTIONS,
    SCTD,
    TARGET_SLACK,
    TOKEN_DROP,
    BenchConfig,
    QualitySpec,
    SizeSpec,
    base_size,
    compare_sctd,
    evaluate_targets,
    format_report,
    quick_config,
    run_benchmark,
    step_time,
    time_target,
)
from tdnotebooks.pretraining.token_dropping import TokenDroppingConfig, flops_ratio

SIZE = SizeSpec(name="mini", num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64, block_size=32,
                batch_size=4, timed_steps=2, warmup_steps=1, rounds=2)
UNITS = [BASELINE, TOKEN_DROP, "random_drop", SCTD, HF_PEER]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one CPU thread


@pytest.fixture(scope="module")
def results(one_thread):
    config = BenchConfig(sizes=(SIZE,), fis=(2, 10), target_fi=10, device="cpu", threads=1, quality=QUALITY)
    return run_benchmark(config, progress=None)


QUALITY = QualitySpec(steps=4, batch_size=4, block_size=32, max_texts=200, fi=2, drift_size=4, probe_size=16,
                      downstream_size=16, downstream_epochs=1)


def test_json_structure(results, tmp_path):
    path = write_results(results, tmp_path / "sub" / "pretrain.json")
    loaded = json.loads(path.read_text())
    assert loaded["benchmark"] == "pretrain"
    assert list(loaded["sizes"]) == ["mini"]
    modes = loaded["sizes"]["mini"]["modes"]
    assert list(modes) == [BASELINE, TOKEN_DROP, "random_drop", "sctd_fi2", "sctd_fi10", HF_PEER]
    assert loaded["sizes"]["mini"]["skipped"] is None
    assert loaded["sizes"]["mini"]["round_orders"] == interleaved_orders(UNITS, SIZE.rounds)
    assert loaded["environment"]["threads"] == 1
    assert torch.get_num_threads() == 1                        # restored after the run


def test_rows_are_positive_and_consistent(results):
    result = results["sizes"]["mini"]
    modes = result["modes"]
    base = modes[BASELINE]["step_seconds"]
    assert result["tokens_per_step"] == SIZE.batch_size * SIZE.block_size
    for row in modes.values():
        assert row["timed"] and row["rounds"] == SIZE.rounds == len(row["step_seconds_each_round"])
        assert row["step_seconds_min"] <= row["step_seconds"] <= row["step_seconds_max"]
        assert row["spread"] == pytest.approx((row["step_seconds_max"] - row["step_seconds_min"]) / row["step_seconds"])
        assert row["step_seconds"] > 0 and row["flops_per_step"] > 0 and row["vs_baseline"] > 0
        assert row["vs_baseline"] == pytest.approx(row["step_seconds"] / base)       # ratio of the medians
        assert row["vs_baseline_min"] <= row["vs_baseline_max"]
        assert len(row["cpu_step_seconds_each_round"]) == SIZE.rounds and row["cpu_step_seconds"] >= 0
        assert row["tokens_per_second"] == pytest.approx(result["tokens_per_step"] / row["step_seconds"])
        assert row["peak_memory_bytes"] >= 0 and row["memory_kind"] == "approx_peak_rss_delta"
    assert modes[BASELINE]["vs_baseline"] == 1.0


def test_interleaved_orders_rotate():
    orders = interleaved_orders("abcd", 6)
    assert all(sorted(order) == list("abcd") for order in orders)          # every item once per round
    for previous, order in zip(orders, orders[1:], strict=False):
        assert order == previous[1:] + previous[:1]                        # rotated by one each round
    assert [order[0] for order in orders[:4]] == list("abcd")              # each item leads once in k rounds
    with pytest.raises(ValueError):
        interleaved_orders([], 2)
    summary = spread_summary([2.0, 1.0, 4.0])
    assert summary["median"] == 2.0 and summary["spread"] == pytest.approx(1.5) and summary["each"] == [2.0, 1.0, 4.0]


def test_counted_flops_match_the_analytic_ratios(results):
    """A tiny config: the counted (forward + backward) FLOPs ratio is the analytic forward ratio within 1 %."""
    modes = results["sizes"]["mini"]["modes"]
    td_config = TokenDroppingConfig()
    start, end = td_config.layer_range(SIZE.num_layers)
    masked = round(0.15 * (SIZE.block_size - 2))
    expected = flops_ratio(SIZE.num_layers, start, end, 0.5, SIZE.block_size, SIZE.hidden_size,
                           SIZE.intermediate_size, first_layer_full_kv=td_config.first_layer_full_kv,
                           num_predictions=masked, vocab_size=30522)
    assert results["sizes"]["mini"]["flops"]["first_layer_full_kv"] == td_config.first_layer_full_kv
    assert modes[TOKEN_DROP]["analytic_flops_ratio"] == pytest.approx(expected)
    assert modes["sctd_fi2"]["analytic_flops_ratio"] == pytest.approx(expected + 0.5)
    for row in modes.values():
        assert row["flops_ratio"] == pytest.approx(row["analytic_flops_ratio"], rel=0.01), row["mode"]
    assert modes[BASELINE]["flops_ratio"] == 1.0
    assert modes["random_drop"]["flops_per_step"] == modes[TOKEN_DROP]["flops_per_step"]
    assert modes[HF_PEER]["flops_ratio"] > 1.0                 # the all-position head costs more
    flops = results["sizes"]["mini"]["flops"]
    for fi in (2, 10):                                         # the mean over a window of Fi steps
        assert modes[f"sctd_fi{fi}"]["flops_per_step"] == pytest.approx(
            (flops["sctd_full_step"] + (fi - 1) * flops["sctd_dropped_step"]) / fi)
    assert flops["sctd_dropped_step"] == pytest.approx(modes[TOKEN_DROP]["flops_per_step"], rel=0.01)


def test_sctd_step_time_is_the_fi_weighted_mean(results):
    modes = results["sizes"]["mini"]["modes"]
    for fi in (2, 10):
        row = modes[f"sctd_fi{fi}"]
        assert row["full_step_seconds"] > 0 and row["dropped_step_seconds"] > 0
    # A window of a multiple of Fi gives exactly the plain mean; fewer steps still weight 1 : (Fi - 1).
    assert step_time([4.0, 1.0, 1.0, 4.0, 1.0, 1.0], [True, False, False] * 2, 3)["step_seconds"] == 2.0
    assert step_time([4.0, 1.0], [True, False], 10)["step_seconds"] == pytest.approx((4 + 9) / 10)
    with pytest.raises(ValueError, match="at least one full and one dropped"):
        step_time([1.0, 1.0], [False, False], 5)


def test_target_verdicts_match_the_numbers(results):
    modes = results["sizes"]["mini"]["modes"]
    targets = {t["target"]: t for t in results["targets"]}
    assert set(targets) == {"token_drop_vs_baseline", "sctd_fi10_vs_token_drop"}
    td = targets["token_drop_vs_baseline"]
    assert td["value"] == pytest.approx(modes[TOKEN_DROP]["vs_baseline"])
    assert td["threshold"] == pytest.approx(modes[TOKEN_DROP]["flops_ratio"] + TARGET_SLACK)
    sc = targets["sctd_fi10_vs_token_drop"]
    assert sc["value"] == pytest.approx(modes["sctd_fi10"]["step_seconds"] / modes[TOKEN_DROP]["step_seconds"])
    sctd_flops = modes["sctd_fi10"]["flops_per_step"] / modes[TOKEN_DROP]["flops_per_step"]
    assert sc["threshold"] == pytest.approx(sctd_flops + TARGET_SLACK) and sctd_flops > 1.0
    for t in targets.values():
        assert t["passed"] == (t["value"] <= t["threshold"]) and t["skipped"] is None
        assert t["round_min"] <= t["round_max"]
    assert results["all_targets_met"] == all(t["passed"] for t in targets.values())
    report = format_report(results)
    for t in targets.values():
        assert f"{'PASS' if t['passed'] else 'FAIL'}  mini" in report


def _timed(flops, seconds_each):
    return {"flops_per_step": flops, "step_seconds": sorted(seconds_each)[len(seconds_each) // 2],
            "step_seconds_each_round": seconds_each}


def test_targets_follow_the_flops_ratio():
    """Fabricated timings: a step-time ratio of FLOPs ratio + 0.04 passes, + 0.06 fails, at any FLOPs ratio."""
    for ratio in (0.7, 1.119, 1.128):
        base = _timed(1e12, [1.0, 1.0, 1.0])
        for extra, passed in ((0.04, True), (0.06, False)):
            mode = _timed(ratio * 1e12, [ratio + extra] * 3)
            target = time_target("x", "t", mode, base)
            assert target["flops_ratio"] == pytest.approx(ratio)
            assert target["threshold"] == pytest.approx(ratio + TARGET_SLACK)
            assert target["passed"] is passed and target["every_round"] is True
    # The ScTD target reads ScTD / token_drop against their own FLOPs ratio (1 + 1 / (Fi r)), not a constant.
    sizes = {"s": {"skipped": None, "modes": {
        BASELINE: _timed(100.0, [1.0, 1.0, 1.0]), TOKEN_DROP: _timed(80.0, [0.8, 0.8, 0.8]),
        "sctd_fi10": _timed(90.0, [0.8 * (90 / 80 + 0.04)] * 3)}}}
    targets = {t["target"]: t for t in evaluate_targets(sizes, 10)}
    assert targets["sctd_fi10_vs_token_drop"]["threshold"] == pytest.approx(90 / 80 + 0.05)
    assert targets["sctd_fi10_vs_token_drop"]["passed"] and targets["token_drop_vs_baseline"]["passed"]
    # Rounds that straddle the threshold are flagged: the median passes, one round does not.
    straddle = time_target("x", "t", _timed(80.0, [0.80, 0.84, 0.90]), _timed(100.0, [1.0, 1.0, 1.0]))
    assert straddle["passed"] and straddle["every_round"] is False


def test_skipped_timing_gives_skipped_targets_with_the_reason():
    reason = "timing skipped: estimated 999 s > budget 240 s"
    sizes = {"big": {"skipped": reason, "modes": {BASELINE: {"flops_per_step": 10.0},
                                                  TOKEN_DROP: {"flops_per_step": 8.0}}}}
    (target,) = evaluate_targets(sizes, 10)
    assert target["passed"] is None and target["skipped"] == reason and target["threshold"] == pytest.approx(0.85)


def test_bert_base_flops_row_is_there_when_its_timing_is_skipped(one_thread):
    """A --quick-like config whose BERT-base budget is too small to time it: the FLOPs row still comes, with the
    counted ratios, and the report says which targets were skipped and why (BERT-base at batch 1 keeps it fast)."""
    quick = quick_config()
    base = replace(quick.sizes[1], batch_size=1, budget_seconds=0.001)
    config = quick_config(sizes=(base,), fis=(10,), quality=None, hf_peer=False)
    results = run_benchmark(config, progress=None)
    result = results["sizes"]["bert-base"]
    assert result["skipped"].startswith("timing skipped: estimated") and "budget 0 s" in result["skipped"]
    modes = result["modes"]
    assert list(modes) == [BASELINE, TOKEN_DROP, "random_drop", "sctd_fi10"]
    for row in modes.values():
        assert row["flops_per_step"] > 0 and not row["timed"] and row["step_seconds"] is None
        assert row["flops_ratio"] == pytest.approx(row["analytic_flops_ratio"], rel=0.02), row["mode"]
    assert modes[BASELINE]["flops_per_step"] > 6 * 85e6 * 128   # forward + backward: 6 x encoder parameters x tokens
    assert [t["passed"] for t in results["targets"]] == [None, None] and results["targets_skipped"] == 2
    report = format_report(results)
    assert "SKIP  bert-base  token_drop_vs_baseline" in report and "timing skipped: estimated" in report
    assert any(line.startswith("bert-base  baseline") for line in report.splitlines())


def test_config_errors():
    with pytest.raises(ValueError, match="target_fi must be one of fis"):
        BenchConfig(fis=(5,), target_fi=10)
    with pytest.raises(ValueError, match="keep_fraction must be in"):
        BenchConfig(keep_fraction=1.0)
    with pytest.raises(ValueError, match="timed_steps must be an int >= 1"):
        SizeSpec(name="x", num_layers=2, hidden_size=8, num_heads=2, intermediate_size=8, block_size=8,
                 batch_size=1, timed_steps=0)
    with pytest.raises(ValueError, match="rounds must be an int >= 1"):
        replace(SIZE, rounds=0)
    quick = quick_config()
    assert quick.threads == 1 and quick.sizes[1].batch_size == 4 and quick.sizes[1].rounds == 3
    assert math.isclose(quick.sizes[1].budget_seconds, 300.0) and quick.sizes[0].budget_seconds is None
    assert base_size().rounds == 5


@pytest.mark.parametrize("argv, message", [
    (["pretrain", "--threads", "0"], "must be an int >= 1"),
    (["pretrain", "--device", "tpu"], "invalid choice"),
    (["pretrain", "--bogus"], "unrecognized arguments"),
    (["pretrain", "--quality-steps", "0"], "must be an int >= 1"),
    (["pretrain", "--rounds", "0"], "must be an int >= 1"),
])
def test_cli_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cli_cuda_without_gpu(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--device", "cuda"])
    assert exc.value.code == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_help_lists_pretrain(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "pretrain" in capsys.readouterr().out


def test_quality_section(results, tmp_path):
    quality = json.loads(write_results(results, tmp_path / "q.json").read_text())["quality"]
    assert list(quality["methods"]) == ["baseline", "token_drop", "sctd"]
    for summary in quality["methods"].values():
        (run,) = summary["runs"]
        assert run["seed"] == 0 and len(run["losses"]) == QUALITY.steps
        assert -1.0 <= run["drift"] <= 1.0 + 1e-6
        assert len(run["probe"]) == 4 + 1 and run["probe_last"] == run["probe"][-1]      # embeddings + 4 layers
        assert 0.0 <= run["downstream_accuracy"] <= 1.0
        assert summary["mean"]["dev_mlm_loss"] == run["dev_mlm_loss"] and summary["sd"]["dev_mlm_loss"] is None
    assert quality["methods"]["sctd"]["overrides"] == {"mode": "sctd"}
    rows = {row["metric"]: row for row in quality["comparison"]}
    assert set(rows) == set(QUALITY_DIRECTIONS)
    for metric, row in rows.items():
        sctd, td = (quality["methods"][m]["mean"][metric] for m in ("sctd", "token_drop"))
        assert row["difference"] == pytest.approx(sctd - td)
        assert row["noise"] is None and row["outside_noise"] is False    # one seed: nothing can be called real
    report = format_report(results)
    assert "Does ScTD beat token drop?" in report and "NOT distinguishable from noise" in report


def _summary(values_by_metric):
    import numpy as np
    return {"mean": {m: float(np.mean(v)) for m, v in values_by_metric.items()},
            "sd": {m: float(np.std(v, ddof=1)) for m, v in values_by_metric.items()}}


def test_compare_sctd_noise_and_direction():
    runs = {"sctd": _summary({"dev_mlm_loss": [5.0, 5.2], "drift": [0.5, 0.5], "probe_last": [0.6, 0.8],
                              "downstream_accuracy": [0.7, 0.7]}),
            "token_drop": _summary({"dev_mlm_loss": [6.0, 6.2], "drift": [0.4, 0.4], "probe_last": [0.7, 0.9],
                                    "downstream_accuracy": [0.7, 0.7]})}
    rows = {r["metric"]: r for r in compare_sctd(runs, num_seeds=2)}
    sd = math.sqrt(0.02)                                                     # sample sd of (5.0, 5.2)
    assert rows["dev_mlm_loss"]["noise"] == pytest.approx(math.sqrt(2 * sd**2) / math.sqrt(2))
    assert rows["dev_mlm_loss"]["difference"] == pytest.approx(-1.0)
    assert rows["dev_mlm_loss"]["sctd_better"] and rows["dev_mlm_loss"]["outside_noise"]     # lower loss, 1.0 >> 0.28
    assert rows["drift"]["sctd_better"] and rows["drift"]["outside_noise"]                 # sd 0: any gap is real
    assert not rows["probe_last"]["sctd_better"] and not rows["probe_last"]["outside_noise"]  # -0.1 < 2 x 0.141
    assert not rows["downstream_accuracy"]["sctd_better"]                                  # equal is not better


def test_quality_config_errors():
    with pytest.raises(ValueError, match="quality: steps must be an int >= 1"):
        QualitySpec(steps=0)
    with pytest.raises(ValueError, match="quality: seeds must be a non-empty tuple"):
        QualitySpec(seeds=())
    with pytest.raises(ValueError, match="quality: lam must be None or a number >= 0"):
        QualitySpec(lam=-0.1)


def test_quality_lambda_defaults_to_the_official_weighting_at_the_block_size():
    from tdnotebooks.bench.pretrain.config import quality_lam
    from tdnotebooks.pretraining.sctd import DEFAULT_LAM

    assert quality_lam(QualitySpec(block_size=512)) == pytest.approx(DEFAULT_LAM)  # the paper's sequences
    assert quality_lam(QualitySpec(block_size=64)) == pytest.approx(0.05 / (0.15 * 64))
    assert quality_lam(QualitySpec(lam=0.01)) == 0.01
    with pytest.raises(ValueError, match="quality must be a QualitySpec or None"):
        BenchConfig(quality={"steps": 3})
    assert quick_config().quality == QualitySpec() and quick_config().quality.seeds == (0,)


def test_quality_cli_options():
    from tdnotebooks.bench.pretrain import config_from_args
    parser = build_parser()
    config = config_from_args(parser.parse_args(["pretrain", "--quick", "--quality-steps", "7", "--quality-seeds", "2"]))
    assert config.quality.steps == 7 and config.quality.seeds == (0, 1)
    assert config_from_args(parser.parse_args(["pretrain", "--quick", "--no-quality"])).quality is None
    rounds = config_from_args(parser.parse_args(["pretrain", "--quick", "--rounds", "7"]))
    assert all(size.rounds == 7 for size in rounds.sizes)
