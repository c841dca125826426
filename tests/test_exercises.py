"""The exercise framework: feedback for right, wrong, unanswered and ill-typed answers, and how it shows."""

from tdnotebooks.exercises import Feedback, check_choice, check_number, unanswered


def test_check_number_tolerance_and_hint():
    assert check_number(0.251, 0.25, "the padding fraction", "hint", rel_tol=0.01)
    wrong = check_number(0.3, 0.25, "the padding fraction", "count the pad slots")
    assert not wrong and wrong.answered and wrong.message == "count the pad slots"
    assert check_number(0, 0.0, "x", "h", abs_tol=1e-9).correct


def test_unanswered_and_wrong_types_never_raise():
    none = check_number(None, 1.0, "the LRM factor", "h")
    assert not none and not none.answered and "replace None with the LRM factor" in none.message
    for bad in ("0.25", True, float("nan"), [1]):
        feedback = check_number(bad, 0.25, "x", "h")
        assert not feedback and "expected a number" in feedback.message
    assert not check_choice(3, "a", ("a", "b"), "x", "h") and "answer one of 'a', 'b'" in \
        check_choice(3, "a", ("a", "b"), "x", "h").message


def test_numpy_numbers_and_unhashable_answers():
    import numpy as np

    assert check_number(np.int64(3), 3, "x", "h") and check_number(np.float32(0.25), 0.25, "x", "h")
    assert not check_number(10**400, 1.0, "x", "too big")                      # no OverflowError
    for bad in ([1], {"a": 1}):
        assert not check_choice(bad, "a", ("a", "b"), "x", "h")


def test_check_choice_ignores_case_and_spacing():
    assert check_choice(" Bucketed ", "bucketed", ("random", "bucketed"), "x", "h")
    assert check_choice("random", "bucketed", ("random", "bucketed"), "x", "why?").message == "why?"


def test_feedback_shows_as_text_and_html():
    right, wrong, open_ = Feedback(True, "yes"), Feedback(False, "no"), unanswered("a number")
    assert str(right) == "Correct: yes" and str(wrong) == "Not yet: no" and str(open_).startswith("(not answered")
    assert "#54A24B" in right._repr_html_() and "#E45756" in wrong._repr_html_()
    assert "&lt;b&gt;" in Feedback(False, "<b>")._repr_html_()          # messages are escaped
