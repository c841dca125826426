"""The pretraining benchmark on a minimal configuration: JSON structure, invariants, the exact FLOPs ratios,
the Fi-weighted step time, target verdicts consistent with the numbers, and command-line errors.
No timing is asserted."""

import json
import math

import pytest
import torch

from tdnotebooks.bench import build_parser, main
from tdnotebooks.bench.finetune import write_results
from tdnotebooks.bench.pretrain import (
    BASELINE,
    HF_PEER,
    SCTD_LIMIT,
    TOKEN_DROP,
    TOKEN_DROP_SLACK,
    BenchConfig,
    SizeSpec,
    evaluate_targets,
    format_report,
    quick_config,
    run_benchmark,
    step_time,
)
from tdnotebooks.token_dropping import TokenDroppingConfig, flops_ratio

SIZE = SizeSpec(name="mini", num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64, block_size=32,
                batch_size=4, timed_steps=2, warmup_steps=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def results(one_thread):
    config = BenchConfig(sizes=(SIZE,), fis=(2,), target_fi=2, device="cpu", threads=1)
    return run_benchmark(config, progress=None)


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
