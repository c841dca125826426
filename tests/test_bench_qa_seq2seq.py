"""The QA and seq2seq rows of the fine-tuning benchmark (issue 14) on a tiny configuration: JSON and report rows,
padding counts against an independent count over the same batches, the timed runs' token counts against the
batching-only pass, exact formulas, target verdicts and command-line errors. No timing is asserted."""

import json
import operator
import statistics

import pytest

from tdnotebooks.bench import build_parser, main
from tdnotebooks.bench.common import write_results
from tdnotebooks.bench.finetune import (
    QA_SEQ2SEQ_METHODS,
    QA_SEQ2SEQ_TASKS,
    SPEEDUP_BAR,
    TARGETS,
    BenchConfig,
    QASeq2SeqSpec,
    config_from_args,
    evaluate_qa_seq2seq_targets,
    format_report,
    padding_at_scale_qa_seq2seq,
    prepare_split,
    quick_config,
    run_benchmark,
)

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = {"shakespeare_qa": 8, "shakespeare_cast": 10}


def tiny_spec(**overrides) -> QASeq2SeqSpec:
    settings = dict(num_layers=1, repeats=2, train_examples=dict(EXAMPLES), qa_max_length=128, qa_stride=32,
                    max_source_length=128, max_target_length=16)
    return QASeq2SeqSpec(**{**settings, **overrides})


def tiny_config(**overrides) -> BenchConfig:
    settings = dict(tasks=(), qa_seq2seq=tiny_spec(), seeds=1, freeze_embeddings=True, lr=2e-4, base_batch_size=4,
                    token_budget=512, device="cpu", threads=1, progress=False,
                    scale_check=False)  # the whole-split pass prepares 11,000 examples (~1 min): tested on subsets below
    return BenchConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def results():
    return run_benchmark(tiny_config())


@pytest.fixture(scope="module")
def splits(wordpiece):
    return {task: prepare_split(task, tiny_spec(), wordpiece, EXAMPLES[task]) for task in QA_SEQ2SEQ_TASKS}


def test_json_and_report_have_the_rows(results, tmp_path):
    loaded = json.loads(write_results(results, tmp_path / "finetune.json").read_text())
    assert loaded["tasks"] == {} and loaded["scale_corpora"] == {}  # only the QA and seq2seq rows ran
    assert list(loaded["qa_seq2seq"]) == list(QA_SEQ2SEQ_TASKS)
    assert loaded["config"]["qa_seq2seq"]["repeats"] == 2
    for task, result in loaded["qa_seq2seq"].items():
        assert result["kind"] == {"shakespeare_qa": "qa", "shakespeare_cast": "seq2seq"}[task]
        assert result["train_examples"] == EXAMPLES[task] and result["num_layers"] == 1
        assert list(result["methods"]) == list(QA_SEQ2SEQ_METHODS)
        assert len(result["runs"]) == 2 * len(QA_SEQ2SEQ_METHODS)
        # interleaved: repeat 0 in the given order, repeat 1 reversed
        assert [r["method"] for r in result["runs"]] == [*QA_SEQ2SEQ_METHODS, *reversed(QA_SEQ2SEQ_METHODS)]
    report = format_report(loaded)
    assert "QA and seq2seq (issue 14)" in report and "Speed-up vs random batches" in report
    lines = report.splitlines()
    for task in QA_SEQ2SEQ_TASKS:
        for method in QA_SEQ2SEQ_METHODS:
            assert any(line.split()[:2] == [task, method] for line in lines if line.strip())
    assert "Training (tokens" not in report  # no classification task ran
    assert ("PASS" if loaded["all_targets_met"] else "FAIL") in report


@pytest.mark.parametrize("task", QA_SEQ2SEQ_TASKS)
def test_token_invariants_and_exact_formulas(results, task):
    result = results["qa_seq2seq"][task]
    methods = result["methods"]
    base = methods["random"]
    for name, m in methods.items():
        runs = [r for r in result["runs"] if r["method"] == name]
        assert {(r["real_tokens"], r["slot_tokens"], r["target_real_tokens"]) for r in runs} == {
            (m["real_tokens"], m["slot_tokens"], runs[0]["target_real_tokens"])}  # same batches every repeat
        seconds = [r["train_seconds"] for r in sorted(runs, key=lambda r: r["repeat"])]
        assert m["epoch_seconds"] == seconds
        assert m["median_epoch_seconds"] == statistics.median(seconds)
        assert m["spread"] == pytest.approx((max(seconds) - min(seconds)) / statistics.median(seconds))
        assert m["speedup"] == base["median_epoch_seconds"] / m["median_epoch_seconds"]
        ratios = [b["train_seconds"] / r["train_seconds"] for r in runs for b in result["runs"]
                  if b["method"] == "random" and b["repeat"] == r["repeat"]]
        assert (m["speedup_min"], m["speedup_max"]) == (min(ratios), max(ratios))
        assert m["ideal_speedup"] == base["slot_tokens"] / m["real_tokens"]
        assert m["speedup_over_ideal"] == pytest.approx(m["speedup"] / m["ideal_speedup"], rel=1e-12)
        assert m["pad_tokens"] == m["slot_tokens"] - m["real_tokens"] and 0 <= m["padding_fraction"] < 1
        if name != "tokendrop_bucket":  # no TokenDrop: the same real tokens as the baseline
            assert m["real_tokens"] == base["real_tokens"]
    assert methods["tokendrop_bucket"]["real_tokens"] <= base["real_tokens"]
    assert base["speedup"] == 1.0
    if task == "shakespeare_cast":  # TokenDrop never touches targets: every method trains on all target tokens
        target_real = {r["target_real_tokens"] for r in result["runs"]}
        assert len(target_real) == 1 and target_real.pop() > 0
        assert all(m["target_padding_fraction"] is not None for m in methods.values())
    else:
        assert all(m["target_padding_fraction"] is None for m in methods.values())


def _independent_count(train, method, epochs, token_budget, base_batch_size, pad_token_id):
    """Encoder and target padding counted with padding_stats over the sampler's batches (no collator)."""
    from tdnotebooks.finetuning.train import FinetuneConfig, make_batching
    from tdnotebooks.padding import padding_stats

    batching = make_batching(FinetuneConfig(method=method, token_budget=token_budget, base_batch_size=base_batch_size,
                                            seed=0, progress=False), train, pad_token_id)
    lengths = list(train["length"])
    targets = [len(x) for x in train["labels"]] if "labels" in train.column_names else None
    enc, tgt = [0, 0, 0], [0, 0]
    for epoch in range(epochs):
        batching.set_epoch(epoch)
        batches = [list(b) for b in batching.batch_sampler]
        s = padding_stats(lengths, batches)
        enc = [enc[0] + s.real_tokens, enc[1] + s.slot_tokens, enc[2] + s.num_batches]
        if targets is not None:
            t = padding_stats(targets, batches)
            tgt = [tgt[0] + t.real_tokens, tgt[1] + t.slot_tokens]
    return enc, (tgt if targets is not None else None)


@pytest.mark.parametrize("task", QA_SEQ2SEQ_TASKS)
def test_padding_pass_equals_an_independent_count(splits, wordpiece, task):
    train = splits[task]
    kwargs = dict(epochs=2, token_budget=512, base_batch_size=4)
    variants = padding_at_scale_qa_seq2seq(train, wordpiece.pad_token_id, seeds=1, **kwargs)
    assert list(variants) == list(QA_SEQ2SEQ_METHODS)
    for method, v in variants.items():
        enc, tgt = _independent_count(train, method, pad_token_id=wordpiece.pad_token_id, **kwargs)
        if method == "tokendrop_bucket":  # the collator drops stopwords: fewer real tokens, never more slots
            assert v["real_tokens"] <= enc[0] and v["slot_tokens"] <= enc[1] and v["num_batches"] == enc[2]
        else:
            assert [v["real_tokens"], v["slot_tokens"], v["num_batches"]] == enc
        assert v["padding_fraction"] == pytest.approx(1 - v["real_tokens"] / v["slot_tokens"])
        assert len(v["padding_fraction_per_epoch"]) == 2
        if tgt is None:
            assert v["target"] is None
        else:  # targets padded to the batch's longest, whatever TokenDrop did to the sources
            assert [v["target"]["real_tokens"], v["target"]["slot_tokens"]] == tgt
            assert v["target"]["pad_tokens"] == tgt[1] - tgt[0]


@pytest.mark.parametrize("task", QA_SEQ2SEQ_TASKS)
def test_timed_runs_train_on_the_planned_batches(results, splits, wordpiece, task):
    """The batching-only pass over the timed runs' subset reproduces their token counts (both sides)."""
    config = tiny_config()
    variants = padding_at_scale_qa_seq2seq(splits[task], wordpiece.pad_token_id, seeds=1, epochs=1,
                                           token_budget=config.token_budget, base_batch_size=config.base_batch_size)
    for method, m in results["qa_seq2seq"][task]["methods"].items():
        v = variants[method]
        run = next(r for r in results["qa_seq2seq"][task]["runs"] if r["method"] == method)
        assert (v["real_tokens"], v["slot_tokens"], v["num_batches"]) == (m["real_tokens"], m["slot_tokens"],
                                                                       m["num_batches"])
        if v["target"] is not None:
            assert (v["target"]["real_tokens"], v["target"]["slot_tokens"]) == (run["target_real_tokens"],
                                                                                run["target_slot_tokens"])


def test_target_verdicts_follow_the_numbers(results, splits, wordpiece):
    targets = [t for t in results["targets"] if t["task"] in QA_SEQ2SEQ_TASKS]
    names = ("padding_fraction", "qa_seq2seq_speedup_over_ideal", "qa_seq2seq_speedup")
    assert {(t["task"], t["target"]) for t in targets} == {(task, n) for task in QA_SEQ2SEQ_TASKS for n in names}
    padding_bar = next(t for t in TARGETS if t[0] == "padding_fraction")
    ops = {"<=": operator.le, ">=": operator.ge, ">": operator.gt}
    for t in targets:
        td = results["qa_seq2seq"][t["task"]]["methods"]["tokendrop_bucket"]
        expected = {"padding_fraction": (td["padding_fraction"], "<=", padding_bar[2]),
                    "qa_seq2seq_speedup_over_ideal": (td["speedup"] / td["ideal_speedup"], ">=", SPEEDUP_BAR),
                    "qa_seq2seq_speedup": (td["speedup"], ">", 1.0)}[t["target"]]
        assert (t["value"], t["comparison"], t["threshold"]) == (pytest.approx(expected[0]), *expected[1:])
        assert t["passed"] == ops[t["comparison"]](t["value"], t["threshold"])
    assert results["all_targets_met"] == all(t["passed"] for t in results["targets"])
    padding = next(t for t in targets if t["target"] == "padding_fraction")
    assert padding["measured_on"] == "timed runs' subset, encoder inputs"  # no scale pass in the tiny config

    # with a padding-at-scale pass, the padding target reads it, and the report shows its table
    task = "shakespeare_cast"
    variants = padding_at_scale_qa_seq2seq(splits[task], wordpiece.pad_token_id, seeds=1, epochs=1,
                                           token_budget=512, base_batch_size=4)
    scaled = {task: {**results["qa_seq2seq"][task], "padding_at_scale": {
        "train_features": len(splits[task]), "mean_length": 1.0, "variants": variants,
        "settings": {"seeds": 1, "epochs": 1, "token_budget": 512, "base_batch_size": 4}}}}
    verdicts = evaluate_qa_seq2seq_targets(scaled)
    padding = next(t for t in verdicts if t["target"] == "padding_fraction")
    assert padding["value"] == variants["tokendrop_bucket"]["padding_fraction"]
    assert padding["measured_on"] == "whole training split, encoder inputs"
    report = format_report({**results, "qa_seq2seq": scaled, "targets": verdicts})
    assert "Padding at scale (whole training splits, no model" in report and "tgt pad %" in report
    assert "(whole training split, encoder inputs)" in report


def test_evaluate_targets_on_hand_made_numbers():
    def method(padding, speedup, ideal, slowest):
        return {"padding_fraction": padding, "speedup": speedup, "ideal_speedup": ideal,
                "speedup_over_ideal": speedup / ideal, "speedup_min": slowest}

    results = {"shakespeare_qa": {"methods": {"random": method(0.45, 1.0, 1.8, 1.0),
                                              "tokendrop_bucket": method(0.006, 0.9, 2.0, 0.7)}}}
    verdicts = {t["target"]: t["passed"] for t in evaluate_qa_seq2seq_targets(results)}
    # 0.6 % > 0.5 %; 0.9 / 2.0 = 0.45 < 0.5; slower than random
    assert verdicts == {"padding_fraction": False, "qa_seq2seq_speedup_over_ideal": False,
                        "qa_seq2seq_speedup": False}
    results["shakespeare_qa"]["methods"]["tokendrop_bucket"] = method(0.004, 1.2, 2.0, 0.95)
    verdicts = {t["target"]: t["passed"] for t in evaluate_qa_seq2seq_targets(results)}
    assert verdicts == {"padding_fraction": True, "qa_seq2seq_speedup_over_ideal": True,
                        "qa_seq2seq_speedup": True}  # a slow repeat (0.95x) gets no verdict
    results["shakespeare_qa"]["methods"]["tokendrop_bucket"] = method(0.004, 0.95, 1.8, 0.9)
    verdicts = {t["target"]: t["passed"] for t in evaluate_qa_seq2seq_targets(results)}
    assert verdicts["qa_seq2seq_speedup_over_ideal"] and not verdicts["qa_seq2seq_speedup"]  # 0.53 x ideal, < 1
    assert evaluate_qa_seq2seq_targets({"shakespeare_qa": {"methods": {"random": method(0.4, 1, 1.5, 1)}}}) == []


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--no-qa-seq2seq", "--tasks", "shakespeare_qa"], "--no-qa-seq2seq skips"),
    (["finetune", "--no-qa-seq2seq", "--repeats", "2"], "--repeats sets the timed runs of the QA and seq2seq rows"),
    (["finetune", "--tasks", "rt_sentiment", "--repeats", "2"], "but --tasks names none of shakespeare_qa"),
    (["finetune", "--repeats", "0"], "argument --repeats: must be an int >= 1, got 0"),
    (["finetune", "--tasks", "squad"], "argument --tasks: invalid choice: 'squad'"),
])
def test_cli_bad_combinations_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_selects_the_rows():
    def parse(*argv):
        return config_from_args(build_parser().parse_args(["finetune", "--quick", *argv]))

    default = parse()
    assert default.tasks == ("rt_sentiment", "reviews_long") and default.qa_seq2seq == quick_config().qa_seq2seq
    assert default.qa_seq2seq.tasks == QA_SEQ2SEQ_TASKS and default.qa_seq2seq.repeats == 3
    only = parse("--tasks", "shakespeare_qa", "shakespeare_cast")
    assert only.tasks == () and only.qa_seq2seq.tasks == QA_SEQ2SEQ_TASKS
    assert only.qa_seq2seq.train_examples == quick_config().qa_seq2seq.train_examples
    mixed = parse("--tasks", "shakespeare_cast", "rt_sentiment", "--repeats", "5")
    assert mixed.tasks == ("rt_sentiment",) and mixed.qa_seq2seq.tasks == ("shakespeare_cast",)
    assert mixed.qa_seq2seq.repeats == 5
    assert parse("--no-qa-seq2seq").qa_seq2seq is None
    assert parse("--tasks", "reviews_long").qa_seq2seq is None
    assert parse("--repeats", "4").qa_seq2seq.repeats == 4


@pytest.mark.parametrize("make, message", [
    (lambda: QASeq2SeqSpec(tasks=("squad",)), "qa_seq2seq tasks must be a non-empty selection"),
    (lambda: QASeq2SeqSpec(tasks=()), "qa_seq2seq tasks must be a non-empty selection"),
    (lambda: QASeq2SeqSpec(methods=("bucket", "tokendrop_bucket")), "qa_seq2seq methods must include 'random'"),
    (lambda: QASeq2SeqSpec(methods=("random", "group_by_length")), "qa_seq2seq methods must include 'random'"),
    (lambda: QASeq2SeqSpec(repeats=0), "repeats must be an int >= 1, got 0"),
    (lambda: QASeq2SeqSpec(qa_stride=384), "qa_stride must be an int"),
    (lambda: QASeq2SeqSpec(train_examples={"shakespeare_qa": 1}), "train_examples['shakespeare_qa'] must be None"),
    (lambda: BenchConfig(tasks=(), qa_seq2seq=None), "tasks must be a non-empty selection"),
    (lambda: BenchConfig(token_budget=256), "token_budget must be an int >= the longest QA window or seq2seq source (512)"),
    (lambda: BenchConfig(qa_seq2seq={"tasks": ()}), "qa_seq2seq must be None"),
])
def test_config_errors(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)
