"""What every exercise check must do, asserted once for the exercise test modules."""

WRONG_TYPES = ("three", [1], {"a": 1}, object())


def assert_behaves(check, right, wrong, *args, **kwargs) -> str:
    """``check`` accepts ``right``, rejects ``wrong`` (returns that hint), leaves None unanswered and never
    raises for an answer of the wrong type."""
    feedback = check(right, *args, **kwargs)
    assert feedback and feedback.correct and feedback.answered, feedback
    feedback = check(wrong, *args, **kwargs)
    assert not feedback and feedback.answered
    none = check(None, *args, **kwargs)
    assert not none and not none.answered and "replace None" in none.message
    for bad in WRONG_TYPES:
        assert check(bad, *args, **kwargs).correct is False
    return feedback.message
