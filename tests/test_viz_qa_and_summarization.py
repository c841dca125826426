"""Charts of notebook 08 (tdnotebooks.viz.qa_and_summarization): figures from small inputs, and clear errors."""

import pytest

from tdnotebooks.padding import PaddingStats
from tdnotebooks.viz.qa_and_summarization import (
    padding_sides_chart,
    qa_feature_html,
    qa_server_chart,
    window_chart,
)


def test_window_chart_marks_the_window_with_the_answer_and_the_overlaps():
    fig = window_chart([(0, 300), (200, 500), (400, 600)], 600, answer=(250, 260))
    bar = fig.data[0]
    assert list(bar.base) == [0, 200, 400] and list(bar.x) == [300, 300, 200]
    assert ["holds the answer" in t for t in bar.text] == [True, True, False]
    assert len(fig.layout.shapes) == 3  # two overlaps and the answer
    assert "3 windows" in fig.layout.title.text
    one = window_chart([(0, 10)], 10)
    assert len(one.layout.shapes) == 0
    with pytest.raises(ValueError, match="windows is empty"):
        window_chart([], 10)
    with pytest.raises(ValueError, match=r"windows\[0\]"):
        window_chart([(5, 20)], 10)
    with pytest.raises(ValueError, match="answer"):
        window_chart([(0, 10)], 10, answer=(8, 12))


def test_qa_feature_html_marks_question_dropped_words_and_answer():
    tokens = ["[CLS]", "who", "says", "[SEP]", "the", "king", "##s", "of", "rome", "[SEP]", "[PAD]"]
    dropped = [False, False, False, False, True, False, False, True, False, False, False]
    question = [False, True, True] + [False] * 8
    out = qa_feature_html(tokens, dropped, (5, 6), question)
    assert out.text == "who says | [the] <<kings>> [of] rome"
    assert "<s" in out.html and "<b" in out.html and "#888" in out.html and "[CLS]" not in out.html
    assert out._repr_html_() == out.html and str(out) == out.text
    with pytest.raises(ValueError, match="one flag per token"):
        qa_feature_html(tokens, dropped[:-1], (5, 6))
    with pytest.raises(ValueError, match="answer"):
        qa_feature_html(tokens, dropped, (6, 5))


def test_padding_sides_chart_groups_the_sides():
    stats = {"random": {"encoder inputs": PaddingStats(60, 100, 2), "decoder targets": PaddingStats(9, 12, 2)},
             "bucketed": {"encoder inputs": PaddingStats(60, 60, 2), "decoder targets": PaddingStats(9, 12, 2)}}
    fig = padding_sides_chart(stats)
    assert [t.name for t in fig.data] == ["encoder inputs", "decoder targets"]
    assert list(fig.data[0].y) == pytest.approx([0.4, 0.0]) and list(fig.data[1].text) == ["25%", "25%"]
    with pytest.raises(ValueError, match="non-empty"):
        padding_sides_chart({})
    with pytest.raises(ValueError, match="gives sides"):
        padding_sides_chart({**stats, "x": {"encoder inputs": PaddingStats(1, 1, 1)}})
    with pytest.raises(ValueError, match="PaddingStats"):
        padding_sides_chart({"x": {"encoder inputs": 0.3}})


def test_qa_server_chart_stacks_padding_and_draws_the_time_range():
    results = {"random": {"real_tokens": 80, "slot_tokens": 100, "seconds": [1.0, 1.2, 1.1]},
               "bucketed": {"real_tokens": 80, "slot_tokens": 82, "seconds": [0.8]}}
    fig = qa_server_chart(results)
    real, pad, seconds = fig.data
    assert list(real.y) == [80, 80] and list(pad.y) == [20, 2]
    assert list(seconds.y) == pytest.approx([1.1, 0.8])
    assert list(seconds.error_y.array) == pytest.approx([0.1, 0.0])
    assert list(seconds.error_y.arrayminus) == pytest.approx([0.1, 0.0])
    with pytest.raises(ValueError, match="non-empty"):
        qa_server_chart({})
    with pytest.raises(ValueError, match="missing"):
        qa_server_chart({"x": {"real_tokens": 1}})
    with pytest.raises(ValueError, match="real_tokens"):
        qa_server_chart({"x": {"real_tokens": 5, "slot_tokens": 4, "seconds": [1.0]}})


def test_every_axis_of_every_chart_has_a_title():
    figures = {
        "window_chart": window_chart([(0, 300), (200, 500)], 500, answer=(250, 260)),
        "padding_sides_chart": padding_sides_chart({"random": {"encoder": PaddingStats(80, 100, 2),
                                                               "decoder": PaddingStats(30, 40, 2)}}),
        "qa_server_chart": qa_server_chart({"random": {"real_tokens": 8, "slot_tokens": 10, "seconds": [1.0]}}),
    }
    for name, fig in figures.items():
        layout = fig.to_plotly_json()["layout"]
        axes = [key for key in layout if key.startswith(("xaxis", "yaxis"))]
        assert axes, name
        untitled = [key for key in axes if not (layout[key].get("title") or {}).get("text")]
        assert not untitled, f"{name}: {untitled} without title"
