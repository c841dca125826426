"""Charts of notebook 05 (tdnotebooks.viz.token_dropping): values drawn, holes where tokens skip, errors."""

import pytest

from tdnotebooks.viz.token_dropping import importance_curves, layer_token_grid

TOKENS = ["[CLS]", "the", "[MASK]", "king", ",", "[SEP]"]
IMPORTANCE = [1e4, 7.0, 1e4, 9.5, 6.0, 1e4]
KEPT = [True, False, True, True, False, True]


def test_grid_leaves_holes_only_in_the_dropped_layers():
    fig = layer_token_grid(TOKENS, IMPORTANCE, KEPT, num_layers=4, start_layer=1, end_layer=3)
    assert len(fig.data) == 1
    z = [list(row) for row in fig.data[0].z]
    assert len(z) == 4 and all(len(row) == len(TOKENS) for row in z)
    for layer in (0, 3):  # full layers: every token has a value
        assert all(v is not None for v in z[layer])
    for layer in (1, 2):  # dropped layers: holes exactly at the dropped tokens
        assert [v is None for v in z[layer]] == [not k for k in KEPT]
    assert "skips this layer" in fig.data[0].hovertext[1][1] and "skips" not in fig.data[0].hovertext[0][1]
    assert "2 of 6 tokens" not in fig.layout.title.text and "4 of 6 tokens" in fig.layout.title.text


def test_grid_colors_losses_and_clips_pinned_ids():
    fig = layer_token_grid(TOKENS, IMPORTANCE, KEPT, num_layers=2, start_layer=0, end_layer=1)
    trace = fig.data[0]
    assert (trace.zmin, trace.zmax) == (6.0, 9.5)          # the range of the unpinned values
    assert list(trace.z[1]) == [9.5, 7.0, 9.5, 9.5, 6.0, 9.5]  # pinned +1e4 clipped to the top
    assert "(pinned)" in trace.hovertext[1][0] and "7.000" in trace.hovertext[1][1]
    assert list(trace.x)[1] == "1·the" and len(set(trace.x)) == len(TOKENS)


def test_grid_with_equal_or_only_pinned_values_still_has_a_color_range():
    fig = layer_token_grid(["a", "b"], [10.0, 10.0], [True, False], num_layers=3, start_layer=1, end_layer=2)
    assert fig.data[0].zmin < 10.0 < fig.data[0].zmax
    fig = layer_token_grid(["[CLS]"], [1e4], [True], num_layers=1, start_layer=0, end_layer=1)
    assert fig.data[0].zmin < fig.data[0].zmax


@pytest.mark.parametrize("kwargs, message", [
    ({"tokens": []}, "tokens is empty"),
    ({"kept": [True]}, "same length"),
    ({"importance": [1.0] * 5}, "same length"),
    ({"importance": [float("nan")] * 6}, "finite"),
    ({"num_layers": 0}, "num_layers must be an int >= 1"),
    ({"start_layer": 2, "end_layer": 2}, "start_layer < end_layer"),
    ({"end_layer": 5}, r"end_layer <= num_layers = 4"),
    ({"start_layer": -1}, "start_layer must be an int >= 0, got -1"),
    ({"start_layer": 1.0}, "start_layer must be an int >= 0, got 1.0"),
    ({"num_layers": True}, "num_layers must be an int >= 1, got True"),
])
def test_grid_rejects_bad_input(kwargs, message):
    args = {"tokens": TOKENS, "importance": IMPORTANCE, "kept": KEPT, "num_layers": 4, "start_layer": 1,
            "end_layer": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        layer_token_grid(**args)


def test_curves_draw_one_line_per_token():
    fig = importance_curves([0, 10, 20], {",": [10.0, 8.0, 7.0], "king": [10.0, 10.0, 9.9]}, initial=10.0)
    assert [t.name for t in fig.data] == [",", "king"]
    assert list(fig.data[0].x) == [0, 10, 20] and list(fig.data[0].y) == [10.0, 8.0, 7.0]
    assert fig.layout.shapes and fig.layout.shapes[0].y0 == 10.0
    assert not importance_curves([5], {"a": [1.0]}).layout.shapes


@pytest.mark.parametrize("steps, curves, message", [
    ([], {"a": []}, "steps is empty"),
    ([0, 0], {"a": [1.0, 1.0]}, "steps must increase"),
    ([0, 1], {}, "curves is empty"),
    ([0, 1], {"a": [1.0]}, r"curves\['a'\] has 1 values for 2 steps"),
    ([0, 1], {"a": [1.0, float("inf")]}, "not finite"),
])
def test_curves_reject_bad_input(steps, curves, message):
    with pytest.raises(ValueError, match=message):
        importance_curves(steps, curves)
