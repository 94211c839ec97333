"""The labelling panel in a real JupyterLab and headless Chromium: run the notebook, press
1, 2, 3, u, and check that the SQLite store holds exactly those decisions; markup in a candidate
shows as literal text; the screenshot is kept as a test artifact."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest
from panel_notebook import ANNOTATOR, ITEMS, XSS_IMG, XSS_SCRIPT, write_notebook
from waiting import wait

pytestmark = pytest.mark.browser

STATUSBAR = "#jp-main-statusbar"
FIRST_CELL = ".jp-Notebook .jp-CodeCell >> nth=0"


def _event_count(store_path: Path) -> int:
    if not store_path.exists():
        return 0
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT COUNT(*) FROM events WHERE annotator = ?", (ANNOTATOR,)).fetchone()[0]
    except sqlite3.OperationalError:  # the kernel has not created the schema yet
        return 0
    finally:
        conn.close()


def test_keys_label_into_the_store_and_markup_stays_text(lab_server, page, browser_artifacts, tmp_path):
    from rlhf_lab.labeling.store import PreferenceStore

    store_path = tmp_path / "labels.sqlite"
    notebook = write_notebook(lab_server.notebook_dir, store_path)

    def details() -> str:
        status = page.locator(STATUSBAR).inner_text(timeout=2_000) if page.locator(STATUSBAR).count() else ""
        panel_text = (
            page.locator("[data-testid=panel]").inner_text(timeout=2_000)
            if page.locator("[data-testid=panel]").count()
            else ""
        )
        console = "\n".join(page.rlhf_console[-30:])
        return f"status bar: {status!r}\npanel: {panel_text!r}\nbrowser console (last 30):\n{console}\n{lab_server.log_tail()}"

    try:
        page.goto(lab_server.lab_url(notebook), wait_until="domcontentloaded", timeout=60_000)
        # A Shift+Enter sent before the kernel is connected is dropped without a word.
        wait(
            lambda: "| Idle" in (page.locator(STATUSBAR).inner_text() if page.locator(STATUSBAR).count() else ""),
            90,
            "the status bar to read '| Idle'",
            details,
        )

        cell = page.locator(FIRST_CELL)
        prompt_area = cell.locator(".jp-InputPrompt")
        for attempt in range(2):
            cell.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            started = time.monotonic()
            while time.monotonic() - started < 15 and prompt_area.inner_text().strip() in ("[ ]:", ""):
                time.sleep(0.1)
            if prompt_area.inner_text().strip() not in ("[ ]:", ""):
                break
            if attempt:
                pytest.fail(f"the first cell never started running\n{details()}")

        panel = page.locator("[data-testid=panel]")
        try:
            panel.wait_for(state="visible", timeout=60_000)
        except Exception:
            outputs = cell.locator(".jp-OutputArea").inner_text()
            pytest.fail(f"no panel appeared; the cell's output: {outputs!r}\n{details()}")
        progress = panel.locator("[data-testid=progress]")
        wait(lambda: "labeled 0 / queued 4" in progress.inner_text(), 30, "the first item", details)

        # Markup in generated text is shown as the characters it is, never parsed.
        first, second = (panel.locator(f"[data-testid=candidate-text-{i}]") for i in (0, 1))
        assert XSS_IMG in first.inner_text()
        assert XSS_SCRIPT in second.inner_text()
        assert panel.locator("[data-testid=candidate-0] img, [data-testid=candidate-1] img").count() == 0
        assert panel.locator("script, img").count() == 0
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert panel.locator("[data-testid=prompt]").inner_text() == ITEMS[0]["prompt"]
        assert ANNOTATOR in panel.locator("[data-testid=annotator]").inner_text()
        assert panel.locator("[data-testid=error]").is_hidden()
        panel.screenshot(path=str(browser_artifacts / "labeling_panel-markup.png"))  # the literal markup

        # Keyboard only: focus the panel once, then 1 (A), 2 (B), 3 (tie), u (undo the tie).
        panel.locator("[data-testid=prompt]").click()
        steps = [
            ("1", 1, "labeled 1 / queued 3", ITEMS[1]["prompt"]),
            ("2", 2, "labeled 2 / queued 2", ITEMS[2]["prompt"]),
            ("3", 3, "labeled 3 / queued 1", ITEMS[3]["prompt"]),
            ("u", 4, "labeled 2 / queued 2", ITEMS[2]["prompt"]),  # the undone item is back
        ]
        for key, events, expected, shown in steps:
            focused = page.evaluate("document.activeElement && document.activeElement.dataset.testid")
            assert focused == "panel", f"the panel lost the keyboard focus (to {focused!r}) before {key!r}"
            page.keyboard.press(key)
            wait(
                lambda n=events: _event_count(store_path) >= n,
                15,
                f"event #{events} in {store_path} after pressing {key!r}",
                details,
            )
            # The next key must name the item now on screen: wait for the front end to show it.
            wait(
                lambda e=expected, s=shown: (
                    e in progress.inner_text() and panel.locator("[data-testid=prompt]").inner_text() == s
                ),
                15,
                f"the panel to show {expected!r} and prompt {shown!r} after {key!r}",
                details,
            )
        assert panel.locator("[data-testid=error]").is_hidden(), panel.locator("[data-testid=error]").inner_text()
        assert page.evaluate("typeof window.__xss") == "undefined"

        store = PreferenceStore(store_path)
        items = store.items()
        events = store.events(annotator=ANNOTATOR)
        assert [e.kind for e in events] == ["label", "label", "label", "undo"], events
        labels, undo = events[:3], events[3]
        assert [e.decision for e in labels] == ["A", "B", "tie"]
        assert [e.item_id for e in labels] == [item.id for item in items[:3]]
        assert [item.responses[0].text for item in items[:1]] == [ITEMS[0]["responses"][0]]
        assert undo.voids == labels[2].id and undo.item_id == labels[2].item_id and undo.decision is None
        assert all(e.annotator == ANNOTATOR for e in events)
        assert store.decisions([ANNOTATOR]) == {items[0].id: {ANNOTATOR: "A"}, items[1].id: {ANNOTATOR: "B"}}

        shot = browser_artifacts / "labeling_panel.png"
        shot.unlink(missing_ok=True)
        panel.scroll_into_view_if_needed()
        page.screenshot(path=str(shot))
        assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot
    except BaseException:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(browser_artifacts / "labeling_panel-failure.png"), timeout=10_000)
        raise
