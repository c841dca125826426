"""Build the course as a static web site: the executed notebooks, readable without running them.

    python -m tdnotebooks.site                 # -> build/site/index.html (open it, or serve the folder)

What it does, in order:

1. Takes every ``notebooks/NN_*.ipynb`` executed: the copy the test run left in ``build/executed/``
   (``pytest`` writes one per notebook that ran to its end, see :mod:`tdnotebooks.testing`) when it is newer
   than the notebook, otherwise it executes the notebook here with nbclient (``TDN_SIZE`` as set; small by
   default), keeping the widgets' state so they show in their default position.
2. Makes each plotly figure a self-contained HTML snippet that loads ``assets/plotly.min.js`` from the
   site itself (copied from the installed plotly package): the pages draw their figures offline.
3. Lays each widget panel out as JupyterLab shows it after Run All (controls, then what they drew) and
   greys its controls out: a page has no kernel, so the panel is a snapshot at the default values.
   The widgets are drawn by ``@jupyter-widgets/html-manager``'s ``embed.js``, served from the site too:
   fetched once with ``npm pack`` into ``build/cache/`` (so the first build needs ``npm`` and the npm
   registry; later builds reuse the cache), and named to nbconvert as its widget renderer.
4. Writes a landing page (the notebook list and the glossary), a style sheet (a content column wide enough
   for the code) and an mkdocs configuration next to the pages, and runs ``mkdocs build --strict`` with the
   mkdocs-jupyter plugin (material theme, no web fonts).

Nothing is written outside ``build/``; the built site is not committed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "notebook_title",
    "executed_dir", "notebook_paths", "execute_notebook", "executed_copy", "plotly_outputs_to_html",
    "widget_panels_for_site", "fetch_widget_manager", "mkdocs_config", "build_site", "readme_section", "main",
]

PLOTLY_MIME = "application/vnd.plotly.v1+json"
PLOTLY_JS = "assets/plotly.min.js"
NOTEBOOK_NAME = re.compile(r"^\d\d_.+\.ipynb$")

WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
HTML_MANAGER = "@jupyter-widgets/html-manager"
HTML_MANAGER_VERSION = "1.0.15"        # the embeddable widget manager of ipywidgets 8 (widget state version 2)
WIDGETS_DIR = "assets/jupyter-widgets"
WIDGETS_JS = f"{WIDGETS_DIR}/embed.js"
# What the site serves from the package's dist/: the bundle (base, controls and output widgets; no require.js),
# its licence notice, and the icon fonts its style sheet names (woff2/woff: what browsers of today load).
WIDGET_FILES = re.compile(r"^package/dist/(embed\.js|embed\.js\.LICENSE\.txt|[0-9a-f]+\.woff2?)$")
# The controls a panel greys out on the site (moving them would change nothing: no kernel behind the page).
CONTROL_MODELS = re.compile(r"^(\w*Slider|Dropdown|Checkbox|ToggleButtons?|RadioButtons|Select\w*|\w*Text|Textarea|"
                            r"Button|Combobox|Play)Model$")
NO_KERNEL_TOOLTIP = "a snapshot at the default value: moving it needs a running kernel (JupyterLab, Binder, Colab)"
SITE_CSS_FILE = "assets/tdnotebooks.css"
# A content column wide enough for the notebooks' code (up to ~130 columns): material caps .md-grid at 61rem
# (~1220 px, minus two sidebars); here the table of contents joins the navigation (theme feature toc.integrate),
# the column takes the window up to 1800 px and the code font is 12.5 px (JupyterLab's: 13 px), so a 1400 px
# window shows 130 columns without scrolling (tests/test_browser.py checks it).
SITE_CSS = """\
.md-grid { max-width: 1800px; }
.jupyter-wrapper .jp-InputArea pre { font-size: 12.5px; }
"""


def executed_dir(root: Path) -> Path:
    """Where executed copies of the notebooks live: ``$TDN_EXECUTED_DIR`` or ``<root>/build/executed``
    (the test run writes them there, :func:`build_site` reads them)."""
    return Path(os.environ.get("TDN_EXECUTED_DIR", Path(root) / "build" / "executed"))


def notebook_paths(notebooks_dir: Path) -> list[Path]:
    """The course notebooks (``NN_name.ipynb``) in order."""
    paths = sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))
    if not paths:
        raise ValueError(f"notebooks_dir={str(notebooks_dir)!r} holds no NN_name.ipynb notebooks")
    return paths


def execute_notebook(source: Path, target: Path, timeout: int = 600) -> None:
    """Run ``source`` top to bottom in a fresh kernel (cwd: its folder) and write the result to ``target``.

    Cells tagged ``# NBVAL_SKIP`` (the Colab install cell) are not run, as under nbval.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(source), as_version=4)
    skipped = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.lstrip().startswith("# NBVAL_SKIP"):
            skipped[index] = cell
    runnable = copy.deepcopy(nb)
    runnable.cells = [c for i, c in enumerate(nb.cells) if i not in skipped]
    client = NotebookClient(runnable, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(source.parent)}})
    client.execute()
    executed = iter(runnable.cells)
    nb.cells = [skipped[i] if i in skipped else next(executed) for i in range(len(nb.cells))]
    nb.metadata = runnable.metadata
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(target))


def executed_copy(source: Path, folder: Path, execute_missing: bool = True) -> Path:
    """The executed copy of ``source``: the test run's if it is newer than the notebook, else a new one."""
    target = Path(folder) / source.name
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    if not execute_missing:
        raise FileNotFoundError(f"no executed copy of {source.name} in {folder} newer than the notebook")
    print(f"executing {source.name} ...", file=sys.stderr)
    execute_notebook(source, target)
    return target


def plotly_outputs_to_html(nb: Any, script_src: str) -> int:
    """Give every plotly output a ``text/html`` rendering (the first one per page loads plotly.js from
    ``script_src``); the JSON stays for JupyterLab. Returns the number of figures converted."""
    import plotly.io as pio

    count = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME not in data or "text/html" in data:
                continue
            figure = pio.from_json(json.dumps(data[PLOTLY_MIME]), skip_invalid=True)
            data["text/html"] = pio.to_html(figure, full_html=False,
                                            include_plotlyjs=script_src if count == 0 else False)
            count += 1
    return count


def _referenced_models(state: dict[str, Any], model_id: str) -> list[str]:
    """``model_id`` and every model its state names (``"IPY_MODEL_<id>"``), depth first, each once."""
    seen, todo = [], [model_id]
    while todo:
        current = todo.pop()
        if current in seen or current not in state:
            continue
        seen.append(current)
        todo += reversed(re.findall(r"IPY_MODEL_(\w+)", json.dumps(state[current].get("state", {}))))
    return seen


def widget_panels_for_site(nb: Any) -> int:
    """Lay out each widget panel of an executed notebook as JupyterLab shows it after Run All, for a page
    without a kernel: the controls (greyed out, at their default values), then what the panel drew for them.

    What a panel's output area drew for its default values is kept in one of two places. Usually (nbval, and
    nbclient as installed here) it is among the cell's outputs, before the panel: the kernel's messages are
    recorded in order and the output area is a front-end object. The panel moves before them (and before
    anything the cell printed ahead of it). nbclient can also keep it in the output widget's state; then it
    moves out, to plain outputs right after the panel. Either way the page draws it like any other output
    (the widget manager has no plotly renderer). A panel whose widget state was not saved shows its text
    form. Returns the number of panels laid out.
    """
    import nbformat

    widgets = nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {})
    state = widgets.get("state", {})
    panels = 0
    for cell in nb.cells:
        outputs = cell.get("outputs", [])
        views = [o for o in outputs if WIDGET_VIEW_MIME in o.get("data", {})]
        for view in views:
            model_id = view["data"][WIDGET_VIEW_MIME].get("model_id")
            if model_id not in state:
                print(f"warning: no saved state for widget {model_id}: the page shows its text form",
                      file=sys.stderr)
                del view["data"][WIDGET_VIEW_MIME]
                continue
            areas = [m for m in _referenced_models(state, model_id) if state[m]["model_name"] == "OutputModel"]
            if not areas:
                continue
            drawn = [out for m in areas for out in state[m]["state"].get("outputs", [])]
            for m in areas:
                state[m]["state"]["outputs"] = []
            if drawn:                                                    # kept in the output widget
                at = outputs.index(view) + 1
                outputs[at:at] = [nbformat.from_dict(out) for out in drawn]
            elif len(views) == 1 and outputs[-1] is view:                 # among the cell's outputs
                outputs.insert(0, outputs.pop())
            panels += 1
    for model in state.values():
        if model.get("model_module") == "@jupyter-widgets/controls" and CONTROL_MODELS.match(model["model_name"]):
            model["state"].update(disabled=True, tooltip=NO_KERNEL_TOOLTIP)
    return panels


def fetch_widget_manager(cache: Path) -> Path:
    """The folder of the site's widget manager files (``embed.js`` and what it loads), from the cache.

    The first call runs ``npm pack @jupyter-widgets/html-manager@<HTML_MANAGER_VERSION>`` (the npm registry must
    be reachable) and unpacks the files the site serves into ``cache/html-manager-<version>/``; later calls
    reuse them. RuntimeError with what to do when npm is missing or fails: without the manager every widget
    panel of the site would be empty.
    """
    folder = Path(cache) / f"html-manager-{HTML_MANAGER_VERSION}"
    if (folder / "embed.js").is_file():
        return folder
    spec = f"{HTML_MANAGER}@{HTML_MANAGER_VERSION}"
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm not found: the site serves the widget manager ({spec}) itself and fetches it once "
                           f"with npm into {folder}. Install Node.js and npm (Debian/Ubuntu: apt-get install -y npm) "
                           f"and build again.")
    Path(cache).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        command = [npm, "pack", spec, "--pack-destination", tmp, "--silent", "--cache", str(Path(cache) / "npm")]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"`npm pack {spec}` did not finish in 10 minutes: is the npm registry reachable?") \
                from None
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise RuntimeError(f"`npm pack {spec}` failed (exit {result.returncode}); the site build needs the npm "
                               f"registry once, then reuses {folder}:\n{result.stderr.strip()}")
        staging = Path(tmp) / "files"
        staging.mkdir()
        with tarfile.open(tarballs[0]) as tar:
            for member in tar.getmembers():
                if member.isfile() and WIDGET_FILES.match(member.name):
                    (staging / Path(member.name).name).write_bytes(tar.extractfile(member).read())
        if not (staging / "embed.js").is_file():
            raise RuntimeError(f"{tarballs[0].name} holds no dist/embed.js: {spec} is not the widget manager "
                               f"this site expects")
        try:
            staging.rename(folder)
        except OSError:              # another build unpacked it at the same moment
            if not (folder / "embed.js").is_file():
                raise
    return folder


def notebook_title(nb: Any, fallback: str) -> str:
    """The first level-1 Markdown heading of a notebook, or ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def _landing_page(titles: dict[str, str], glossary: str | None) -> str:
    lines = ["# tdnotebooks: token dropping for BERT-style models, by running it", "",
             "The executed notebooks of the course, as a learner sees them after *Run All* with the default "
             "(small, CPU) settings. The plotly figures are interactive (hover, zoom, legend). The widget panels "
             "are a snapshot: their controls show the default values, greyed out, above the figures and numbers "
             "computed for those values. Moving a slider re-runs Python code, which needs a running kernel: open "
             "the notebook in JupyterLab, Binder or Colab for that.", "", "## Notebooks", ""]
    lines += [f"1. [{title}]({page})" for page, title in titles.items()]
    if glossary:
        lines += ["", glossary]
    return "\n".join(lines) + "\n"


def mkdocs_config(pages: dict[str, str], site_dir: Path) -> dict[str, Any]:
    """The mkdocs configuration (material theme without web fonts, mkdocs-jupyter for the notebooks)."""
    return {
        "site_name": "tdnotebooks", "docs_dir": "docs", "site_dir": str(site_dir), "use_directory_urls": False,
        "theme": {"name": "material", "font": False, "features": ["toc.integrate"]}, "strict": True,
        "extra_css": [SITE_CSS_FILE],
        "nav": [{"Start": "index.md"}, *({title: page} for page, title in pages.items())],
        "plugins": [{"mkdocs-jupyter": {"execute": False, "include_source": True, "ignore_h1_titles": True}}],
    }


def build_site(root: Path = Path("."), out: Path | None = None, executed: Path | None = None,
               execute_missing: bool = True, glossary: str | None = None) -> Path:
    """Build the site of ``root/notebooks`` into ``out`` (default ``root/build/site``); returns ``out``.

    executed: where executed copies are looked for / written (default :func:`executed_dir`).
    execute_missing=False raises FileNotFoundError instead of executing a notebook without a fresh copy.
    glossary: Markdown appended to the landing page (default: the README's glossary section, if any).
    The widget manager comes from ``root/build/cache`` (:func:`fetch_widget_manager`; npm the first time).
    """
    import nbformat
    import plotly
    import yaml

    root = Path(root).resolve()
    out = Path(out).resolve() if out else root / "build" / "site"
    executed = Path(executed) if executed else executed_dir(root)
    work = root / "build" / "site-src"
    widget_files = fetch_widget_manager(root / "build" / "cache")        # first, so a missing npm fails fast
    shutil.rmtree(work, ignore_errors=True)
    (work / "docs" / "assets").mkdir(parents=True)
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", work / "docs" / PLOTLY_JS)
    shutil.copytree(widget_files, work / "docs" / WIDGETS_DIR)
    (work / "docs" / SITE_CSS_FILE).write_text(SITE_CSS)

    titles, with_widgets = {}, []
    for source in notebook_paths(root / "notebooks"):
        nb = nbformat.read(str(executed_copy(source, executed, execute_missing)), as_version=4)
        widget_panels_for_site(nb)
        plotly_outputs_to_html(nb, PLOTLY_JS)
        nbformat.write(nb, str(work / "docs" / source.name))
        titles[source.name] = notebook_title(nb, source.stem)
        if any(WIDGET_VIEW_MIME in o.get("data", {}) for cell in nb.cells for o in cell.get("outputs", [])):
            with_widgets.append(source.with_suffix(".html").name)
    if glossary is None:
        glossary = readme_section(root / "README.md", "Glossary")
    (work / "docs" / "index.md").write_text(_landing_page(titles, glossary))
    (work / "mkdocs.yml").write_text(yaml.safe_dump(mkdocs_config(titles, out), sort_keys=False))
    # nbconvert (inside mkdocs-jupyter) names the widget renderer a page loads: the site's copy, not unpkg's
    # (a config folder of the build's own: the user's nbconvert settings do not change the site).
    config_dir = work / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_nbconvert_config.json").write_text(json.dumps(
        {"HTMLExporter": {"widget_renderer_url": WIDGETS_JS}}))
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f",
                             str(work / "mkdocs.yml")], capture_output=True, text=True, cwd=work,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1",      # its cache stays in build/
                                 "JUPYTER_CONFIG_DIR": str(config_dir)})
    if result.returncode != 0:
        raise RuntimeError(f"mkdocs build failed:\n{result.stdout}\n{result.stderr}")
    for page in with_widgets:
        html = (out / page).read_text()
        if WIDGETS_JS not in html or re.search(r"unpkg\.com|cdn\.jsdelivr\.net", html):
            raise RuntimeError(f"{page} does not load the widget manager from the site ({WIDGETS_JS}): "
                               f"mkdocs-jupyter's template may have changed; its widgets would be empty offline")
    return out


def readme_section(readme: Path, heading: str) -> str | None:
    """The ``## heading`` section of a Markdown file (heading included), or None if absent."""
    if not Path(readme).exists():
        return None
    match = re.search(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", Path(readme).read_text(), re.M | re.S)
    return match.group(0).strip() if match else None


def main(argv: list[str] | None = None) -> int:
    from tdnotebooks.validation import arg_type, check_folder

    parser = argparse.ArgumentParser(prog="python -m tdnotebooks.site", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=arg_type(check_folder, must_exist=True), default=".",
                        help="the repository root (holds notebooks/ and README.md)")
    parser.add_argument("--out", type=arg_type(check_folder), help="site folder (default ROOT/build/site)")
    parser.add_argument("--no-execute", action="store_true",
                        help="use only the executed copies of the last test run; fail if one is missing")
    args = parser.parse_args(argv)
    if not (Path(args.root) / "notebooks").is_dir():
        parser.error(f"--root {args.root!r} has no notebooks/ folder (run from the repository root)")
    try:
        out = build_site(Path(args.root), Path(args.out) if args.out else None, execute_missing=not args.no_execute)
    except (FileNotFoundError, RuntimeError) as exc:
        parser.exit(1, f"error: {exc}\n")
    print(f"site written to {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
