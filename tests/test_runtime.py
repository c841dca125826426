"""Device, AMP, seeding and the one size switch."""

import pytest
import torch

from tdnotebooks import runtime


def test_size_switch(monkeypatch):
    monkeypatch.setenv("TDN_SIZE", "small")
    assert runtime.pick(small=1, paper=2) == 1
    monkeypatch.setenv("TDN_SIZE", "paper")
    assert runtime.pick(small=1, paper=2) == 2
    monkeypatch.setenv("TDN_SIZE", "huge")
    with pytest.raises(ValueError, match="TDN_SIZE must be one of 'small', 'paper', got 'huge'"):
        runtime.size()


def test_device_and_amp():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.get_device().type == expected
    assert runtime.get_device("cpu").type == "cpu"
    assert runtime.amp_dtype("cpu") is None
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            runtime.get_device("cuda")
    with pytest.raises(ValueError, match="allowed: 'auto', 'cpu'"):
        runtime.get_device("xla")


def test_seed_everything_reproduces_draws():
    runtime.seed_everything(7)
    a = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    runtime.seed_everything(7)
    b = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        runtime.seed_everything(-1)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got True"):
        runtime.seed_everything(True)
    runtime.seed_everything(__import__("numpy").int64(7))  # numpy ints are ints
    assert torch.equal(torch.rand(3), a[0])


def test_environment_report_names_versions():
    report = runtime.environment_report()
    assert report["torch"] == torch.__version__ and report["size (TDN_SIZE)"] in runtime.SIZES


def test_package_import_is_light():
    import subprocess
    import sys

    code = "import sys, tdnotebooks; print(int(any(m in sys.modules for m in ('torch', 'transformers', 'datasets'))))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "0"
