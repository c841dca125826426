"""pytest plugin loaded by the project's test configuration (``-p tdnotebooks.testing``).

It sets the environment before anything imports Hugging Face libraries and before nbval starts
notebook kernels (which inherit it): no hub look-ups (they would hang ~45 s without a network),
the small size, no progress-bar noise, and one CPU thread per process unless the caller chose
otherwise: the tests and the notebook kernels run one at a time, and on a small shared CPU several
OpenMP threads per process mostly wait for each other (tiny ops ran up to ~40x slower with 2 threads
than with 1 on the 2-core CI machine while other work ran). ``OMP_NUM_THREADS=2 pytest`` overrides it.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TDN_SIZE", "small")  # TDN_SIZE=paper pytest notebooks/ checks big settings on a GPU
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


# ----------------------------------------------------------------------------------------------------------
# Keep what nbval executed: every notebook that ran to its end is written, with its outputs and the final
# state of its widgets, to build/executed/ (``$TDN_EXECUTED_DIR``). The course site (tdnotebooks.site) is
# built from these copies, so the notebooks are executed once per test run, not twice.
# ----------------------------------------------------------------------------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tdnotebooks.site import executed_dir  # noqa: E402

WIDGET_STATE_CODE = ("import json as _tdn_json, ipywidgets as _tdn_widgets\n"
                     "print(_tdn_json.dumps(_tdn_widgets.Widget.get_manager_state(drop_defaults=True)))")


def _is_nbval_cell(item: pytest.Item) -> bool:
    return hasattr(item, "cell") and hasattr(item, "test_outputs") and hasattr(item.parent, "nb")


def _widget_state(kernel, timeout: float = 30.0) -> dict | None:
    """The kernel's widget manager state (the notebook metadata JupyterLab saves), or None if unavailable."""
    msg_id = kernel.execute_cell_input(WIDGET_STATE_CODE, allow_stdin=False)
    text = []
    while True:
        msg = kernel.get_message(stream="iopub", timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            text.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            return None
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    try:
        return json.loads("".join(text))
    except ValueError:
        return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    outcome = yield
    if _is_nbval_cell(item) and item.test_outputs is not None:
        item.cell.outputs = list(item.test_outputs)
        item.cell.execution_count = getattr(item.parent, "_tdn_count", 0) + 1
        item.parent._tdn_count = item.cell.execution_count
    if _is_nbval_cell(item) and outcome.excinfo is not None \
            and not isinstance(outcome.excinfo[1], pytest.skip.Exception):
        item.parent._tdn_failed = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    notebook = item.parent if _is_nbval_cell(item) else None
    last = notebook is not None and (nextitem is None or nextitem.parent is not notebook)
    if last and not getattr(notebook, "_tdn_failed", False) and notebook.kernel is not None \
            and notebook.kernel.is_alive():
        try:
            state = _widget_state(notebook.kernel)
        except Exception:  # an unresponsive kernel: the copy is still useful without widget state
            state = None
        nb = notebook.nb
        if state:
            nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": state}
        target = executed_dir(Path(str(item.config.rootpath))) / Path(str(notebook.path)).name
        target.parent.mkdir(parents=True, exist_ok=True)
        import nbformat

        nbformat.write(nb, str(target))
    yield
