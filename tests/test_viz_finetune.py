"""Charts of notebook 03 (tdnotebooks.viz.fast_finetuning) on hand-made histories, at the extremes."""

import math
from dataclasses import asdict

import numpy as np
import pytest

from tdnotebooks.finetuning.train import FinetuneConfig, FinetuneHistory
from tdnotebooks.viz.fast_finetuning import ablation_chart, accuracy_vs_time, loss_curves, lr_per_step


def make_history(batch_sizes_per_epoch, *, accuracy=None, seconds=None, loss=0.5, method="bucket", lrm=True,
                 base=8, lr=1e-3, padding=(90, 100)):
    """A FinetuneHistory whose steps have the given batch sizes; lr = lr * LRM factor when the run is modulated."""
    config = asdict(FinetuneConfig(method=method, lrm=lrm, base_batch_size=base))
    history = FinetuneHistory(config=config)
    step = 0
    for epoch, sizes in enumerate(batch_sizes_per_epoch):
        for size in sizes:
            factor = math.sqrt(size / base) if lrm and method in ("bucket", "tokendrop_bucket") else 1.0
            value = loss(step) if callable(loss) else loss
            history.steps.append({"step": step, "epoch": epoch, "loss": value, "batch_size": size,
                                  "seq_len": 10, "lr": lr * (1 - step / 100) * factor})
            step += 1
        history.epochs.append({
            "epoch": epoch, "train_loss": 0.5, "train_seconds": seconds[epoch] if seconds else 1.0,
            "dev_accuracy": accuracy[epoch] if accuracy else 0.5, "dev_loss": 0.7,
            "real_tokens": padding[0], "slot_tokens": padding[1], "num_batches": len(sizes)})
    return history


def _titled(fig):
    return bool(fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text)


def test_accuracy_vs_time_one_seed_is_cumulative_time_and_percent():
    h = make_history([[8, 8], [16]], accuracy=[0.6, 0.75], seconds=[3.0, 1.5])
    fig = accuracy_vs_time({"TokenDrop + BucketSampler": h})
    (trace,) = fig.data
    assert list(trace.x) == [3.0, 4.5] and list(trace.y) == pytest.approx([60.0, 75.0])
    assert list(trace.text) == ["e1", "e2"] and trace.error_y.array is None
    assert _titled(fig) and "(s" in fig.layout.xaxis.title.text and "%" in fig.layout.yaxis.title.text


def test_accuracy_vs_time_seeds_mean_and_min_max():
    seeds = [make_history([[8], [8], [8]], accuracy=[0.5, 0.6, 0.7], seconds=[1, 1, 1]),
             make_history([[8], [8], [8]], accuracy=[0.7, 0.8, 0.9], seconds=[3, 3, 3])]
    fig = accuracy_vs_time({"random": seeds, "bucket": seeds[:1]})
    trace = fig.data[0]
    assert list(trace.x) == [2, 4, 6] and list(trace.y) == pytest.approx([60, 70, 80])
    assert list(trace.error_y.array) == pytest.approx([10, 10, 10]) and list(trace.error_x.arrayminus) == [1, 2, 3]
    assert "2 seeds" in trace.name and "1 seed)" in fig.data[1].name
    assert len(accuracy_vs_time({}).data) == 0


def test_accuracy_vs_time_rejects_bad_runs():
    with pytest.raises(ValueError, match="same number of epochs"):
        accuracy_vs_time({"x": [make_history([[8]]), make_history([[8], [8]])]})
    with pytest.raises(ValueError, match="no histories"):
        accuracy_vs_time({"x": []})
    with pytest.raises(ValueError, match="FinetuneHistory"):
        accuracy_vs_time({"x": {"epochs": []}})


def test_ablation_chart_reports_accuracy_steps_padding_and_time():
    none = make_history([[300], [300]], accuracy=[0.55, 0.6], seconds=[2, 2], padding=(950, 1000))
    full = make_history([[8] * 40, [16] * 20], accuracy=[0.7, 0.8], seconds=[3, 1], padding=(90, 100))
    fig = ablation_chart({"none": none, "RBM + BatchCap + LRM": full})
    bars = [t for t in fig.data if t.type == "bar"]
    assert [list(b.x) for b in bars] == [["none", "RBM + BatchCap + LRM"]] * 4
    accuracy, steps, padding, seconds = (list(b.y) for b in bars)
    assert accuracy == pytest.approx([60, 80]) and steps == [2, 60]
    assert padding == pytest.approx([5, 10]) and seconds == [4, 4]
    assert not [t for t in fig.data if t.type == "scatter"]  # one seed: no seed dots
    assert all(fig.layout[f"yaxis{k}"].title.text for k in ("", 2, 3, 4)) and fig.layout.title.text
    assert all(fig.layout[f"xaxis{k}"].title.text == "setting" for k in ("", 2, 3, 4))
    low, high = fig.layout.yaxis.range
    assert low <= 60 and high >= 80


def test_ablation_chart_shows_every_seed():
    seeds = [make_history([[8]], accuracy=[a]) for a in (0.5, 0.9)]
    fig = ablation_chart({"a": seeds, "b": seeds[1]})
    dots = [t for t in fig.data if t.type == "scatter"]
    assert len(dots) == 4 and list(dots[0].x) == ["a", "a", "b"]
    assert list(dots[0].y) == pytest.approx([50, 90, 90]) and list(fig.data[0].y) == pytest.approx([70, 90])
    zero = make_history([[1]], padding=(0, 0))  # no slots counted: padding reads 0, not a division error
    assert list(ablation_chart({"z": zero}).data[2].y) == [0]


def test_loss_curves_weight_by_examples_and_count_epochs():
    # epoch 0: steps of 1 and 3 examples land in the same half; the mean weighs them by examples
    h = make_history([[1, 3, 4], [8]], loss=lambda step: [1.0, 2.0, 0.0, 4.0][step])
    fig = loss_curves({"run": h}, bins_per_epoch=2)
    (trace,) = fig.data
    assert list(trace.x) == [0.25, 0.75, 1.25, 1.75]
    assert trace.y[0] == pytest.approx((1 * 1 + 3 * 2) / 4) and trace.y[1] == 0.0
    assert math.isnan(trace.y[2]) and trace.y[3] == 4.0  # one huge batch: a single point in its epoch
    assert _titled(fig) and "epochs" in fig.layout.xaxis.title.text


def test_loss_curves_constant_loss_and_seed_mean():
    many = make_history([[1] * 500] * 3, loss=0.3)
    few = make_history([[500]] * 3, loss=0.9)
    fig = loss_curves({"many steps": many, "seeds": [many, few]}, bins_per_epoch=5)
    assert np.allclose(fig.data[0].y, 0.3) and len(fig.data[0].x) == 15
    y = np.asarray(fig.data[1].y, dtype=float)
    assert np.allclose(y[2::5], 0.6) and np.allclose(np.delete(y, np.s_[2::5]), 0.3)  # NaN bins ignored
    with pytest.raises(ValueError, match="bins_per_epoch"):
        loss_curves({"x": many}, bins_per_epoch=0)


def test_lr_per_step_undoes_lrm_only_where_it_was_applied():
    sizes = [[8, 32, 2], [64, 8]]
    runs = {"with LRM": make_history(sizes, lrm=True), "without LRM": make_history(sizes, lrm=False),
            "random (lrm flag ignored)": make_history([[8] * 5], method="random", lrm=True)}
    fig = lr_per_step(runs)
    lines = [t for t in fig.data if t.mode == "lines"]
    points = [t for t in fig.data if t.mode == "markers"]
    assert len(lines) == len(points) == 3
    schedule = [1e-3 * (1 - s / 100) for s in range(5)]
    for line in lines:  # the unmodulated schedule, recovered in every panel
        assert list(line.y) == pytest.approx(schedule)
    assert list(points[0].y) == pytest.approx([v * math.sqrt(b / 8) for v, b in zip(schedule, [8, 32, 2, 64, 8], strict=True)])
    assert list(points[1].y) == pytest.approx(schedule)
    assert list(points[0].marker.color) == [8, 32, 2, 64, 8]
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (2, 64)  # one scale for all panels
    assert len(fig.layout.shapes) == 2  # the epoch boundary in each two-epoch panel
    assert fig.layout.title.text and fig.layout.yaxis.title.text and fig.layout.xaxis3.title.text


def test_lr_per_step_extremes():
    long = make_history([[4] * 3000, [4] * 3000], lrm=False)
    fig = lr_per_step({"6000 steps": long})
    assert len(fig.data[1].x) == 6000 and len(fig.layout.shapes) == 1
    empty = lr_per_step({})
    assert len(empty.data) == 0 and empty.layout.title.text
    with pytest.raises(ValueError, match="one seed per run"):
        lr_per_step({"x": [long, long]})


def test_a_setting_keeps_its_colour_in_every_chart_whatever_its_position():
    h = make_history([[8, 8], [16]])
    ablation = {"BucketSampler alone": h, "+ RBM": h, "+ RBM + BatchCap": h, "+ RBM + BatchCap + LRM": h}
    bars = ablation_chart(ablation).data[0].marker.color
    lines = {t.name: t.line.color for t in loss_curves({"RandomSampler": h, **ablation}).data}
    assert list(bars) == [lines[name] for name in ablation]  # same setting, same colour, though one place later
    assert len(set(lines.values())) == len(lines)              # and different settings differ
    first = accuracy_vs_time({"RandomSampler": h, "TokenDrop + BucketSampler": h}).data
    swapped = accuracy_vs_time({"TokenDrop + BucketSampler": h, "RandomSampler": h}).data
    assert (first[0].line.color, first[1].line.color) == (swapped[1].line.color, swapped[0].line.color)
    unknown = loss_curves({"my run": h, "RandomSampler": h}, colors={"RandomSampler": "#000000"}).data
    assert unknown[1].line.color == "#000000" and unknown[0].line.color != "#000000"
    assert unknown[0].line.color == loss_curves({"my run": h}).data[0].line.color  # an unknown label, stable too


def test_accuracy_vs_slots_and_ablation_panels_without_time():
    h = make_history([[8, 8], [16]], accuracy=[0.6, 0.75], padding=(90, 100))
    (trace,) = accuracy_vs_time({"RandomSampler": h}, x="slots").data
    assert list(trace.x) == [100, 200]  # cumulative token slots, the same on every machine
    with pytest.raises(ValueError, match="seconds"):
        accuracy_vs_time({"RandomSampler": h}, x="minutes")
    fig = ablation_chart({"+ RBM": h}, metrics=["dev accuracy (%)", "optimizer steps", "padding (%)"])
    assert [a.text for a in fig.layout.annotations] == ["dev accuracy (%)", "optimizer steps", "padding (%)"]
    with pytest.raises(ValueError, match="metrics"):
        ablation_chart({"+ RBM": h}, metrics=["speed"])
