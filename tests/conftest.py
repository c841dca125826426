"""Shared fixtures: the bundled tokenizer and models are loaded once per test session."""

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-tensor tests: with several threads on a busy machine every op
    waits on the others (up to 40x slower). Modules opt in with ``pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def wordpiece():
    from tdnotebooks.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def minilm_encoder():
    from tdnotebooks.models import load_pretrained

    return load_pretrained(kind="encoder").eval()


@pytest.fixture(scope="session")
def built_site():
    """The course site, built once per session from the notebooks nbval executed earlier in the run
    (testpaths lists notebooks/ first); notebooks without a fresh executed copy are executed here."""
    from pathlib import Path

    from tdnotebooks.site import build_site

    root = Path(__file__).resolve().parents[1]
    return build_site(root)
