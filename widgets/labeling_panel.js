// Front end of rlhf_lab.panels.LabelingPanel (an anywidget ES module).
//
// All state lives in the Python widget's synced traits; this file only draws it and sends the
// person's keys and clicks back as messages ({type: "key"} / {type: "action"}), which run the same
// Python methods as panel.submit("A") and friends. Safety rule: prompt and response text is model
// or user data, so it is only ever written with textContent (no markdown, no HTML parsing):
// "<script>" and "<img onerror=...>" show as the characters they are.
// Stable data-testid attributes are for the browser test: panel, annotator, progress, error,
// message, prompt, candidate-<i>, candidate-text-<i>, score-<i>, rank-<i>, ranking, done, btn-*.
// A rating item (trait "rating") asks for a score 1-5 per response in turn: rank-<i> shows each
// response's score, the response being scored carries the class rlhf-current.

const KEYS = new Set([
  "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
  "s", "S", "u", "U", "t", "T", "Backspace", "Enter", "Escape",
]);
const TRAITS = [
  "annotator", "prompt", "responses", "rating", "ranking", "labeled", "skipped", "queued",
  "labels_per_minute", "show_scores", "scores", "error", "message", "done",
];

function node(tag, className, testid) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (testid) el.dataset.testid = testid;
  return el;
}

function text(tag, className, testid, value) {
  const el = node(tag, className, testid);
  el.textContent = value;
  return el;
}

function letter(i, n) {
  return n === 2 ? "AB"[i] : String(i + 1);
}

function render({ model, el }) {
  // Each message names the item on screen, so a key pressed twice before the next item arrives
  // is ignored by Python instead of labelling an item the person has not seen.
  const send = (content) => model.send({ ...content, item_id: model.get("item_id") });
  const action = (name, extra = {}) => send({ type: "action", action: name, ...extra });

  const root = node("div", "rlhf-panel", "panel");
  root.tabIndex = 0; // focusable, so keydown reaches us
  root.setAttribute("role", "application");
  root.setAttribute("aria-label", "Preference labelling panel");
  // JupyterLab runs notebook command-mode shortcuts (1 = heading, d d = delete...) on keydown;
  // Lumino stops looking at an element carrying this attribute.
  root.setAttribute("data-lm-suppress-shortcuts", "true");

  const header = node("div", "rlhf-header");
  const annotator = node("span", "rlhf-annotator", "annotator");
  const progress = node("span", "rlhf-progress", "progress");
  header.append(annotator, progress);
  const error = node("div", "rlhf-error", "error");
  error.setAttribute("role", "alert");
  const message = node("div", "rlhf-message", "message");
  message.setAttribute("role", "status");
  const promptBox = node("section", "rlhf-prompt");
  const prompt = node("div", "rlhf-text", "prompt");
  promptBox.append(text("div", "rlhf-heading", null, "Prompt"), prompt);
  const candidates = node("div", "rlhf-candidates", "candidates");
  const ranking = node("div", "rlhf-ranking", "ranking");
  const buttons = node("div", "rlhf-buttons", "buttons");
  const done = text("div", "rlhf-done", "done", "All done: nothing left to label.");
  root.append(header, error, message, promptBox, candidates, ranking, buttons, done);
  el.append(root);

  function button(label, testid, title, onClick) {
    const b = text("button", "rlhf-button", testid, label);
    b.type = "button";
    b.title = title;
    b.addEventListener("click", () => {
      onClick();
      root.focus({ preventScroll: true }); // keep the keys working after a click
    });
    return b;
  }

  function drawCandidates() {
    const responses = model.get("responses");
    const n = responses.length;
    const rating = model.get("rating");
    candidates.replaceChildren();
    responses.forEach((response, i) => {
      const card = node("article", "rlhf-candidate", `candidate-${i}`);
      const head = node("div", "rlhf-heading");
      head.append(
        text("span", "rlhf-letter", null, rating ? `Response ${i + 1}` : `${letter(i, n)} (key ${i + 1})`),
        node("span", "rlhf-rank", `rank-${i}`),
        node("span", "rlhf-score", `score-${i}`),
      );
      const body = text("div", "rlhf-text", `candidate-text-${i}`, response);
      card.append(head, body);
      if (n > 2 && !rating) card.append(button(`Rank next (${i + 1})`, `btn-rank-${i}`, "Next best", () => action("rank", { index: i })));
      candidates.append(card);
    });
    drawButtons(n, rating);
  }

  function drawButtons(n, rating) {
    const scale = ["1 bad", "2", "3 okay", "4", "5 great"];
    const list = rating
      ? scale.map((label, k) => [
          `${label} (${k + 1})`, `btn-rate-${k + 1}`, "Score the highlighted response", () => action("rate", { score: k + 1 }),
        ])
      : n > 2
        ? [
            ["Submit ranking (Enter)", "btn-submit-ranking", "Submit the picks, best first", () => action("submit", { decision: null })],
            ["Clear picks (Esc)", "btn-clear-ranking", "Start the ranking again", () => action("clear_ranking")],
            ["Tie (t)", "btn-tie", "All equally good", () => action("submit", { decision: "tie" })],
          ]
        : [
            ["A better (1)", "btn-A", "Response A is better", () => action("submit", { decision: "A" })],
            ["B better (2)", "btn-B", "Response B is better", () => action("submit", { decision: "B" })],
            ["Tie (3)", "btn-tie", "Equally good", () => action("submit", { decision: "tie" })],
          ];
    if (!rating) list.push(["Both bad (0)", "btn-both_bad", "None is acceptable", () => action("submit", { decision: "both_bad" })]);
    list.push(
      ["Skip (s)", "btn-skip", "Decide later", () => action("skip")],
      ["Undo (u)", "btn-undo", "Take back the previous label", () => action("undo")],
      ["Show scores", "btn-toggle-scores", "Reward-model scores (hidden to avoid anchoring)", () => action("toggle_scores")],
    );
    buttons.replaceChildren(...list.map(([label, id, title, fn]) => button(label, id, title, fn)));
    update();
  }

  function update() {
    const responses = model.get("responses");
    const n = responses.length;
    const picks = model.get("ranking");
    const rating = model.get("rating");
    const scores = model.get("scores");
    const shown = model.get("show_scores") && scores.length === n;
    const isDone = model.get("done");
    annotator.textContent = `Annotator: ${model.get("annotator")}`;
    progress.textContent =
      `labeled ${model.get("labeled")} / queued ${model.get("queued")}` +
      ` · skipped ${model.get("skipped")} · ${model.get("labels_per_minute").toFixed(1)} labels/min`;
    error.textContent = model.get("error");
    error.hidden = !model.get("error");
    message.textContent = model.get("message");
    message.hidden = !model.get("message");
    prompt.textContent = model.get("prompt");
    promptBox.hidden = isDone;
    done.hidden = !isDone;
    for (let i = 0; i < n; i++) {
      const rank = candidates.querySelector(`[data-testid="rank-${i}"]`);
      const score = candidates.querySelector(`[data-testid="score-${i}"]`);
      const at = picks.indexOf(i);
      if (rank && rating) rank.textContent = i < picks.length ? `score ${picks[i]}` : "";
      else if (rank) rank.textContent = at >= 0 ? `#${at + 1}` : "";
      const card = candidates.querySelector(`[data-testid="candidate-${i}"]`);
      if (card) card.classList.toggle("rlhf-current", rating && !isDone && i === picks.length);
      if (score) {
        score.textContent = shown ? `reward ${scores[i].toFixed(3)}` : "";
        score.hidden = !shown;
      }
    }
    ranking.textContent = rating
      ? `Score response ${Math.min(picks.length + 1, n)} of ${n}: press 1 (bad) to 5 (great)`
      : n > 2
        ? `Ranking (best first): ${picks.map((i) => letter(i, n)).join(" > ") || "press the numbers, then Enter"}`
        : "";
    ranking.hidden = n <= 2 && !rating;
    for (const b of buttons.querySelectorAll("button")) {
      b.disabled = isDone && b.dataset.testid !== "btn-undo" && b.dataset.testid !== "btn-toggle-scores";
    }
    const toggle = buttons.querySelector('[data-testid="btn-toggle-scores"]');
    if (toggle) {
      toggle.textContent = model.get("show_scores") ? "Hide scores" : "Show scores";
      toggle.setAttribute("aria-pressed", String(model.get("show_scores")));
    }
  }

  function onKey(event) {
    if (!KEYS.has(event.key) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target instanceof HTMLButtonElement && (event.key === "Enter" || event.key === " ")) return;
    event.preventDefault(); // Backspace must not navigate, digits must not scroll
    event.stopPropagation(); // the notebook must not see the key either
    send({ type: "key", key: event.key });
  }

  root.addEventListener("keydown", onKey);
  const redraw = new Set(["responses", "rating"]); // these change the cards and buttons themselves
  for (const name of redraw) model.on(`change:${name}`, drawCandidates);
  for (const name of TRAITS) if (!redraw.has(name)) model.on(`change:${name}`, update);
  drawCandidates();
  requestAnimationFrame(() => root.focus({ preventScroll: true }));

  return () => {
    root.removeEventListener("keydown", onKey);
    for (const name of redraw) model.off(`change:${name}`, drawCandidates);
    for (const name of TRAITS) if (!redraw.has(name)) model.off(`change:${name}`, update);
  };
}

export default { render };
