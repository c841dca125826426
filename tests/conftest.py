"""Shared fixtures: the bundled tokenizer and models are loaded once per test session."""

import pytest


@pytest.fixture(scope="session")
def wordpiece():
    from tdnotebooks.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def minilm_encoder():
    from tdnotebooks.models import load_pretrained

    return load_pretrained(kind="encoder").eval()
