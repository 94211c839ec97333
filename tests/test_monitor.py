"""The live monitor: figure updates, throttled redraws, headless HTML, escaping, failures, plot_runs."""

import json
import logging
import math
import re
from types import SimpleNamespace

import pytest

import rlhf_lab.monitor.live as monitor_module
from rlhf_lab.monitor import frontend
from rlhf_lab.monitor.frontend import notebook_frontend
from rlhf_lab.monitor.live import LiveMonitor
from rlhf_lab.monitor.plots import decimate, plot_runs

XSS = "<script>alert(1)</script>"


class FakeClock:
    def __init__(self, step=0.0):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


class DPOConfig(SimpleNamespace):  # the class name is what stage="auto" reads first
    pass


def begin(mon, tmp_path, args_class=SimpleNamespace, **args):
    state = SimpleNamespace(global_step=0, is_world_process_zero=True)
    mon.on_train_begin(args_class(output_dir=str(tmp_path), **args), state, None)
    return state


def feed(mon, rows, state=None):
    state = state or SimpleNamespace(global_step=0, is_world_process_zero=True)
    for step, logs in rows:
        state.global_step = step
        mon.on_log(None, state, None, logs=logs)


def dpo_rows(n, start=1):
    return [
        (
            s,
            {
                "rewards/chosen": 0.01 * s,
                "rewards/rejected": -0.02 * s,
                "rewards/margins": 0.03 * s,
                "rewards/accuracies": 0.75,
                "loss": 0.6931 - 0.001 * s,
                "grad_norm": 2.0,
            },
        )
        for s in range(start, start + n)
    ]


def traces(fig, name):
    return [t for t in fig.data if t.name in (name, f"{name} (raw)")]


def test_synthetic_stream_updates_the_figure_traces(tmp_path):
    mon = LiveMonitor(live=True, clock=FakeClock(step=1.0))  # 1 s between logs: every log may redraw
    state = begin(mon, tmp_path, DPOConfig)
    assert mon.stage == "dpo"
    feed(mon, dpo_rows(3), state)
    assert mon.figure is not None and mon.redraws == 3
    titles = [a.text for a in mon.figure.layout.annotations]
    assert [t.split("<br>")[0] for t in titles[:4]] == ["rewards", "margin", "accuracy", "loss"]
    raw, smooth = traces(mon.figure, "rewards/chosen")
    assert list(raw.y) == pytest.approx([0.01, 0.02, 0.03]) and list(raw.x) == [1, 2, 3]
    assert smooth.y[0] == pytest.approx(0.01) and 0.01 < smooth.y[-1] < 0.03  # debiased EMA lags the raw
    feed(mon, dpo_rows(2, start=4), state)
    raw, _ = traces(mon.figure, "rewards/chosen")
    assert list(raw.y)[-2:] == pytest.approx([0.04, 0.05])
    # the monitor keeps the full history, raw and smoothed
    assert mon.history["loss"].values[-1] == pytest.approx(0.6881) and len(mon.history["loss"].smoothed) == 5
    assert mon.to_frame()["rewards/margins"].tolist() == pytest.approx([0.03 * s for s in range(1, 6)])


def test_stage_auto_reads_metric_names_and_other_metrics_come_from_the_dropdown(tmp_path):
    mon = LiveMonitor(live=True, clock=FakeClock(step=1.0))
    begin(mon, tmp_path)  # a config class that names no stage
    assert mon.stage is None
    mon.log(1, {"objective/kl": 0.1, "objective/scores": 0.2, "val/ratio": 1.0, "policy/clipfrac_avg": 0.1})
    assert mon.stage == "ppo"
    assert traces(mon.figure, "objective/kl") and not traces(mon.figure, "val/ratio")
    picker = mon.widget.children[1].children[0]  # beside the Stop button
    assert "val/ratio" in picker.options
    picker.value = "val/ratio"  # what a click does
    assert traces(mon.figure, "val/ratio") and "val/ratio" not in picker.options and picker.value is None


def test_a_burst_of_1000_logs_is_throttled(tmp_path):
    still = FakeClock(step=0.0)  # all 1,000 logs arrive at once
    mon = LiveMonitor(live=True, max_redraw_hz=4, clock=still)
    state = begin(mon, tmp_path)
    feed(mon, dpo_rows(1000), state)
    assert mon.redraws == 1
    mon.on_train_end(None, state, None)  # the final flush
    assert mon.redraws == 2 and len(traces(mon.figure, "loss")[0].y) == 1000

    ticking = FakeClock(step=0.001)  # 1,000 logs over one second
    mon = LiveMonitor(live=True, max_redraw_hz=4, clock=ticking)
    state = begin(mon, tmp_path)
    feed(mon, dpo_rows(1000), state)
    assert mon.redraws <= math.floor(1.0 * 4) + 1


def test_long_traces_are_decimated_for_display_but_kept_in_full(tmp_path):
    mon = LiveMonitor(live=True, stage="sft", clock=FakeClock(step=0.0))
    begin(mon, tmp_path)
    for step in range(1, 100_001):
        mon.log(step, {"loss": 5.0 if step == 54_321 else 1.0 + 1e-6 * step})
    mon.redraw()
    raw, smooth = traces(mon.figure, "loss")
    assert len(mon.history["loss"].values) == 100_000
    assert 2000 <= len(raw.y) <= 5000 and 2000 <= len(smooth.y) <= 5000
    assert max(raw.y) == 5.0  # min/max decimation keeps the spike
    x, y = decimate(range(10), range(10), 100)
    assert len(x) == 10


def read_html(tmp_path):
    text = (tmp_path / "monitor.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    return text


def test_headless_writes_a_self_contained_html_with_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_LAB_MONITOR", "html")
    mon = LiveMonitor()
    state = begin(mon, tmp_path, DPOConfig)
    assert mon.live is False and mon.widget is None
    feed(mon, dpo_rows(20), state)
    feed(mon, [(20, {"eval_loss": 0.61234, "eval_runtime": 1.5})], state)
    assert not (tmp_path / "monitor.html").exists()  # html_every_s=60 has not passed yet
    mon.on_train_end(None, state, None)
    text = read_html(tmp_path)
    assert len(text) > 1_000_000 and "plotly.js v" in text  # the library itself, inline
    assert not re.search(r"<script[^>]*\bsrc\s*=", text)  # nothing fetched from the network
    logged = [mon.history["loss"].values[-1], mon.history["rewards/margins"].values[4], 0.61234]
    assert all(json.dumps(v) in text for v in logged) and json.dumps(0.123456789) not in text
    assert "grad_norm" in text  # metrics outside the stage's panels get a panel of their own


def test_headless_rewrites_the_html_during_long_runs(tmp_path):
    clock = FakeClock(step=1.0)
    mon = LiveMonitor(live=False, html_every_s=10, clock=clock)
    state = begin(mon, tmp_path)
    feed(mon, dpo_rows(5), state)
    assert not (tmp_path / "monitor.html").exists()
    feed(mon, dpo_rows(10, start=6), state)
    assert "rewards\\u002fchosen" in read_html(tmp_path)  # plotly's JSON escapes "/"


def test_samples_are_escaped_in_the_widget_and_the_html(tmp_path):
    mon = LiveMonitor(live=True, output_dir=tmp_path, clock=FakeClock(step=1.0))
    mon.log(1, {"loss": 1.0, "samples": [{"prompt": "say <b>hi</b>", "completion": XSS, "score": 0.25}]})
    mon.add_samples([{"prompt": [{"role": "user", "content": "chat & <i>turn</i>"}], "completion": "ok"}])
    shown = mon.widget.children[4].children[1].value  # the samples table under its step selector
    path = mon.finish()
    for text in (shown, path.read_text()):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and XSS not in text
        assert "say &lt;b&gt;hi&lt;/b&gt;" in text and "chat &amp; &lt;i&gt;turn&lt;/i&gt;" in text


def test_alerts_show_in_the_monitor_and_the_summary(tmp_path):
    mon = LiveMonitor(live=False, output_dir=tmp_path)
    for step in range(1, 40):
        mon.log(step, {"objective/kl": 1.0, "policy/clipfrac_avg": 0.1 if step < 10 else 0.6})
    assert [a.rule for a in mon.alerts] == ["clipfrac_high"]
    summary = mon.summary()
    assert list(summary) == ["alerts"] and json.loads(json.dumps(summary))["alerts"][0]["rule"] == "clipfrac_high"
    mon.finish()
    assert "clipfrac_high" in read_html(tmp_path) and "Remedy" in read_html(tmp_path)


def test_a_plotting_failure_never_stops_training(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("plotly exploded")

    monkeypatch.setattr(monitor_module, "build_figure", broken)
    mon = LiveMonitor(live=True, clock=FakeClock(step=1.0))
    state = begin(mon, tmp_path)
    with caplog.at_level(logging.WARNING, logger="rlhf_lab.monitor.live"):
        feed(mon, dpo_rows(10), state)
        mon.on_train_end(None, state, None)  # the HTML writer fails too
    assert mon.failures >= 10 and len(mon.history["loss"].values) == 10
    assert sum("plotting failed" in r.message for r in caplog.records) == 1  # logged once
    assert not (tmp_path / "monitor.html").exists()

    monkeypatch.undo()  # now the batched trace update breaks instead of the build
    mon = LiveMonitor(live=True, clock=FakeClock(step=1.0))
    feed(mon, dpo_rows(2))
    monkeypatch.setattr(monitor_module, "trace_xy", broken)
    feed(mon, dpo_rows(2, start=3))
    assert mon.failures == 2 and mon.step == 4


def test_notebook_detection(monkeypatch):
    monkeypatch.setenv("RLHF_LAB_MONITOR", "live")
    assert notebook_frontend()
    monkeypatch.setenv("RLHF_LAB_MONITOR", "html")
    assert not notebook_frontend()
    monkeypatch.delenv("RLHF_LAB_MONITOR")
    assert not notebook_frontend()  # pytest: no kernel
    import IPython

    kernel_shell = SimpleNamespace(kernel=object())
    monkeypatch.setattr(IPython, "get_ipython", lambda: kernel_shell)
    monkeypatch.setattr(frontend, "_run_by_batch_executor", lambda: False)
    assert notebook_frontend()
    monkeypatch.setattr(frontend, "_run_by_batch_executor", lambda: True)  # papermill
    assert not notebook_frontend()


def test_grpo_and_rloo_runs_get_their_panels():
    from rlhf_lab.monitor.panels import STAGE_PANELS, infer_stage

    assert infer_stage((), "GRPOConfig") == "grpo" and infer_stage((), "RLOOConfig") == "rloo"
    assert infer_stage(["reward", "reward_std", "frac_reward_zero_std", "kl"]) == "grpo"
    shown = {m for p in STAGE_PANELS["grpo"] for m in p.all_metrics}
    assert {"reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "completions/clipped_ratio"} <= shown


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="stage must be"):
        LiveMonitor(stage="trpo")
    with pytest.raises(ValueError, match="smoothing"):
        LiveMonitor(smoothing=1.0)


def write_run(folder, rows):
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_plot_runs_overlays_runs_from_their_metrics(tmp_path):
    a = write_run(tmp_path / "a", [{"step": s, "loss": 1.0 / s, "rewards/margins": 0.1 * s} for s in range(1, 6)])
    b = write_run(tmp_path / "b", [{"step": s, "loss": 2.0 / s} for s in range(1, 4)])
    fig = plot_runs([a, SimpleNamespace(output_dir=b, name="beta-0.3")], metrics=["loss"])
    assert [t.name for t in fig.data] == ["a", "beta-0.3"] and list(fig.data[1].y) == [2.0, 1.0, 2.0 / 3]
    fig = plot_runs([a, b / "metrics.jsonl"])  # default metrics: the stage's panels that were logged
    assert [(t.name, t.xaxis) for t in fig.data] == [("a", "x"), ("a", "x2"), ("b", "x2")]  # margins, loss
    with pytest.raises(ValueError, match="no run logged"):
        plot_runs([a], metrics=["objective/kl"])
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_runs([tmp_path])


def test_sft_stage_writes_monitor_html(tmp_path, tiny_policy, monkeypatch):
    from rlhf_lab.stages.sft import SFTConfig, sft

    monkeypatch.delenv("RLHF_LAB_MONITOR", raising=False)
    demos = [
        {"messages": [{"role": "user", "content": f"Repeat {w} ({i})."}, {"role": "assistant", "content": w}]}
        for i, w in enumerate(["apple", "river", "stone", "cloud"] * 2)
    ]
    mon = LiveMonitor()
    run = sft(
        tiny_policy,
        demos,
        SFTConfig(
            output_dir=str(tmp_path / "run"),
            max_steps=4,
            logging_steps=2,
            per_device_train_batch_size=4,
            num_samples=0,
            seed=0,
        ),
        callbacks=[mon],
    )
    text = (run.output_dir / "monitor.html").read_text()
    losses = run.metrics["loss"].dropna().tolist()
    assert len(losses) == 2 and all(json.dumps(v) in text for v in losses)
    assert mon.stage == "sft" and mon.live is False and mon.alerts == []
