"""A person as PPO's reward in a real JupyterLab: a cell rolls out a batch and shows its pairs in the labelling
panel, the test rates every pair with the keys (pairwise: 1 or 2 per pair; rating: a score 1-5 per answer),
and the next cell's `session.step(human.score(batch))` prints the update's metrics, computed from exactly
those ratings."""

from __future__ import annotations

import json
import re
import sqlite3

import nbformat
import pytest
from waiting import wait

pytestmark = pytest.mark.browser

STATUSBAR = "#jp-main-statusbar"
ANNOTATOR = "browser-person"
PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "Pick a fruit."]


# Per item, the keys pressed and the rewards they give its two answers.
KEYS = {
    "pairwise": [(["1"], [0.5, -0.5]), (["2"], [-0.5, 0.5]), (["1"], [0.5, -0.5]), (["2"], [-0.5, 0.5])],
    "rating": [
        (["5", "1"], [0.5, -0.5]),
        (["2", "4"], [-0.25, 0.25]),
        (["3", "3"], [0.0, 0.0]),
        (["4", "1"], [0.25, -0.5]),
    ],
}


def cells(store: str, out: str, mode: str) -> list[str]:
    first = "\n".join(
        [
            "import rlhf_lab as lab",
            f"config = lab.PPOConfig(output_dir={out!r}, total_updates=3, batch_size=8, mini_batch_size=4,",
            "                       max_new_tokens=6, learning_rate=1e-3, seed=0, monitor=False)",
            f"session = lab.PPOSession(lab.tiny_model('causal', seed=0), None, {PROMPTS!r}, config)",
            f"human = lab.HumanReward({store!r}, annotator={ANNOTATOR!r}, mode={mode!r})",
            "batch = human.rollout(session)",
            "human.panel(batch)",
        ]
    )
    second = "\n".join(
        [
            "metrics = session.step(human.score(batch))",
            "print('STEP', session.updates, 'rewards', batch.rewards, 'kl', round(metrics['objective/kl'], 6))",
        ]
    )
    return [first, second]


def labels(store) -> list[str]:
    if not store.exists():
        return []
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        return [
            row[0] for row in conn.execute("SELECT decision FROM events WHERE annotator = ? ORDER BY id", (ANNOTATOR,))
        ]
    except sqlite3.OperationalError:  # no schema yet
        return []
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["pairwise", "rating"])
def test_rate_a_batch_with_the_keys_and_the_step_uses_those_ratings(lab_server, page, browser_artifacts, mode):
    store = lab_server.notebook_dir / f"labels-{mode}.sqlite"
    code = cells(str(store), f"runs/by-hand-{mode}", mode)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in code])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = lab_server.notebook_dir / f"be_the_reward_{mode}.ipynb"
    nbformat.write(nb, path)

    def output(n: int) -> str:
        area = page.locator(f".jp-Notebook .jp-CodeCell >> nth={n} >> .jp-OutputArea")
        return area.inner_text(timeout=2_000) if area.count() else ""

    def details() -> str:
        return f"outputs: {output(0)[-1500:]!r} / {output(1)[-1500:]!r}\n" + "\n".join(page.rlhf_console[-20:])

    page.goto(lab_server.lab_url(path), wait_until="domcontentloaded", timeout=60_000)
    status = page.locator(STATUSBAR)
    wait(lambda: status.count() and "| Idle" in status.inner_text(), 90, "the kernel to be idle", details)
    page.locator(".jp-Notebook .jp-CodeCell >> nth=0 >> .jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")

    panel = page.locator("[data-testid=panel]")
    panel.wait_for(state="visible", timeout=120_000)
    progress = panel.locator("[data-testid=progress]")
    wait(lambda: re.search(r"labeled 0 / queued \d+", progress.inner_text()), 30, "the first pair", details)
    pairs = int(re.search(r"queued (\d+)", progress.inner_text()).group(1))
    assert 1 <= pairs <= 4

    panel.locator("[data-testid=prompt]").click()
    plan = KEYS[mode][:pairs]
    for done, (keys, _) in enumerate(plan, start=1):
        for j, key in enumerate(keys):
            page.keyboard.press(key)
            if j < len(keys) - 1:  # the first score shows; the second submits
                wait(lambda k=key: f"score {k}" in panel.locator("[data-testid=rank-0]").inner_text(), 15,
                     "the first score to show", details)  # fmt: skip
                page.screenshot(path=str(browser_artifacts / "be_the_reward-rating.png"))
        wait(lambda n=done: len(labels(store)) >= n, 15, f"rating {done} on disk", details)
        wait(lambda n=done: f"labeled {n} /" in progress.inner_text(), 15, f"the panel to count {done}", details)
    want = [{"1": "A", "2": "B"}[k[0]] if mode == "pairwise" else json.dumps({"scores": [int(x) for x in k]})
            for k, _ in plan]  # fmt: skip
    assert labels(store) == want
    page.screenshot(path=str(browser_artifacts / f"be_the_reward-{mode}-rated.png"))

    wait(lambda: "| Idle" in status.inner_text(), 30, "the kernel to be idle again", details)
    page.locator(".jp-Notebook .jp-CodeCell >> nth=1 >> .jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    wait(lambda: "STEP 1" in output(1), 120, "the step's metrics", details)
    printed = output(1)
    rewards = [float(x) for x in re.search(r"rewards \[([^\]]*)\]", printed).group(1).split(",")]
    assert len(rewards) == 8, printed
    # each rated item, in order, as its keys said; an identical pair, never asked, earns 0 each (so does a
    # rating of 3 and 3: both are left out before comparing)
    rated = [rewards[i : i + 2] for i in range(0, 8, 2) if rewards[i : i + 2] != [0.0, 0.0]]
    assert rated == [r for _, r in plan if r != [0.0, 0.0]], printed
    assert re.search(r"kl -?\d", printed), printed
    page.screenshot(path=str(browser_artifacts / f"be_the_reward-{mode}-step.png"))
