"""The course site (python -m tdnotebooks.site): plotly outputs made self-contained, widget panels laid out
for a page without a kernel, the widget manager fetched once with npm and served by the site, the landing
page and navigation, and a real mkdocs build of every notebook (the built site is checked in a browser in
tests/test_browser.py)."""

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import pytest

from tdnotebooks.site import (
    HTML_MANAGER_VERSION,
    NO_KERNEL_TOOLTIP,
    PLOTLY_JS,
    PLOTLY_MIME,
    SITE_CSS_FILE,
    WIDGET_STATE_MIME,
    WIDGET_VIEW_MIME,
    WIDGETS_JS,
    fetch_widget_manager,
    main,
    mkdocs_config,
    notebook_paths,
    plotly_outputs_to_html,
    readme_section,
    widget_panels_for_site,
)

ROOT = Path(__file__).resolve().parents[1]


def _figure_output(fig):
    return nbformat.v4.new_output("display_data", data={PLOTLY_MIME: json.loads(fig.to_json())})


def test_plotly_outputs_get_html_and_only_the_first_loads_plotly_js():
    nb = nbformat.v4.new_notebook()
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    nb.cells = [nbformat.v4.new_code_cell("1", outputs=[_figure_output(fig)]),
                nbformat.v4.new_code_cell("2", outputs=[_figure_output(fig), nbformat.v4.new_output(
                    "stream", name="stdout", text="summary\n")])]
    assert plotly_outputs_to_html(nb, PLOTLY_JS) == 2
    first, second = (c.outputs[0]["data"]["text/html"] for c in nb.cells)
    assert f'src="{PLOTLY_JS}"' in first and PLOTLY_JS not in second
    assert "Plotly.newPlot" in first and "Plotly.newPlot" in second
    assert PLOTLY_MIME in nb.cells[0].outputs[0]["data"]          # JupyterLab keeps its renderer
    assert plotly_outputs_to_html(nb, PLOTLY_JS) == 0                  # idempotent


def test_readme_section_and_notebook_list(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n## Glossary\n\n**HWCap**: the largest batch.\n\n## Next\n\nx\n")
    assert readme_section(readme, "Glossary") == "## Glossary\n\n**HWCap**: the largest batch."
    assert readme_section(readme, "Missing") is None
    names = [p.name for p in notebook_paths(ROOT / "notebooks")]
    assert names == sorted(names) and names[0] == "00_start_here.ipynb"
    with pytest.raises(ValueError, match="notebooks_dir="):
        notebook_paths(tmp_path)


def test_mkdocs_config_lists_every_page_in_order():
    config = mkdocs_config({"00_a.ipynb": "A", "01_b.ipynb": "B"}, Path("/tmp/site"))
    assert config["nav"] == [{"Start": "index.md"}, {"A": "00_a.ipynb"}, {"B": "01_b.ipynb"}]
    assert config["strict"] is True and config["theme"]["name"] == "material" and config["theme"]["font"] is False
    assert "toc.integrate" in config["theme"]["features"] and config["extra_css"] == [SITE_CSS_FILE]


def _model(name, state, module="@jupyter-widgets/controls"):
    return {"model_module": module, "model_module_version": "2.0.0", "model_name": name, "state": state}


def _panel_notebook(drawn_in_widget_state: bool):
    """A notebook holding one ``panel`` (VBox[HBox[IntSlider], Output]) executed by nbclient (what the output
    area drew is in its widget state) or by nbval (it is among the cell's outputs, before the panel)."""
    fig = nbformat.v4.new_output("display_data", data={"text/plain": "figure"})
    text = nbformat.v4.new_output("stream", name="stdout", text="summary\n")
    view = nbformat.v4.new_output("execute_result", execution_count=1, data={
        WIDGET_VIEW_MIME: {"version_major": 2, "version_minor": 0, "model_id": "vbox"}, "text/plain": "VBox()"})
    state = {
        "vbox": _model("VBoxModel", {"children": ["IPY_MODEL_hbox", "IPY_MODEL_out"]}),
        "hbox": _model("HBoxModel", {"children": ["IPY_MODEL_slider"]}),
        "slider": _model("IntSliderModel", {"value": 5, "description": "bucket width", "style": "IPY_MODEL_st"}),
        "st": _model("SliderStyleModel", {}),
        "out": _model("OutputModel", {"outputs": [dict(fig), dict(text)] if drawn_in_widget_state else []},
                      module="@jupyter-widgets/output"),
    }
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {WIDGET_STATE_MIME: {"version_major": 2, "version_minor": 0, "state": state}}
    outputs = [view] if drawn_in_widget_state else [fig, text, view]
    nb.cells = [nbformat.v4.new_code_cell("panel(explore, ...)", outputs=outputs)]
    return nb


@pytest.mark.parametrize("drawn_in_widget_state", [True, False], ids=["nbclient", "nbval"])
def test_a_panel_shows_its_controls_then_what_they_drew_and_greys_them_out(drawn_in_widget_state):
    nb = _panel_notebook(drawn_in_widget_state)
    assert widget_panels_for_site(nb) == 1
    outputs = nb.cells[0].outputs
    assert [o.get("output_type") for o in outputs] == ["execute_result", "display_data", "stream"]
    assert outputs[1]["data"] == {"text/plain": "figure"} and outputs[2]["text"] == "summary\n"
    state = nb.metadata["widgets"][WIDGET_STATE_MIME]["state"]
    assert state["out"]["state"]["outputs"] == []                          # drawn once, by the page
    assert state["slider"]["state"]["disabled"] is True and state["slider"]["state"]["tooltip"] == NO_KERNEL_TOOLTIP
    assert "disabled" not in state["st"]["state"] and "disabled" not in state["vbox"]["state"]
    nbformat.validate(nb)


def test_a_widget_without_saved_state_shows_its_text_form(capsys):
    nb = _panel_notebook(False)
    del nb.metadata["widgets"]
    assert widget_panels_for_site(nb) == 0
    assert WIDGET_VIEW_MIME not in nb.cells[0].outputs[-1]["data"] and "no saved state" in capsys.readouterr().err


def _fake_npm(folder: Path, tarball_files: dict[str, bytes], exit_code: int = 0) -> Path:
    """An ``npm`` on PATH whose ``pack SPEC --pack-destination DIR`` writes a tarball of tarball_files into DIR
    and appends its arguments to ``calls``."""
    tarball = folder / "package.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in tarball_files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    npm = folder / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text(f"#!/bin/sh\necho \"$@\" >> {folder / 'calls'}\n"
                   f"[ {exit_code} = 0 ] || {{ echo 'npm ERR! network' >&2; exit {exit_code}; }}\n"
                   f"cp {tarball} \"$4/jupyter-widgets-html-manager.tgz\"\n")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    return npm.parent


def test_the_widget_manager_is_fetched_once_with_npm_then_cached(tmp_path, monkeypatch):
    files = {"package/dist/embed.js": b"// embed", "package/dist/embed.js.LICENSE.txt": b"BSD",
             "package/dist/1551f4f60c37af51121f.woff2": b"font", "package/dist/embed.js.map": b"map",
             "package/dist/embed-amd.js": b"amd", "package/src/embed.ts": b"ts"}
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path, files)}{os.pathsep}{os.environ['PATH']}")
    folder = fetch_widget_manager(tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == ["1551f4f60c37af51121f.woff2", "embed.js",
                                                        "embed.js.LICENSE.txt"]
    assert (folder / "embed.js").read_bytes() == b"// embed"
    assert fetch_widget_manager(tmp_path / "cache") == folder                # cached: npm ran once
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith(f"pack @jupyter-widgets/html-manager@{HTML_MANAGER_VERSION} ")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # no temporary folder left


def test_without_npm_the_site_build_fails_and_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"npm not found.*apt-get install -y npm"):
        fetch_widget_manager(tmp_path / "cache")


def test_a_failing_npm_fails_the_build_with_its_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path, {}, exit_code=1)}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match=r"(?s)npm pack @jupyter-widgets/html-manager.*failed.*npm ERR! network"):
        fetch_widget_manager(tmp_path / "cache")
    assert not (tmp_path / "cache" / f"html-manager-{HTML_MANAGER_VERSION}").exists()


def test_cli_needs_a_notebooks_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--root", str(tmp_path)])
    assert exc.value.code == 2 and "has no notebooks/ folder" in capsys.readouterr().err


def test_site_builds_a_page_per_notebook(built_site):
    index = (built_site / "index.html").read_text()
    assert (built_site / PLOTLY_JS).stat().st_size > 1_000_000                  # plotly.js served locally
    assert (built_site / WIDGETS_JS).stat().st_size > 1_000_000                 # so is the widget manager
    assert "snapshot" in index and "needs a running kernel" in index            # and the index says what works
    for source in notebook_paths(ROOT / "notebooks"):
        page = built_site / source.with_suffix(".html").name
        assert page.exists(), f"no page for {source.name}"
        nb = nbformat.read(str(source), as_version=4)
        title = next(line[2:] for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                     if line.startswith("# "))
        assert title.split(":")[0] in index                                        # listed on the landing page
        html = page.read_text()
        assert "Traceback (most recent call last)" not in html                     # no error output rendered
        if WIDGET_VIEW_MIME in html:                                                # widgets: from the site, no CDN
            assert f"'{WIDGETS_JS}'" in html and "unpkg.com" not in html and "cdn.jsdelivr.net" not in html


CARTESIAN = {"bar", "scatter", "scattergl", "histogram", "box", "violin", "heatmap"}


def _untitled_axes(figure: dict) -> list[str]:
    """Axes of cartesian traces that lack a title (every figure needs axis titles with units)."""
    layout, missing = figure.get("layout", {}), []
    for trace in figure.get("data", []):
        if trace.get("type", "scatter") not in CARTESIAN:
            continue
        for letter in ("x", "y"):
            ref = trace.get(f"{letter}axis", letter)
            axis = layout.get(f"{letter}axis{ref[1:]}", {})
            title = axis.get("title", {})
            text = title.get("text") if isinstance(title, dict) else title
            if not text and axis.get("showticklabels") is not False and f"{letter}axis{ref[1:]}" not in missing:
                missing.append(f"{letter}axis{ref[1:]}")
    return missing


def test_every_figure_of_the_executed_notebooks_has_axis_titles(built_site):
    problems = []
    for page in sorted(built_site.glob("*.ipynb")):
        nb = nbformat.read(str(page), as_version=4)
        for index, cell in enumerate(nb.cells):
            for output in cell.get("outputs", []):
                figure = output.get("data", {}).get(PLOTLY_MIME)
                if figure and _untitled_axes(figure):
                    problems.append(f"{page.name} cell {index}: {', '.join(_untitled_axes(figure))} without title")
    assert not problems, "\n".join(problems)
