"""The GPU readiness benchmark without a GPU: the command line refuses a CPU (exit status 2, one line), bad options
are usage errors, the whole pipeline runs on a CPU at tiny sizes (every section's JSON keys, every table row), and
the time budget skips what would overrun. No timing is asserted."""

import json
import re
import subprocess
import sys

import pytest

from tdnotebooks.bench import main
from tdnotebooks.bench.common import write_results
from tdnotebooks.bench.gpu import (
    FINETUNE_METHODS,
    NO_CUDA,
    PRETRAIN_MODES,
    PRIORS,
    SECTION_WEIGHTS,
    SECTIONS,
    GpuBenchConfig,
    TimeBudget,
    config_from_args,
    format_report,
    run_gpu_benchmark,
)
from tdnotebooks.finetuning.planning import bucket_upper_lengths

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one CPU thread


def _no_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the command would run")


@pytest.fixture(scope="module")
def results():
    return run_gpu_benchmark(device="cpu", tiny=True, progress=None)


# ---------------------------------------------------------------------------- command line
def test_the_command_refuses_a_machine_without_cuda_in_one_line(tmp_path):
    _no_cuda()
    done = subprocess.run([sys.executable, "-m", "tdnotebooks.bench", "gpu"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"python -m tdnotebooks.bench gpu: error: {NO_CUDA}"]
    assert "torch.cuda.is_available() is False" in done.stderr and "finetune --quick" in done.stderr
    assert not (tmp_path / "bench-results").exists()


def test_the_command_returns_2_in_process_too(tmp_path, capsys):
    _no_cuda()
    assert main(["gpu", "--out", str(tmp_path / "gpu.json")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["gpu", "--budget-seconds", "59"], "argument --budget-seconds: must be an int >= 60, got 59"),
    (["gpu", "--budget-seconds", "8min"], "argument --budget-seconds: must be an int >= 60, got '8min'"),
    (["gpu", "--seeds", "0"], "argument --seeds: must be an int >= 1, got 0"),
    (["gpu", "--sections", "inference"], "argument --sections: invalid choice: 'inference'"),
    (["gpu", "--sections"], "argument --sections: expected at least one argument"),
    (["gpu", "--device", "cpu"], "unrecognized arguments: --device cpu"),  # the CPU path is not on the CLI
])
def test_bad_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_options_become_a_cuda_config_with_sections_in_their_order():
    from tdnotebooks.bench import build_parser

    args = build_parser().parse_args(["gpu", "--sections", "pretrain", "finetune", "--seeds", "2",
                                      "--budget-seconds", "60"])
    config = config_from_args(args)
    assert config.sections == ("finetune", "pretrain") and config.seeds == 2 and config.budget_seconds == 60
    assert config.device == "cuda" and not config.tiny
    defaults = config_from_args(build_parser().parse_args(["gpu"]))
    assert defaults.sections == SECTIONS and defaults.budget_seconds == 480 and defaults.seeds == 1
    assert build_parser().parse_args(["gpu"]).out == "bench-results/gpu.json"


@pytest.mark.parametrize("kwargs, message", [
    ({"sections": ()}, "sections must be a non-empty selection"),
    ({"sections": ("finetune", "glue")}, "sections must be a non-empty selection"),
    ({"seeds": 0}, "seeds must be an int >= 1, got 0"),
    ({"budget_seconds": -1}, "budget_seconds must be a number"),
    ({"tiny": "yes"}, "tiny must be True or False"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GpuBenchConfig(**kwargs)


# ---------------------------------------------------------------------------- the tiny CPU pipeline
def test_every_section_is_in_the_json(results, tmp_path):
    loaded = json.loads(write_results(results, tmp_path / "gpu.json").read_text())
    assert loaded["benchmark"] == "gpu"
    assert {"environment", "config", "budget", *SECTIONS, "peak_memory", "wall_seconds"} <= set(loaded)
    env = loaded["environment"]
    assert {"gpu", "torch", "transformers", "cuda", "autocast_dtype", "finetune_grad_scaler"} <= set(env)
    assert env["device"] == "cpu" and env["gpu"] is None and env["autocast_dtype"] == "none (float32)"
    assert loaded["budget"]["skipped"] == [] and loaded["budget"]["used_seconds"] <= 480
    for name in SECTIONS:
        assert loaded[name]["skipped"] is None
        assert loaded[name]["seconds"] <= loaded[name]["share_seconds"] + 1  # + the unit that was running


def test_finetune_section(results):
    ft = results["finetune"]
    assert list(ft["methods"]) == list(FINETUNE_METHODS) and len(ft["runs"]) == len(FINETUNE_METHODS)
    assert ft["settings"]["device"] == "cpu" and ft["train_examples"] == 64
    for m in ft["methods"].values():
        assert {"speedup", "padding_fraction", "optimizer_steps", "dev_accuracy_mean", "peak_memory_bytes"} <= set(m)
        assert 0 <= m["padding_fraction"] < 1 and m["optimizer_steps"] >= 1 and 0 <= m["dev_accuracy_mean"] <= 1
        assert m["peak_memory_bytes"] is None  # not CUDA
    assert ft["methods"]["random"]["speedup"] == 1.0
    assert ft["methods"]["tokendrop_bucket"]["padding_fraction"] < ft["methods"]["random"]["padding_fraction"]


def test_hwcap_section(results):
    hw = results["hwcap"]
    lengths = bucket_upper_lengths(128, 5)
    assert [b["length"] for b in hw["buckets"]] == lengths and not hw["measured"]
    assert [b["batch_size"] for b in hw["buckets"]] == [4096 // n for n in lengths]  # the CPU fallback
    assert all(b["bound"] == "token budget" and b["tokens"] == b["batch_size"] * b["length"] for b in hw["buckets"])
    assert hw["implied_token_budget"] == min(b["tokens"] for b in hw["buckets"])
    assert hw["token_budget_at_longest"] == 4096 // 128 * 128


def test_pretrain_section(results):
    pt = results["pretrain"]
    assert list(pt["sizes"]) == ["base-standin", "tiny"]
    for size in pt["sizes"].values():
        assert size["skipped"] is None and list(size["modes"]) == list(PRETRAIN_MODES)
        for m in size["modes"].values():
            assert m["rounds"] == 2 == len(m["step_seconds_each_round"])
            assert m["step_seconds_min"] <= m["step_seconds_median"] <= m["step_seconds_max"]
            assert m["spread"] >= 0 and m["vs_baseline_min"] <= m["vs_baseline_max"]
            assert m["flops_ratio"] > 0 and m["tokens_per_second"] > 0
        assert size["modes"]["baseline"]["vs_baseline"] == 1.0 and size["modes"]["baseline"]["flops_ratio"] == 1.0
        assert size["modes"]["token_drop"]["flops_ratio"] < 1 < size["modes"]["hf_bert_mlm"]["flops_ratio"]


def test_the_report_has_a_row_for_everything(results):
    report = format_report(results)
    lines = report.splitlines()

    def row(*cells):
        pattern = re.compile(r"^" + r"\s+".join(map(re.escape, cells)) + r"\s")
        return any(pattern.match(line) for line in lines)

    assert report.startswith("GPU readiness (tiny CPU test sizes): device cpu")
    for method in FINETUNE_METHODS:
        assert row(method, "random"), method
    for b in results["hwcap"]["buckets"]:
        assert row(str(b["length"]), str(b["batch_size"])), b
    for size in results["pretrain"]["sizes"]:
        for mode in PRETRAIN_MODES:
            assert row(size, mode), (size, mode)
            assert row("pretrain", size, mode), (size, mode)  # the peak-memory table
    for method in FINETUNE_METHODS:
        assert row("finetune", method)
    assert row("hwcap", f"{len(results['hwcap']['buckets'])} buckets, not measured")
    assert len(results["peak_memory"]) == len(FINETUNE_METHODS) + 1 + 2 * len(PRETRAIN_MODES)
    assert "SKIPPED" not in report


# ---------------------------------------------------------------------------- the time budget
def test_time_budget_shares_and_skips():
    now = [100.0]
    budget = TimeBudget(80, clock=lambda: now[0])
    share = budget.open_section("finetune", SECTIONS)
    assert share == pytest.approx(80 * SECTION_WEIGHTS["finetune"] / sum(SECTION_WEIGHTS.values()))
    assert budget.fits(share) and not budget.fits(share + 0.1)
    now[0] += 30
    assert budget.left == 50 and budget.elapsed == 30
    assert budget.open_section("pretrain", ("pretrain",)) == 50  # the last section gets everything left
    assert budget.fits(50) and not budget.fits(51)
    note = budget.skip("pretrain tiny", 51)
    assert budget.notes == [note] and note.startswith("pretrain tiny skipped: estimated 51.0 s")
    now[0] += 100  # past the end: nothing fits any more, shares are 0
    assert budget.open_section("pretrain", ("pretrain",)) == 0 and not budget.fits(0.1)


def test_a_budget_of_zero_skips_every_section_with_a_note():
    results = run_gpu_benchmark(device="cpu", tiny=True, budget_seconds=0, progress=None)
    assert all(results[name]["skipped"] for name in SECTIONS)
    assert len(results["budget"]["skipped"]) == len(SECTIONS) and results["peak_memory"] == []
    report = format_report(results)
    assert report.count("SKIPPED: ") == len(SECTIONS) and "Skipped to stay within the budget:" in report


def test_a_section_is_skipped_when_its_share_is_too_small():
    """Frozen clock: only the estimates decide. The finetune share (4/5 of the budget here) is below its first
    estimate; hwcap then gets all that is left, which covers its estimate."""
    hwcap_first = PRIORS["hwcap_setup"][1] + PRIORS["hwcap_bucket"][1]
    finetune_first = PRIORS["finetune_setup"][1] + 2 * PRIORS["finetune_run"][1]
    budget = 2 * hwcap_first
    weights = SECTION_WEIGHTS["finetune"] / (SECTION_WEIGHTS["finetune"] + SECTION_WEIGHTS["hwcap"])
    assert budget * weights < finetune_first  # the premise
    results = run_gpu_benchmark(device="cpu", tiny=True, sections=("finetune", "hwcap"), budget_seconds=budget,
                                progress=None, clock=lambda: 0.0)
    assert results["finetune"]["skipped"].startswith("finetune section skipped")
    assert results["hwcap"]["skipped"] is None and len(results["hwcap"]["buckets"]) == len(bucket_upper_lengths(128, 5))
    assert "pretrain" not in results


def test_remaining_rounds_are_skipped_when_a_measured_round_says_they_would_overrun():
    """The clock jumps 50 s whenever a pretraining round starts: after one round of each size the estimate of
    the next (1.2 x 50 s) no longer fits the 60 s budget."""
    now = [0.0]

    def progress(line):
        if "round" in line:
            now[0] += 50

    results = run_gpu_benchmark(device="cpu", tiny=True, sections=("pretrain",), budget_seconds=60,
                                progress=progress, clock=lambda: now[0])
    base = results["pretrain"]["sizes"]["base-standin"]
    assert all(m["rounds"] == 1 for m in base["modes"].values())
    assert base["notes"][0].startswith("pretrain base-standin rounds 2-2 skipped")
    tiny = results["pretrain"]["sizes"]["tiny"]  # 50 s used, the 5 s prior of a new size still fits
    assert tiny["skipped"] is None and all(m["rounds"] == 1 for m in tiny["modes"].values())
    assert len(results["budget"]["skipped"]) == 2
