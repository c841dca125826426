"""The pretraining benchmark on a minimal configuration: JSON structure, invariants, the exact FLOPs ratios,
the Fi-weighted step time, target verdicts consistent with the numbers, and command-line errors.
No timing is asserted."""

import json
import math

import pytest
import torch

from tdnotebooks.bench import build_parser, main
from tdnotebooks.bench.common import write_results
from tdnotebooks.bench.pretrain import (
    BASELINE,
    HF_PEER,
    QUALITY_DIRECTIONS,
    SCTD_LIMIT,
    TOKEN_DROP,
    TOKEN_DROP_SLACK,
    BenchConfig,
    QualitySpec,
    SizeSpec,
    compare_sctd,
    evaluate_targets,
    format_report,
    quick_config,
    run_benchmark,
    step_time,
)
from tdnotebooks.pretraining.token_dropping import TokenDroppingConfig, flops_ratio

SIZE = SizeSpec(name="mini", num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64, block_size=32,
                batch_size=4, timed_steps=2, warmup_steps=1)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one CPU thread


@pytest.fixture(scope="module")
def results(one_thread):
    config = BenchConfig(sizes=(SIZE,), fis=(2,), target_fi=2, device="cpu", threads=1, quality=QUALITY)
    return run_benchmark(config, progress=None)


QUALITY = QualitySpec(steps=4, batch_size=4, block_size=32, max_texts=200, fi=2, drift_size=4, probe_size=16,
                      downstream_size=16, downstream_epochs=1)


def test_json_structure(results, tmp_path):
    path = write_results(results, tmp_path / "sub" / "pretrain.json")
    loaded = json.loads(path.read_text())
    assert loaded["benchmark"] == "pretrain"
    assert list(loaded["sizes"]) == ["mini"]
    modes = loaded["sizes"]["mini"]["modes"]
    assert list(modes) == [BASELINE, TOKEN_DROP, "random_drop", "sctd_fi2", HF_PEER]
    assert loaded["sizes"]["mini"]["skipped"] is None
    assert loaded["environment"]["threads"] == 1
    assert torch.get_num_threads() == 1                        # restored after the run


def test_rows_are_positive_and_consistent(results):
    result = results["sizes"]["mini"]
    base = result["modes"][BASELINE]["step_seconds"]
    assert result["tokens_per_step"] == SIZE.batch_size * SIZE.block_size
    for row in result["modes"].values():
        assert len(row["step_seconds_each"]) == SIZE.timed_steps
        assert row["step_seconds"] > 0 and row["flops_ratio"] > 0 and row["vs_baseline"] > 0
        assert row["vs_baseline"] == pytest.approx(row["step_seconds"] / base)
        assert len(row["cpu_step_seconds_each"]) == SIZE.timed_steps and row["cpu_step_seconds"] >= 0
        assert row["tokens_per_second"] == pytest.approx(result["tokens_per_step"] / row["step_seconds"])
        assert row["peak_memory_bytes"] >= 0 and row["memory_kind"] == "approx_peak_rss_delta"
    assert result["modes"][BASELINE]["vs_baseline"] == 1.0
    assert result["modes"]["sctd_fi2"]["is_full_step"] == [True, False]      # t = 0 full, t = 1 dropped


def test_flops_ratios_are_the_analytic_ones(results):
    modes = results["sizes"]["mini"]["modes"]
    start, end = TokenDroppingConfig().layer_range(SIZE.num_layers)
    masked = round(0.15 * (SIZE.block_size - 2))
    expected = flops_ratio(SIZE.num_layers, start, end, 0.5, SIZE.block_size, SIZE.hidden_size,
                           SIZE.intermediate_size, num_predictions=masked, vocab_size=30522)
    assert modes[TOKEN_DROP]["flops_ratio"] == pytest.approx(expected)
    assert modes["random_drop"]["flops_ratio"] == pytest.approx(expected)
    assert modes["sctd_fi2"]["flops_ratio"] == pytest.approx(expected + 0.5)
    assert modes[BASELINE]["flops_ratio"] == 1.0
    assert modes[HF_PEER]["flops_ratio"] > 1.0                 # the all-position head costs more


def test_sctd_step_time_is_the_fi_weighted_mean(results):
    row = results["sizes"]["mini"]["modes"]["sctd_fi2"]
    full, dropped = row["step_seconds_each"]
    assert row["step_seconds"] == pytest.approx((full + dropped) / 2)
    # A window of a multiple of Fi gives exactly the plain mean; fewer steps still weight 1 : (Fi - 1).
    assert step_time([4.0, 1.0, 1.0, 4.0, 1.0, 1.0], [True, False, False] * 2, 3)["step_seconds"] == 2.0
    assert step_time([4.0, 1.0], [True, False], 10)["step_seconds"] == pytest.approx((4 + 9) / 10)
    with pytest.raises(ValueError, match="at least one full and one dropped"):
        step_time([1.0, 1.0], [False, False], 5)


def test_target_verdicts_match_the_numbers(results):
    modes = results["sizes"]["mini"]["modes"]
    targets = {t["target"]: t for t in results["targets"]}
    assert set(targets) == {"token_drop_vs_baseline", "sctd_fi2_vs_token_drop"}
    td = targets["token_drop_vs_baseline"]
    assert td["value"] == pytest.approx(modes[TOKEN_DROP]["vs_baseline"])
    assert td["threshold"] == pytest.approx(modes[TOKEN_DROP]["flops_ratio"] + TOKEN_DROP_SLACK)
    sc = targets["sctd_fi2_vs_token_drop"]
    assert sc["value"] == pytest.approx(modes["sctd_fi2"]["step_seconds"] / modes[TOKEN_DROP]["step_seconds"])
    assert sc["threshold"] == SCTD_LIMIT
    for t in targets.values():
        assert t["passed"] == (t["value"] <= t["threshold"])
    assert results["all_targets_met"] == all(t["passed"] for t in targets.values())
    report = format_report(results)
    for t in targets.values():
        assert f"{'PASS' if t['passed'] else 'FAIL'}  mini" in report


def test_skipped_size_gives_no_targets():
    sizes = {"big": {"skipped": "estimated 999 s > budget 240 s", "modes": {BASELINE: {"vs_baseline": 1.0}}}}
    assert evaluate_targets(sizes, 10) == []


def test_config_errors():
    with pytest.raises(ValueError, match="target_fi must be one of fis"):
        BenchConfig(fis=(5,), target_fi=10)
    with pytest.raises(ValueError, match="keep_fraction must be in"):
        BenchConfig(keep_fraction=1.0)
    with pytest.raises(ValueError, match="timed_steps must be an int >= 1"):
        SizeSpec(name="x", num_layers=2, hidden_size=8, num_heads=2, intermediate_size=8, block_size=8,
                 batch_size=1, timed_steps=0)
    quick = quick_config()
    assert quick.threads == 1 and quick.sizes[1].batch_size == 8 and quick.sizes[1].timed_steps == 3
    assert math.isclose(quick.sizes[1].budget_seconds, 240.0)


@pytest.mark.parametrize("argv, message", [
    (["pretrain", "--threads", "0"], "must be an int >= 1"),
    (["pretrain", "--device", "tpu"], "invalid choice"),
    (["pretrain", "--bogus"], "unrecognized arguments"),
    (["pretrain", "--quality-steps", "0"], "must be an int >= 1"),
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
    with pytest.raises(ValueError, match="quality: lam must be >= 0"):
        QualitySpec(lam=-0.1)
    with pytest.raises(ValueError, match="quality must be a QualitySpec or None"):
        BenchConfig(quality={"steps": 3})
    assert quick_config().quality == QualitySpec() and quick_config().quality.seeds == (0,)


def test_quality_cli_options():
    from tdnotebooks.bench.pretrain import config_from_args
    parser = build_parser()
    config = config_from_args(parser.parse_args(["pretrain", "--quick", "--quality-steps", "7", "--quality-seeds", "2"]))
    assert config.quality.steps == 7 and config.quality.seeds == (0, 1)
    assert config_from_args(parser.parse_args(["pretrain", "--quick", "--no-quality"])).quality is None
