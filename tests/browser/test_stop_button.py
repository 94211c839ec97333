"""The live monitor's Stop button in a real JupyterLab: a tiny PPO runs in a cell, the test presses Stop
once update 2 has ended, and the run ends cleanly with a complete folder (summary "stopped_at", a
checkpoint); resumed, it matches an uninterrupted run to 1e-5."""

from __future__ import annotations

import json

import nbformat
import pytest
from run_helpers import assert_same_run
from waiting import wait

import rlhf_lab as lab

pytestmark = pytest.mark.browser

STATUSBAR = "#jp-main-statusbar"
PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "Pick a fruit."]
SETTINGS = dict(batch_size=8, mini_batch_size=4, ppo_epochs=2, max_new_tokens=48, learning_rate=1e-3, seed=0,
                lr_scheduler_type="constant")  # fmt: skip # constant: a 4-update run and a 200-update one agree


def length_reward(prompts, completions):
    return [len(c) / 50 for c in completions]


def notebook_source(out: str) -> str:
    return "\n".join(
        [
            "import rlhf_lab as lab",
            "def length_reward(prompts, completions):",
            "    return [len(c) / 50 for c in completions]",
            "monitor = lab.LiveMonitor(live=True)",
            f"run = lab.ppo(lab.tiny_model('causal', seed=0), length_reward, {PROMPTS!r},",
            f"              lab.PPOConfig(output_dir={out!r}, total_updates=200, **{SETTINGS!r}), callbacks=[monitor])",
            "print('stopped at', run.summary['stopped_at'])",
        ]
    )


def test_stop_button_ends_ppo_cleanly_and_the_run_resumes_exactly(lab_server, page, browser_artifacts, tmp_path):
    out = lab_server.notebook_dir / "runs" / "stopped"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(notebook_source(str(out)))])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = lab_server.notebook_dir / "stop_button.ipynb"
    nbformat.write(nb, path)

    def details() -> str:
        cell = page.locator(".jp-Notebook .jp-CodeCell >> nth=0 >> .jp-OutputArea")
        text = cell.inner_text(timeout=2_000) if cell.count() else ""
        return f"cell output: {text[-2000:]!r}\n" + "\n".join(page.rlhf_console[-20:]) + lab_server.log_tail()

    page.goto(lab_server.lab_url(path), wait_until="domcontentloaded", timeout=60_000)
    status = page.locator(STATUSBAR)
    wait(lambda: status.count() and "| Idle" in status.inner_text(), 90, "the kernel to be idle", details)
    page.locator(".jp-Notebook .jp-CodeCell >> nth=0 >> .jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")

    # The status line reads "stopped: ppo: update N/200 | ..." after each update.
    wait(lambda: page.get_by_text("update 2/200").count() > 0, 240, "update 2 to end", details)
    page.get_by_role("button", name="Stop").click()
    wait(lambda: (out / "run.json").exists(), 120, "the stopped run's folder to be complete", details)
    wait(lambda: "| Idle" in status.inner_text(), 60, "the cell to end", details)
    page.screenshot(path=str(browser_artifacts / "stop_button.png"))

    summary = json.loads((out / "summary.json").read_text())
    stopped = summary["stopped_at"]
    assert 2 <= stopped <= 3 and summary["interrupted"] is False, summary
    assert (out / "checkpoints" / f"update-{stopped:06d}" / "state.json").exists()
    assert page.get_by_text(f"stopped at {stopped}").count() == 1, details()

    policy = lab.tiny_model("causal", seed=0)
    total = stopped + 2
    whole = lab.ppo(policy, length_reward, PROMPTS,
                    lab.PPOConfig(output_dir=str(tmp_path / "whole"), total_updates=total, monitor=False, **SETTINGS))  # fmt: skip
    resumed = lab.ppo(policy, length_reward, PROMPTS,
                      lab.PPOConfig(output_dir=str(out), total_updates=total, monitor=False, **SETTINGS), resume_from=out)  # fmt: skip
    assert_same_run(whole, resumed, total)
