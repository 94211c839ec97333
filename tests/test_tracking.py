"""report_to: every stage's metrics rows reach TensorBoard and trackio (offline) with metrics.jsonl's names,
steps and values; TRL's own reporting callbacks stay out; wandb is offline unless WANDB_MODE says otherwise;
bad values get a clear error before anything loads."""

import math
import sys
import types

import pytest

import rlhf_lab as lab
from rlhf_lab.config import ConfigError
from rlhf_lab.files import read_jsonl
from rlhf_lab.tracking import close_trackers, open_trackers

pytest.importorskip("tensorboard", reason="the track extra: pip install 'rlhf-lab[track]'")
pytest.importorskip("trackio", reason="the track extra: pip install 'rlhf-lab[track]'")

PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "Pick a fruit."]


def vowels(prompts, completions):
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


def run_stage(stage, tmp_path, report_to):
    """A tiny run of `stage` that logs every step, reporting to `report_to`."""
    out = str(tmp_path / stage)
    policy = lab.tiny_model("causal", seed=0)
    common = dict(output_dir=out, seed=0, report_to=report_to, monitor=False, num_samples=0)
    if stage == "sft":
        config = lab.SFTConfig(max_steps=4, logging_steps=1, per_device_train_batch_size=2, max_length=64, **common)
        return lab.sft(policy, "starter", config)
    if stage == "dpo":
        config = lab.DPOConfig(max_steps=4, logging_steps=1, per_device_train_batch_size=2, max_length=64, **common)
        return lab.dpo(policy, "starter", config)
    config = lab.PPOConfig(total_updates=3, batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=6,
                           logging_steps=1, **common)  # fmt: skip
    return lab.ppo(policy, vowels, PROMPTS, config)


def expected_scalars(run) -> dict[tuple[str, int], float]:
    """What metrics.jsonl holds: (name, step) -> value, for every finite number."""
    rows = read_jsonl(run.output_dir / "metrics.jsonl")
    assert len(rows) >= 3, rows
    return {
        (k, row["step"]): float(v)
        for row in rows
        for k, v in row.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


@pytest.mark.parametrize("stage", ["sft", "dpo", "ppo"])
def test_tensorboard_holds_the_names_steps_and_values_of_metrics_jsonl(stage, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = run_stage(stage, tmp_path, "tensorboard")
    events = EventAccumulator(str(run.output_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    logged = {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
    expected = expected_scalars(run)
    assert set(logged) == set(expected)  # no "train/" prefix, no extra or missing metric, the same steps
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key  # TensorBoard keeps float32
    assert "config/text_summary" in events.Tags()["tensors"]  # the config, as text
    assert run.summary["steps"] >= 3


@pytest.mark.parametrize("stage", ["sft", "dpo", "ppo"])
def test_trackio_holds_the_names_steps_and_values_of_metrics_jsonl(stage, tmp_path, monkeypatch):
    from trackio.sqlite_storage import SQLiteStorage

    project = f"rlhf-lab-test-{tmp_path.name}"
    monkeypatch.setenv("TRACKIO_PROJECT", project)
    run = run_stage(stage, tmp_path, "trackio")
    logged = {
        (k, row["step"]): v
        for row in SQLiteStorage.get_logs(project, stage)  # the run's name: its folder's
        for k, v in row.items()
        if k not in ("step", "timestamp")
    }
    assert logged == expected_scalars(run)


def test_a_run_reusing_its_folder_starts_a_fresh_event_file(tmp_path):
    run_stage("sft", tmp_path, "tensorboard")
    run_stage("sft", tmp_path, "tensorboard")
    assert len(list((tmp_path / "sft" / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_trls_own_reporting_callbacks_are_removed(tmp_path):
    config = lab.SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2, max_length=32,
                           report_to=["tensorboard"], monitor=False)  # fmt: skip
    assert config.report_to == ["tensorboard"]
    run = lab.sft(lab.tiny_model("causal", seed=0), "starter", config)
    # transformers' TensorBoardCallback would have written an event file of its own, with "train/" names
    events = list(run.output_dir.rglob("events.out.tfevents.*"))
    assert [e.parent.name for e in events] == ["tensorboard"], events


def test_wandb_is_offline_unless_wandb_mode_says_otherwise(tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        def log(self, values, step):
            calls.append(("log", values, step))

        def finish(self):
            calls.append(("finish",))

    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)) or FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr("rlhf_lab.tracking.installed", lambda name: True)
    config = types.SimpleNamespace(report_to=["wandb"], run_name="r1")
    trackers = open_trackers(config, tmp_path, lambda c: {"learning_rate": 1e-5})
    trackers[0].log({"step": 3, "loss": 0.5, "note": "text", "kl": float("nan")})
    close_trackers(trackers)
    assert calls[0][1]["mode"] == "offline" and calls[0][1]["dir"] == str(tmp_path) and calls[0][1]["name"] == "r1"
    assert calls[1:] == [("log", {"loss": 0.5}, 3), ("finish",)]
    monkeypatch.setenv("WANDB_MODE", "online")
    close_trackers(open_trackers(config, tmp_path, lambda c: {}))
    assert calls[-2][1]["mode"] == "online"


@pytest.mark.parametrize(
    "value, message",
    [
        ("tensorbored", "report_to 'tensorbored' is not a tracker the lab writes to. Fix: use none, tensorboard"),
        (["trackio", "mlflow"], "report_to 'mlflow' is not a tracker"),
    ],
)
def test_an_unknown_tracker_is_a_clear_error_before_anything_loads(value, message):
    for cls in (lab.SFTConfig, lab.PPOConfig, lab.GRPOConfig):
        with pytest.raises(ConfigError, match=message):
            cls(output_dir="unused", report_to=value)


def test_a_tracker_that_is_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setattr("rlhf_lab.tracking.installed", lambda name: name != "trackio")
    with pytest.raises(ConfigError, match=r"needs the trackio package.*pip install 'rlhf-lab\[track\]'"):
        lab.PPOConfig(output_dir="unused", report_to="trackio")
    assert lab.PPOConfig(output_dir="unused", report_to="all").report_to == ["tensorboard", "wandb"]
    assert lab.DPOConfig(output_dir="unused").report_to == []
