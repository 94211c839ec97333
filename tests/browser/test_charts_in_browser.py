"""Pictures survive, seen in a real browser: a notebook that trains a tiny DPO (its monitor), calls
`lab.plot_runs` and finishes a second monitor is executed headless as papermill does; then
- its nbconvert HTML export, opened from disk in Chromium with no network, draws all three charts, with
  short tick labels;
- the executed notebook reopened in JupyterLab (untrusted, never run there) draws all three too."""

from __future__ import annotations

import pytest
from run_helpers import execute_notebook
from waiting import wait

pytestmark = pytest.mark.browser

CELLS = [
    "import rlhf_lab as lab",
    "dpo = lab.dpo(lab.tiny_model('causal', seed=0), 'starter', lab.DPOConfig(output_dir='runs/dpo', max_steps=3, "
    "logging_steps=1, per_device_train_batch_size=2, max_length=64, report_to='none'))",
    "lab.plot_runs([dpo], metrics=['loss', 'rewards/margins'])",
    # a float32 coefficient logged as 0.0500000000745...: its ticks must read 0.05
    "import numpy as np\nmon = lab.LiveMonitor(stage='ppo', output_dir='runs/kl')\nfor s in range(1, 4):\n"
    "    mon.log(s, {'objective/kl': 0.1 * s, 'objective/kl_coef': float(np.float32(0.05))})\nmon.finish()",
]


def drawn_charts(page) -> int:
    """Chart containers whose SVG holds at least one drawn trace (plotly.js ran and plotted data)."""
    return page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')]"
        ".filter(d => d.querySelector('.main-svg .scatterlayer .trace')).length"
    )


def test_executed_notebook_charts_draw_in_the_html_export_and_in_jupyterlab(
    lab_server, page, browser_artifacts, monkeypatch
):
    from nbconvert import HTMLExporter

    monkeypatch.setenv("RLHF_LAB_MONITOR", "html")  # as papermill runs it: no widget, the static copy only
    executed = execute_notebook(CELLS, lab_server.notebook_dir)
    body, _ = HTMLExporter().from_filename(str(executed))
    export = executed.with_suffix(".html")
    export.write_text(body)

    page.route("http*://**", lambda route: route.abort())  # offline: a chart must not need a CDN
    page.goto(export.as_uri(), wait_until="load")
    wait(lambda: drawn_charts(page) == 3, 30, "3 charts drawn in the HTML export",
         lambda: f"{drawn_charts(page)} drawn\n" + "\n".join(page.rlhf_console[-20:]))  # fmt: skip
    page.screenshot(path=str(browser_artifacts / "static_charts-export.png"), full_page=True)
    ticks = page.evaluate("() => [...document.querySelectorAll('g[class$=tick] text')].map(t => t.textContent)")
    assert not [t for t in ticks if len(t) > 8], ticks
    assert any(t.startswith("0.05") for t in ticks), " ".join(sorted(set(ticks)))

    page.unroute("http*://**")
    page.goto(lab_server.lab_url(executed), wait_until="domcontentloaded", timeout=60_000)
    rendered = page.locator(".jp-RenderedPlotly")
    wait(lambda: rendered.count() == 3 and drawn_charts(page) == 3, 60, "JupyterLab to draw 3 charts",
         lambda: f"{drawn_charts(page)} drawn ({rendered.count()} plotly outputs)\n"
         + "\n".join(page.rlhf_console[-20:]) + lab_server.log_tail())  # fmt: skip
    page.screenshot(path=str(browser_artifacts / "static_charts-jupyterlab.png"))
