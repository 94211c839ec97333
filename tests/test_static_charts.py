"""Pictures survive: every chart leaves an output that JupyterLab (trusted or not) and nbconvert's HTML
export both draw, offline, with plotly.js embedded once per notebook."""

import json
import re

import nbformat
import numpy as np
import plotly.graph_objects as go
import pytest
from run_helpers import execute_notebook

from rlhf_lab.monitor import static
from rlhf_lab.monitor.live import LiveMonitor
from rlhf_lab.monitor.plots import plot_runs
from rlhf_lab.monitor.static import PLOTLY_MIME, LabFigure, figure_bundle

PLOTLYJS = re.compile(r"plotly\.js v\d+\.\d+")


def test_a_bundle_carries_plotly_json_and_offline_html():
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[0.5, 0.25, 0.125]), layout={"title": "loss"})
    with_js, without = figure_bundle(fig, plotlyjs=True), figure_bundle(fig, plotlyjs=False)
    assert set(with_js) == {PLOTLY_MIME, "text/html", "text/plain"}
    assert with_js[PLOTLY_MIME]["data"][0]["y"] == [0.5, 0.25, 0.125]
    assert len(PLOTLYJS.findall(with_js["text/html"])) == 1 and len(with_js["text/html"]) > 1_000_000
    assert not PLOTLYJS.search(without["text/html"]) and len(without["text/html"]) < 50_000
    for html in (with_js["text/html"], without["text/html"]):
        assert "Plotly.newPlot" in html
        assert not re.search(r"<script[^>]+src=", html), "nothing may be fetched: no CDN, no MathJax"
    assert with_js["text/plain"] == "<loss: 1 traces>"


def test_plotlyjs_goes_into_the_first_chart_of_a_kernel_only(monkeypatch):
    monkeypatch.setattr(static, "_holder", {"shown": False, "cell": None, "request": None})
    monkeypatch.setattr(static, "_current_cell", lambda: ("cell-a", "run-1"))
    fig = go.Figure(go.Bar(y=[1, 2]))
    first, second = figure_bundle(fig)["text/html"], figure_bundle(fig)["text/html"]
    assert PLOTLYJS.search(first) and not PLOTLYJS.search(second)
    monkeypatch.setattr(static, "_current_cell", lambda: ("cell-b", "run-2"))
    assert not PLOTLYJS.search(figure_bundle(fig)["text/html"])
    # re-running the cell that holds plotly.js replaces its output, so it embeds plotly.js again
    monkeypatch.setattr(static, "_current_cell", lambda: ("cell-a", "run-3"))
    assert PLOTLYJS.search(figure_bundle(fig)["text/html"])
    assert not PLOTLYJS.search(figure_bundle(fig)["text/html"])


def test_plot_runs_returns_a_figure_that_shows_itself_as_a_bundle(tmp_path):
    run = tmp_path / "dpo-a"
    run.mkdir()
    rows = [{"step": s, "loss": 0.69 - 0.01 * s, "rewards/margins": 0.1 * s} for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = plot_runs([run], metrics=["loss", "rewards/margins"])
    assert isinstance(fig, LabFigure) and isinstance(fig, go.Figure)
    bundle = fig._repr_mimebundle_()
    assert {PLOTLY_MIME, "text/html"} <= set(bundle)
    assert [t["name"] for t in bundle[PLOTLY_MIME]["data"]] == ["dpo-a", "dpo-a"]
    assert isinstance(fig.update_layout(height=300), LabFigure), "plotly's fluent methods keep the type"


def test_panels_say_which_line_is_raw_and_format_numbers_briefly():
    mon = LiveMonitor(stage="ppo", live=False, smoothing=0.9)
    for step in range(1, 4):
        mon.log(step, {"objective/kl": 0.1 * step, "objective/kl_coef": float(np.float32(0.05))})
    fig = mon.page_figure()
    titles = [a.text for a in fig.layout.annotations]
    assert any("faint: raw, solid: smoothed" in t for t in titles), titles
    # d3's "~g": a float32 0.05 (0.0500000000745...) ticks as "0.05"; the browser test reads the ticks
    assert all(ax.tickformat == "~g" and ax.hoverformat == ".4~g" for ax in fig.select_yaxes())
    assert all(ax.tickformat == "~g" for ax in plot_runs_figure().select_yaxes())


def plot_runs_figure():
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp()) / "r"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
    return plot_runs([folder], metrics=["loss"])


def test_a_left_panel_with_a_right_axis_gets_room_before_the_next_panel():
    mon = LiveMonitor(stage="ppo", live=False)
    mon.log(1, {"objective/kl": 0.1, "objective/kl_coef": 0.05, "objective/scores": 0.3})
    # panels with data: reward (left column), KL with its coefficient on a right axis (right column)
    fig = mon.page_figure()
    gap = fig.layout.xaxis2.domain[0] - fig.layout.xaxis.domain[1]
    assert gap < 0.1  # the left panel (reward) has no right axis: the usual gap
    mon.log(2, {"objective/entropy": 1.0, "policy/entropy_avg": 0.5, "loss/policy_avg": 0.1})
    fig = mon.page_figure()
    left_with_right_axis = any(p.secondary for p in mon._page_panels()[::2])
    gap = fig.layout.xaxis2.domain[0] - fig.layout.xaxis.domain[1]
    assert left_with_right_axis and gap > 0.12


NOTEBOOK = [
    "import json, pathlib\nimport rlhf_lab as lab",
    # a monitor that a stage would drive: the static copy is left when it finishes
    "mon = lab.LiveMonitor(stage='dpo', output_dir='run-a')\n"
    "for step in range(1, 6):\n"
    "    mon.log(step, {'loss': 0.69 - 0.01 * step, 'rewards/margins': 0.1 * step})\n"
    "mon.finish()\nmon.finish()  # a second finish replaces the copy, it does not add one",
    "pathlib.Path('run-a/metrics.jsonl').write_text(''.join(json.dumps({'step': s, 'loss': 1 / s}) + '\\n' "
    "for s in range(1, 4)))\nlab.plot_runs(['run-a'], metrics=['loss'])",
]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """A notebook with one monitor and one plot_runs call, executed headless as papermill would."""
    return execute_notebook(NOTEBOOK, tmp_path_factory.mktemp("static-nb"), timeout=120)


def chart_outputs(nb):
    return [o for c in nb.cells for o in c.get("outputs", []) if PLOTLY_MIME in o.get("data", {})]


def test_an_executed_notebook_keeps_one_chart_per_monitor_and_per_plot_runs(executed):
    nb = nbformat.read(executed, as_version=4)
    charts = chart_outputs(nb)
    assert len(charts) == 2, [list(o.get("data", {})) for c in nb.cells for o in c.get("outputs", [])]
    monitor, runs = charts
    assert "text/html" in monitor["data"] and "text/html" in runs["data"]
    assert [len(PLOTLYJS.findall(o["data"]["text/html"])) for o in charts] == [1, 0], "plotly.js once per notebook"
    names = {t["name"] for t in monitor["data"][PLOTLY_MIME]["data"]}
    assert {"loss", "rewards/margins"} <= names


def test_the_html_export_of_an_executed_notebook_draws_every_chart_offline(executed):
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    assert body.count('class="plotly-graph-div"') == 2
    assert len(PLOTLYJS.findall(body)) == 1
    assert executed.stat().st_size < 10_000_000


def test_the_samples_table_keeps_every_step_and_shows_the_chosen_one(tmp_path):
    mon = LiveMonitor(live=True, output_dir=tmp_path, clock=lambda: 0.0)
    for update in (1, 2, 3):
        rows = [{"update": update, "prompt": f"p{update}", "completion": "<b>x</b>" * update, "score": update / 10}]
        mon.log(update, {"objective/kl": 0.1, "samples": rows})
    mon.finish([{"update": u, "prompt": f"p{u}", "completion": "<b>x</b>" * u, "score": u / 10} for u in (1, 2, 3)])
    history = mon.sample_history
    assert history.steps == [1, 2, 3] and all(len(history.by_step[s]) == 1 for s in (1, 2, 3)), "no duplicates"
    assert history.rows(2) == [{"prompt": "p2", "completion": "<b>x</b><b>x</b>", "reward": 0.2, "length": 16}]
    picker, table = mon.widget.children[4].children
    assert [label for label, _ in picker.options] == ["update 1", "update 2", "update 3"]
    assert picker.value == 3 and "p3" in table.value  # it follows the latest step
    picker.value = 1
    assert "p1" in table.value and "p3" not in table.value and "&lt;b&gt;x&lt;/b&gt;" in table.value
    mon.add_samples([{"update": 4, "prompt": "p4", "completion": "y", "score": 0.0}])
    assert picker.value == 1, "a person's choice of an earlier step stays"
    page = (tmp_path / "monitor.html").read_text()
    assert page.count("<div data-step=") == 3 and "<option value='3' selected>update 3</option>" in page
    assert "<b>x</b>" not in page.split("<h3>Samples</h3>")[1], "text, never markup"
