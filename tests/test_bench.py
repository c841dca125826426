"""The fine-tuning benchmark on a tiny configuration: JSON structure, token invariants, exact formulas,
target verdicts consistent with the numbers, and the command-line errors. No timing is asserted."""

import json
import math
import operator

import pytest

from tdnotebooks.bench import build_parser, main
from tdnotebooks.bench.common import write_results
from tdnotebooks.bench.finetune import (
    BASELINE,
    INFERENCE_RATES,
    METHODS,
    PAPER_METHOD,
    SERVER_BATCHINGS,
    TARGETS,
    BenchConfig,
    evaluate_targets,
    format_report,
    padding_at_scale,
    prepare_splits,
    quick_config,
    run_benchmark,
)

TASKS = ("rt_sentiment",)  # one task keeps the test fast; the code path is the same for every task


def tiny_config(**overrides) -> BenchConfig:
    settings = dict(
        tasks=TASKS, seeds=1, epochs=1, num_layers=1, freeze_embeddings=True, lr=2e-4, base_batch_size=16,
        token_budget=1024, server_token_budget=1024, max_length=48,  # 48: a few sequences get truncated
        train_examples={"rt_sentiment": 64}, dev_examples={"rt_sentiment": 32}, test_examples={"rt_sentiment": 24},
        latency_examples=4, server_repeats=1, device="cpu", threads=1, progress=False,
        scale_check=False,  # the whole-split pass has its own tests below (it takes ~20 s)
        qa_seq2seq=None)  # the QA and seq2seq rows: tests/test_bench_qa_seq2seq.py
    return BenchConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def results():
    return run_benchmark(tiny_config())


def test_json_structure(results, tmp_path):
    path = write_results(results, tmp_path / "sub" / "finetune.json")
    loaded = json.loads(path.read_text())
    assert loaded["benchmark"] == "finetune"
    env = loaded["environment"]
    assert {"device", "torch", "threads", "quick"} <= set(env) and env["device"] == "cpu" and env["quick"] is False
    assert loaded["config"]["seeds"] == 1 and loaded["config"]["finetune"]["epochs"] == 1
    assert set(loaded["tasks"]) == set(TASKS)
    for task in loaded["tasks"].values():
        assert list(task["methods"]) == list(METHODS)
        assert len(task["runs"]) == len(METHODS)
        assert [r["rate"] for r in task["inference"]["latency"]] == list(INFERENCE_RATES)
        assert [r["batching"] for r in task["inference"]["server"]] == list(SERVER_BATCHINGS)
    report = format_report(loaded)
    for word in ("tokendrop_bucket", "group_by_length", "PASS" if loaded["all_targets_met"] else "FAIL"):
        assert word in report


@pytest.mark.parametrize("task", TASKS)
def test_token_invariants_and_exact_formulas(results, task):
    result = results["tasks"][task]
    methods = result["methods"]
    base = methods[BASELINE]
    config = results["config"]
    assert base["real_tokens"] == config["seeds"] * config["epochs"] * result["train_tokens"]
    for name, m in methods.items():
        assert 0 <= m["padding_fraction"] < 1
        assert m["pad_tokens"] == m["slot_tokens"] - m["real_tokens"]
        assert m["padding_fraction"] == pytest.approx(m["pad_tokens"] / m["slot_tokens"], rel=1e-12)
        assert m["ideal_speedup"] == base["slot_tokens"] / m["real_tokens"]  # exact, from the reported counts
        assert m["speedup"] == base["train_seconds"] / m["train_seconds"]
        assert m["cpu_speedup"] == base["train_cpu_seconds"] / m["train_cpu_seconds"]
        assert m["speedup_over_ideal"] == pytest.approx(m["speedup"] / m["ideal_speedup"], rel=1e-12)
        assert 0 <= m["collate_fraction"] < 1 and m["train_cpu_seconds"] > 0
        if name != PAPER_METHOD:  # no TokenDrop: every method computes on exactly the same real tokens
            assert m["real_tokens"] == base["real_tokens"] and m["dropped_tokens"] == 0
    td = methods[PAPER_METHOD]
    assert td["real_tokens"] <= base["real_tokens"]
    assert td["real_tokens"] + td["dropped_tokens"] == base["real_tokens"]
    assert td["tokendrop_overhead"] == td["collate_fraction"]
    assert base["speedup"] == 1.0
    assert result["paper_ideal_speedup"] == base["slot_tokens"] / base["real_tokens"] == base["ideal_speedup"]
    for row in result["inference"]["server"]:
        assert 0 <= row["padding_fraction"] < 1 and 0 <= row["accuracy"] <= 1
    latency = result["inference"]["latency"]
    assert latency[0]["speedup"] == 1.0 == latency[0]["forward_speedup"]
    assert all(row["median_ms"] > 0 and row["forward_median_ms"] > 0 for row in latency)  # both figures, each row
    assert latency[-1]["mean_tokens"] <= latency[0]["mean_tokens"]  # rate 1 drops every stopword


def test_target_verdicts_follow_the_numbers(results):
    targets = results["targets"]
    assert {(t["task"], t["target"]) for t in targets} == {(task, name) for task in TASKS for name, _, _ in TARGETS}
    ops = {"<=": operator.le, ">=": operator.ge, ">": operator.gt}
    for t in targets:
        methods = results["tasks"][t["task"]]["methods"]
        td, base = methods[PAPER_METHOD], methods[BASELINE]
        expected = {
            "padding_fraction": td["padding_fraction"],
            "speedup_over_ideal": td["speedup"] / td["ideal_speedup"],
            "speedup_over_group_by_length": methods["group_by_length"]["train_seconds"] / td["train_seconds"],
            "accuracy_minus_baseline_points": 100 * (td["dev_accuracy_mean"] - base["dev_accuracy_mean"]),
        }[t["target"]]
        assert t["value"] == pytest.approx(expected, rel=1e-12)
        assert t["passed"] == ops[t["comparison"]](t["value"], t["threshold"])
        informative = results["tasks"][t["task"]]["baseline_beats_majority"]
        assert t["informative"] == (informative if t["target"] == "accuracy_minus_baseline_points" else True)
    assert results["all_targets_met"] == all(t["passed"] for t in targets)
    for task in results["tasks"].values():
        base_accuracy = task["methods"][BASELINE]["dev_accuracy_mean"]
        margin = 2 * math.sqrt(task["majority_accuracy"] * (1 - task["majority_accuracy"]) / task["dev_examples"])
        assert task["baseline_beats_majority"] == (base_accuracy > task["majority_accuracy"] + margin)


def test_evaluate_targets_on_hand_made_numbers():
    def method(padding, seconds, speedup, ideal, acc):
        return {"padding_fraction": padding, "train_seconds": seconds, "speedup": speedup, "ideal_speedup": ideal,
                "speedup_over_ideal": speedup / ideal, "dev_accuracy_mean": acc}

    tasks = {"t": {"methods": {
        "random": method(0.4, 10.0, 1.0, 1.6, 0.80),
        "group_by_length": method(0.1, 6.0, 10 / 6, 1.6, 0.80),
        "tokendrop_bucket": method(0.004, 6.5, 10 / 6.5, 2.0, 0.789),
    }}}
    verdicts = {t["target"]: t["passed"] for t in evaluate_targets(tasks)}
    # padding 0.4% <= 0.5%; 1.54 / 2.0 = 0.77 < 0.9; slower than group_by_length; -1.1 points < -1
    assert verdicts == {"padding_fraction": True, "speedup_over_ideal": False,
                        "speedup_over_group_by_length": False, "accuracy_minus_baseline_points": False}


def test_padding_at_scale_reproduces_the_padding_of_the_training_runs(results, wordpiece):
    """The batching-only pass builds the very batches training fed the model: same real and slot tokens."""
    config = tiny_config()
    train = prepare_splits("rt_sentiment", config, wordpiece)["train"]
    variants = padding_at_scale(train, wordpiece.pad_token_id, seeds=config.seeds, epochs=config.epochs,
                                token_budget=config.token_budget, base_batch_size=config.base_batch_size)
    methods = results["tasks"]["rt_sentiment"]["methods"]
    for name in ("random", "bucket", "tokendrop_bucket"):
        v, m = variants[name], methods[name]
        assert (v["real_tokens"], v["slot_tokens"], v["num_batches"]) == (m["real_tokens"], m["slot_tokens"],
                                                                       m["num_batches"])
        assert v["padding_fraction_per_epoch"] == [pytest.approx(v["padding_fraction"])]  # one epoch
    written = variants["tokendrop_bucket_as_written"]
    assert written["real_tokens"] < methods["bucket"]["real_tokens"]  # it drops stopwords too

    # several epochs and seeds: per-epoch counts add up to the totals; seeds add up
    kwargs = dict(token_budget=config.token_budget, base_batch_size=config.base_batch_size)
    two = padding_at_scale(train, wordpiece.pad_token_id, seeds=2, epochs=2, **kwargs)
    single = padding_at_scale(train, wordpiece.pad_token_id, seeds=1, epochs=2, **kwargs)
    for name, v in two.items():
        assert sum(v["real_tokens_per_epoch"]) == v["real_tokens"] and sum(v["slot_tokens_per_epoch"]) == v["slot_tokens"]
        assert v["padding_fraction_per_epoch"] == [pytest.approx(1 - r / t) for r, t in
                                                   zip(v["real_tokens_per_epoch"], v["slot_tokens_per_epoch"],
                                                       strict=True)]
        assert v["real_tokens"] > single[name]["real_tokens"]  # seed 1 is counted on top of seed 0

    # the padding target reads the whole-split pass when there is one, and says so
    scaled = {"rt_sentiment": {**results["tasks"]["rt_sentiment"],
                               "padding_at_scale": {"train_examples": len(train), "variants": variants,
                                                    "settings": {"seeds": 1, "epochs": 1, "token_budget": 1024,
                                                                 "base_batch_size": 16}}}}
    padding = next(t for t in evaluate_targets(scaled) if t["target"] == "padding_fraction")
    assert padding["value"] == variants["tokendrop_bucket"]["padding_fraction"]
    assert padding["measured_on"] == "whole training split"
    report = format_report({**results, "tasks": scaled, "targets": evaluate_targets(scaled)})
    assert "Padding at scale" in report and "tokendrop_bucket_as_written" in report
    assert "(whole training split)" in report


def test_the_padding_target_is_checked_on_every_held_out_corpus(results, wordpiece):
    """padding_on_corpora batches each held-out corpus like a training split; each gets its padding verdict
    and its rows in the report."""
    from tdnotebooks.bench.finetune import SCALE_CORPORA, padding_on_corpora

    assert len(SCALE_CORPORA) >= 1
    config = tiny_config(scale_check=True, scale_corpora=("kjv_sentences",))
    corpora = padding_on_corpora(config, wordpiece)
    assert list(corpora) == ["kjv_sentences"]
    corpus = corpora["kjv_sentences"]
    assert corpus["train_examples"] == 4200 and corpus["settings"]["token_budget"] == config.token_budget
    assert corpus["variants"]["tokendrop_bucket"]["padding_fraction"] <= 0.005
    targets = evaluate_targets(results["tasks"], corpora)
    verdict = next(t for t in targets if t["task"] == "kjv_sentences")
    assert verdict["target"] == "padding_fraction" and verdict["passed"]
    assert verdict["measured_on"] == "held-out corpus, batching only"
    report = format_report({**results, "scale_corpora": corpora, "targets": targets})
    assert "kjv_sentences  tokendrop_bucket" in report and "held-out corpus" in report
    with pytest.raises(ValueError, match="scale_corpora must be a selection of"):
        tiny_config(scale_corpora=("gutenberg",))


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--seeds", "0"], "argument --seeds: must be an int >= 1, got 0"),
    (["finetune", "--seeds", "two"], "argument --seeds: must be an int >= 1, got 'two'"),
    (["finetune", "--epochs", "-1"], "argument --epochs: must be an int >= 1, got -1"),
    (["finetune", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["finetune", "--tasks", "glue"], "argument --tasks: invalid choice: 'glue'"),
    (["nonsense"], "invalid choice: 'nonsense'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_cli_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_device_cuda_without_gpu_is_a_usage_error(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as info:
        main(["finetune", "--quick", "--device", "cuda"])
    assert info.value.code == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_cli_parses_into_the_quick_config():
    from tdnotebooks.bench.finetune import config_from_args

    argv = ["finetune", "--quick", "--seeds", "2", "--tasks", "reviews_long", "--no-progress"]
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    assert config.quick and config.seeds == 2 and config.tasks == ("reviews_long",) and not config.progress
    assert config.epochs == quick_config().epochs and config.threads == quick_config().threads == 1
    assert args.out.endswith(".json")
    assert config.scale_check
    args = build_parser().parse_args(["finetune", "--quick", "--threads", "2", "--no-scale-check"])
    assert config_from_args(args).threads == 2 and not config_from_args(args).scale_check


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": 0}, "seeds must be an int >= 1, got 0"),
    ({"methods": ("bucket", "tokendrop_bucket")}, "methods must include 'random'"),
    ({"tasks": ("glue/sst2",)}, "tasks must be a non-empty selection"),
    ({"token_budget": 64}, "token_budget must be an int >= max_length (128), got 64"),
    ({"train_examples": {"rt_sentiment": 1}},
     "train_examples['rt_sentiment'] must be None (whole split) or an int >= 2"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError) as info:
        BenchConfig(**kwargs)
    assert message in str(info.value)


def test_accuracy_helpers():
    from tdnotebooks.bench.finetune import accuracy_noise_points, beats_majority, majority_accuracy

    assert accuracy_noise_points(0.8, 200, 2) == pytest.approx(100 * math.sqrt(2 * 0.16 / 400))
    assert majority_accuracy([1, 1, 0, 1]) == 0.75
    # majority 0.5 on 100 examples: 2 standard errors = 0.1
    assert beats_majority(0.61, 0.5, 100) and not beats_majority(0.59, 0.5, 100)
