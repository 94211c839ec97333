"""Run folders (rlhf_lab.runs): atomic files, the Run a stage writes through, and load_run's table of kinds."""

import json
import os
from types import SimpleNamespace

import pytest
import torch

from rlhf_lab import runs, tiny_model
from rlhf_lab.config import RunConfig
from rlhf_lab.files import atomic_write, read_jsonl
from rlhf_lab.rewards import RewardEnsemble
from rlhf_lab.runs import (
    LOADERS,
    RewardRun,
    Run,
    RunResult,
    load_reward_run,
    load_run,
)

PROMPTS = ["How do I boil an egg?", "Name a colour."]
TEXTS = ["Simmer it for nine minutes.", "Green."]


class FakeTrainer:
    """What Run.finish needs of a trainer: save_model and state.global_step."""

    def __init__(self, model, steps: int = 3):
        self.model = model
        self.state = SimpleNamespace(global_step=steps)

    def save_model(self, path: str) -> None:
        self.model.save_pretrained(path, safe_serialization=True)


def finished_run(path, kind: str = "causal", seed: int = 0, summary: dict | None = None) -> RunResult:
    bundle = tiny_model(kind, seed=seed)
    run = Run("reward" if kind == "reward" else "sft", RunConfig(output_dir=str(path)))
    run.log({"step": 1, "loss": 2.0})
    samples = [{"prompt": "p", "completion": "c"}]
    return run.finish(FakeTrainer(bundle.model), bundle, summary=summary or {"note": "é"}, samples=samples)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


class TestAtomicWrite:
    def test_replaces_the_whole_file_and_leaves_no_temporary(self, tmp_path):
        target = tmp_path / "sub" / "summary.json"
        atomic_write(target, "old content, longer than the new one\n")
        assert atomic_write(target, "new\n") == target
        assert target.read_text() == "new\n"
        assert leftovers(target.parent) == []
        assert oct(target.stat().st_mode & 0o777) == oct(0o644)

    def test_a_failed_rename_leaves_the_old_file_whole(self, tmp_path, monkeypatch):
        target = tmp_path / "run.json"
        target.write_text('{"kind": "policy"}\n')

        def broken(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(runs.os, "replace", broken)
        with pytest.raises(OSError, match="disk full"):
            atomic_write(target, '{"kind": "reward"}\n')
        assert target.read_text() == '{"kind": "policy"}\n'
        assert leftovers(tmp_path) == []

    def test_a_failed_write_leaves_no_partial_file(self, tmp_path):
        target = tmp_path / "samples.jsonl"
        with pytest.raises(UnicodeEncodeError):
            atomic_write(target, "half a line, then a lone surrogate \ud800")
        assert not target.exists()
        assert list(tmp_path.iterdir()) == []


class TestRun:
    def test_finish_writes_every_file_through_atomic_write(self, tmp_path, monkeypatch):
        renamed = []
        real_replace = os.replace

        def recording(src, dst):
            renamed.append((os.path.dirname(src), os.path.basename(dst)))
            real_replace(src, dst)

        monkeypatch.setattr(runs.os, "replace", recording)
        result = finished_run(tmp_path / "run")
        folder = tmp_path / "run"
        names = [name for _, name in renamed]
        assert {"config.yaml", "samples.jsonl", "summary.json", "run.json"} <= set(names)
        assert names[-1] == "run.json"  # last: its presence says the run finished
        assert all(src == str(folder) for src, name in renamed)  # renamed within the folder: atomic
        assert leftovers(folder) == []
        summary = json.loads((folder / "summary.json").read_text())
        assert summary == result.summary and summary["note"] == "é" and summary["final"] == {"loss": 2.0}
        manifest = json.loads((folder / "run.json").read_text())
        assert (manifest["stage"], manifest["kind"], manifest["adapter"]) == ("sft", "policy", False)
        assert read_jsonl(folder / "metrics.jsonl") == [{"step": 1, "loss": 2.0}]

    def test_a_crash_while_writing_the_manifest_leaves_no_finished_looking_run(self, tmp_path, monkeypatch):
        real_replace = os.replace

        def failing_on_manifest(src, dst):
            if os.path.basename(dst) == "run.json":
                raise OSError("killed")
            real_replace(src, dst)

        monkeypatch.setattr(runs.os, "replace", failing_on_manifest)
        with pytest.raises(OSError, match="killed"):
            finished_run(tmp_path / "run")
        assert not (tmp_path / "run" / "run.json").exists() and leftovers(tmp_path / "run") == []
        with pytest.raises(FileNotFoundError, match="not a finished run: run.json is missing"):
            load_run(tmp_path / "run")

    def test_reusing_a_folder_removes_the_earlier_runs_files(self, tmp_path):
        finished_run(tmp_path / "run")
        Run("sft", RunConfig(output_dir=str(tmp_path / "run")))
        left = {p.name for p in (tmp_path / "run").iterdir()}
        assert not left & {"run.json", "summary.json", "metrics.jsonl", "samples.jsonl", "config.yaml"}

    def test_the_logger_keeps_numbers_and_appends_each_row_at_once(self, tmp_path):
        run = Run("sft", RunConfig(output_dir=str(tmp_path / "run")), callbacks=["mine"])
        assert run.callbacks == [run.logger, "mine"]
        state = SimpleNamespace(global_step=7, is_world_process_zero=True)
        run.logger.on_log(None, state, None, logs={"loss": 0.5, "note": "text", "epoch": 1})
        assert run.rows == [{"step": 7, "loss": 0.5, "epoch": 1}]
        assert read_jsonl(tmp_path / "run" / "metrics.jsonl") == run.rows


class TestLoadRun:
    def test_a_policy_run_reloads_with_the_same_outputs(self, tmp_path):
        result = finished_run(tmp_path / "run")
        again = load_run(tmp_path / "run")
        assert type(again) is RunResult and again.stage == "sft"
        assert again.summary == result.summary and list(again.metrics["loss"]) == [2.0]
        ids = torch.tensor([[1, 2, 3]])
        with torch.no_grad():
            assert torch.allclose(again.model(ids).logits, result.model(ids).logits, atol=1e-5)
        with pytest.raises(ValueError, match="holds a policy run, not a reward model"):
            load_reward_run(tmp_path / "run")

    def test_dispatch_goes_through_the_table_of_kinds(self, tmp_path, monkeypatch):
        (tmp_path / "run.json").write_text(json.dumps({"stage": "custom", "kind": "custom"}))
        with pytest.raises(ValueError, match=r"unknown run kind 'custom'.*'policy', 'reward', 'ensemble'"):
            load_run(tmp_path)
        monkeypatch.setitem(LOADERS, "custom", lambda path, manifest: ("loaded", path, manifest["stage"]))
        assert load_run(tmp_path) == ("loaded", tmp_path, "custom")

    def test_a_folder_without_run_json_is_refused_clearly(self, tmp_path):
        (tmp_path / "summary.json").write_text("{}")
        with pytest.raises(FileNotFoundError, match=r"is not a finished run: run.json is missing.*Fix"):
            load_run(tmp_path)

    def test_an_ensemble_folder_reloads_through_load_run(self, tmp_path):
        members = [finished_run(tmp_path / "ens" / f"member-{i}", "reward", seed=i) for i in range(2)]
        assert all(isinstance(m, RewardRun) for m in members)
        ensemble = RewardEnsemble(
            members=members,
            aggregate="mean_minus_std",
            lam=0.5,
            summary={"ensemble": 2},
            metrics=runs.member_metrics(members),
        )
        top = Run("reward", RunConfig(output_dir=str(tmp_path / "ens")))
        top.finish_ensemble(ensemble, samples=[])
        manifest = json.loads((tmp_path / "ens" / "run.json").read_text())
        assert manifest["kind"] == "ensemble" and manifest["members"] == ["member-0", "member-1"]
        assert (manifest["aggregate"], manifest["lambda"]) == ("mean_minus_std", 0.5)
        again = load_run(tmp_path / "ens")
        assert isinstance(again, RewardEnsemble) and (again.aggregate, again.lam) == ("mean_minus_std", 0.5)
        assert again(PROMPTS, TEXTS) == pytest.approx(ensemble(PROMPTS, TEXTS), abs=1e-5)
        assert set(again.metrics["member"]) == {0, 1}
        assert isinstance(load_reward_run(tmp_path / "ens" / "member-1"), RewardRun)  # a member on its own

    def test_an_older_ensemble_json_folder_still_reloads(self, tmp_path):
        members = [finished_run(tmp_path / "ens" / f"member-{i}", "reward", seed=i) for i in range(2)]
        top = tmp_path / "ens"
        (top / "summary.json").write_text("{}")
        (top / "config.yaml").write_text("seed: 0\n")
        (top / "ensemble.json").write_text(
            json.dumps({"members": ["member-0", "member-1"], "aggregate": "mean", "lambda": 1.0})
        )
        again = load_reward_run(top)
        assert isinstance(again, RewardEnsemble) and len(again.members) == 2
        expected = [(a + b) / 2 for a, b in zip(members[0](PROMPTS, TEXTS), members[1](PROMPTS, TEXTS))]
        assert again(PROMPTS, TEXTS) == pytest.approx(expected, abs=1e-5)


class TestOffload:
    def test_the_model_leaves_memory_and_comes_back_the_same(self, tmp_path):
        import gc
        import weakref

        run = finished_run(tmp_path / "sft")
        ids = torch.tensor([[1, 2, 3, 4, 5]])
        with torch.no_grad():
            before = run.model(ids).logits
        gone, name = weakref.ref(run.model), run.bundle.name
        assert run.offload() is run and run.offloaded and run.offload() is run  # twice is once
        gc.collect()
        assert gone() is None  # nothing else kept the trained weights alive
        model = run.model
        with torch.no_grad():
            assert torch.equal(model(ids).logits, before)
        assert run.model is model and run.bundle.model is model  # one copy while something uses it
        assert run.bundle.tokenizer is run.tokenizer and run.bundle.name == name
        del model
        gc.collect()
        assert run.__dict__["_loaded"]() is None  # held weakly: unused, it leaves again

    def test_a_reward_run_keeps_its_normalization(self, tmp_path):
        run = finished_run(tmp_path / "rm", kind="reward")
        run.bundle.offset, run.bundle.scale = 0.25, 2.0
        scores = run(PROMPTS, TEXTS)
        run.offload()
        assert run(PROMPTS, TEXTS) == pytest.approx(scores, abs=1e-6) and run.bundle.scale == 2.0

    def test_a_result_without_a_finished_folder_is_refused(self, tmp_path):
        bundle = tiny_model("causal", seed=0)
        run = RunResult("sft", bundle.model, bundle.tokenizer, None, {}, tmp_path / "nowhere")
        with pytest.raises(ValueError, match="holds no finished run, so the model could not come back"):
            run.offload()
        assert run.model is bundle.model and not run.offloaded
        with pytest.raises(AttributeError, match="no attribute 'weights'"):
            _ = run.weights
