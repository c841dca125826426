"""The package as it would be published: an sdist and a wheel that build, pass ``twine check``, hold the course
and its data, and a wheel that works installed on its own.

``dists`` builds both from a copy of the sources (nothing is written into the repository) with
``python -m build --no-isolation`` (no download: the build back end is the one installed here): the sdist
first, then the wheel from the unpacked sdist, so a file the wheel needs but the sdist lacks fails here.

``venv`` installs the wheel with ``--no-deps`` into a fresh virtual environment. Its dependencies (torch,
transformers, Jupyter, ...) come from the environment running the tests, through a ``.pth`` file that adds that
environment's site-packages after the venv's own: what ``--system-site-packages`` does, except that it also
works when the tests themselves run in a venv (``./setup.sh``'s ``.venv/``), whose packages
``--system-site-packages`` would not see. Installing every dependency from scratch is the set-up script's job
(``./setup.sh``), not a test's. Those site-packages also hold the repository's editable install of tdnotebooks
(a meta-path finder, consulted after ``sys.path``): the tests check, from a folder outside the repository, that
the venv's own copy is the one imported, in a script and in the kernel that executes notebook 00.

All slow (about a minute and a half on a 2-core CPU, most of it notebook 00).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
DATA_FILES = sorted(p.name for p in (ROOT / "tdnotebooks" / "data").glob("*.jsonl.gz")) + ["DATA.md"]
VERSION = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[1]
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "CHANGELOG.md", "setup.sh",
           "tdnotebooks", "notebooks", "tests", "binder"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".ipynb_checkpoints", ".hypothesis")


def _run(*argv, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 300)
    run = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
    assert run.returncode == 0, f"{' '.join(map(str, argv))}\n{run.stdout}\n{run.stderr}"
    return run


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    """(sdist, wheel), built by ``python -m build --no-isolation`` from a copy of the sources."""
    pytest.importorskip("build", reason="python -m build is in the test extra: pip install -e '.[test]'")
    tmp = tmp_path_factory.mktemp("dists")
    source, out = tmp / "source", tmp / "dist"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=IGNORE)
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source)
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    return sdist, wheel


def test_the_names_carry_the_version(dists):
    sdist, wheel = dists
    assert sdist.name == f"tdnotebooks-{VERSION}.tar.gz" and wheel.name == f"tdnotebooks-{VERSION}-py3-none-any.whl"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(VERSION)}\]", changelog, re.M), f"CHANGELOG.md: no section for {VERSION}"


def test_twine_check_passes(dists):
    pytest.importorskip("twine", reason="twine is in the test extra: pip install -e '.[test]'")
    run = _run(sys.executable, "-m", "twine", "check", "--strict", *dists)
    assert run.stdout.count("PASSED") == 2, run.stdout


def test_the_sdist_holds_the_course_the_data_and_the_docs(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    expected = ({f"notebooks/{n}" for n in NOTEBOOKS} | {f"tdnotebooks/data/{n}" for n in DATA_FILES}
                | {"README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "MANIFEST.in", "setup.sh",
                   "notebooks/README.md", "tests/test_wheel.py", "tests/nbval_sanitize.cfg"})
    assert not expected - names, f"missing from the sdist: {sorted(expected - names)}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_wheel_holds_every_notebook_and_the_data(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"tdnotebooks-{VERSION}.dist-info/METADATA").decode()
    assert sorted(n[len("tdnotebooks/_course/"):] for n in names if n.startswith("tdnotebooks/_course/")) == NOTEBOOKS
    assert {f"tdnotebooks/data/{n}" for n in DATA_FILES} <= names
    assert f"tdnotebooks-{VERSION}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: MIT" in metadata and "Classifier: Development Status :: 3 - Alpha" in metadata
    assert not [n for n in names if n.startswith(("tests/", "notebooks/"))], "only the package is installed"


# ----------------------------------------------------------------------------------------------------------
# the wheel installed in a virtual environment of its own
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel; its dependencies come from this environment's site-packages."""
    _, wheel = dists
    home = tmp_path_factory.mktemp("wheel-venv") / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", home)
    python = home / "bin" / "python"
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    ours = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    (purelib / "_tdnotebooks_test_dependencies.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in ours if Path(p).is_dir()))
    # --ignore-installed: the editable install of tdnotebooks, visible through the .pth, is neither taken as
    # "already satisfied" nor touched
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel)
    return home


def _venv_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return {**env, "HF_HUB_OFFLINE": "1", "TDN_SIZE": "small", "PYTHONWARNINGS": "ignore", **extra}


INSTALLED_CHECK = """
import json, sys
from pathlib import Path

import tdnotebooks
from tdnotebooks import course
from tdnotebooks.data import load_corpus, load_task
from tdnotebooks.models import load_pretrained, load_tokenizer

rt, shakespeare = load_task("rt_sentiment"), load_corpus("shakespeare")
tokenizer = load_tokenizer()
model = load_pretrained(kind="classifier", num_labels=2, num_layers=1)
encoded = tokenizer(rt["train"][0]["text"], return_tensors="pt")
print(json.dumps({
    "file": tdnotebooks.__file__, "course_dir": str(course.course_dir()),
    "rt_train": rt["train"].num_rows, "shakespeare_train": shakespeare["train"].num_rows,
    "logits": list(model(**encoded).logits.shape), "layers": model.config.num_hidden_layers,
}))
"""


def test_the_installed_wheel_loads_its_data_and_model(venv, tmp_path):
    run = _run(venv / "bin" / "python", "-c", INSTALLED_CHECK, cwd=tmp_path, env=_venv_env())
    report = json.loads(run.stdout.strip().splitlines()[-1])
    imported, course_dir = Path(report["file"]).resolve(), Path(report["course_dir"]).resolve()
    assert imported.is_relative_to(venv.resolve()), f"imported {imported}, not the venv's copy"
    assert course_dir.is_relative_to(venv.resolve()) and course_dir.name == "_course"
    assert report["rt_train"] > 1000 and report["shakespeare_train"] > 1000
    assert report["logits"] == [1, 2] and report["layers"] == 1


def test_the_installed_wheel_copies_the_course_and_runs_notebook_00(venv, tmp_path, monkeypatch):
    """``python -m tdnotebooks.course copy DIR`` from the venv, then notebook 00 of the copy executed top to
    bottom (nbclient, 600 s a cell) in a kernel running the venv's python."""
    from nbclient import NotebookClient

    python = venv / "bin" / "python"
    course = tmp_path / "course"
    run = _run(python, "-m", "tdnotebooks.course", "copy", course, cwd=tmp_path, env=_venv_env())
    assert f"{len(NOTEBOOKS)} notebooks written" in run.stdout
    assert sorted(p.name for p in course.iterdir()) == NOTEBOOKS
    assert all((course / n).read_bytes() == (ROOT / "notebooks" / n).read_bytes() for n in NOTEBOOKS)

    kernels = tmp_path / "jupyter" / "kernels" / "tdnotebooks-wheel"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tdnotebooks wheel (test)", "language": "python"}))
    for key, value in _venv_env(JUPYTER_PATH=str(tmp_path / "jupyter")).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    nb = nbformat.read(course / "00_start_here.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import pathlib, tdnotebooks\nprint('TDN_FILE', pathlib.Path(tdnotebooks.__file__).resolve())"))
    NotebookClient(nb, timeout=600, kernel_name="tdnotebooks-wheel",
                   resources={"metadata": {"path": str(course)}}).execute()
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert f"TDN_FILE {venv.resolve()}" in printed, printed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
