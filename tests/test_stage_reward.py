"""Reward stage on tiny models: Bradley-Terry training, normalization, margin, centering, ensembles, bad configs."""

import json
import random

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from rlhf_lab import ConfigError, RewardModel, load_reward_model, tiny_model
from rlhf_lab.rewards import RewardEnsemble
from rlhf_lab.runs import RewardRun, load_reward_run, load_run
from rlhf_lab.stages import reward as reward_stage
from rlhf_lab.stages.reward import RewardConfig, train_reward_model
from rlhf_lab.stages.reward_eval import METRICS

WORDS = ["apple", "river", "stone", "cloud", "green", "table", "music", "light", "paper", "chair", "window"]


def marker_pairs(n: int, seed: int) -> list[dict]:
    """Separable pairs: the chosen reply always holds the word 'excellent', the rejected never; both
    have five words, so length carries no signal."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(4)]
        words.insert(rng.randrange(5), "excellent")
        rejected = " ".join(rng.choice(WORDS) for _ in range(5))
        rows.append({"prompt": f"Describe item {seed}-{i}.", "chosen": " ".join(words), "rejected": rejected})
    return rows


def tiny_config(tmp_path, name: str, **overrides) -> RewardConfig:
    values = dict(
        output_dir=str(tmp_path / name),
        learning_rate=1e-3,
        num_train_epochs=3,
        per_device_train_batch_size=8,
        logging_steps=1,
        bf16=False,
        seed=0,
        disable_tqdm=True,
    )
    return RewardConfig(**{**values, **overrides})


class Snapshot(TrainerCallback):
    """Copies the weights the trainer starts from."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def all_texts(rows):
    return [r["prompt"] for r in rows] * 2, [r["chosen"] for r in rows] + [r["rejected"] for r in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run from a tiny *policy* backbone (a scalar head goes on a copy of its trunk)."""
    policy = tiny_model("causal", seed=0)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    snapshot = Snapshot()
    train, test = marker_pairs(64, seed=0), marker_pairs(40, seed=1)
    run = train_reward_model(
        policy, train, tiny_config(tmp_path_factory.mktemp("rm"), "run"), callbacks=[snapshot], eval_data=test
    )
    return {
        "run": run,
        "policy": policy,
        "before": before,
        "start": snapshot.start,
        "train": train,
        "test": test,
    }


class TestTraining:
    def test_loss_drops(self, trained):
        losses = trained["run"].metrics["loss"].dropna().tolist()
        assert losses[0] == pytest.approx(np.log(2), abs=0.05)  # a fresh head scores both sides about the same
        assert np.mean(losses[-3:]) < 0.2 < losses[0]

    def test_every_trainable_parameter_changed(self, trained):
        model = trained["run"].model
        assert set(trained["start"]) == {n for n, p in model.named_parameters() if p.requires_grad}
        for name, param in model.named_parameters():
            assert not torch.equal(param, trained["start"][name]), f"{name} did not change"

    def test_callers_backbone_is_untouched(self, trained):
        policy = trained["policy"]
        for name, value in policy.model.state_dict().items():
            assert torch.equal(value, trained["before"][name]), name
        assert type(policy.model).__name__ == "LlamaForCausalLM"
        assert trained["run"].model is not policy.model

    def test_separable_set_is_learned(self, trained):
        summary = trained["run"].summary
        assert summary["held_out"] == "eval_data"
        assert set(summary["eval"]) == set(METRICS) and summary["eval"]["n_pairs"] == 40
        assert summary["eval"]["accuracy"] > 0.9
        assert summary["eval"]["mean_margin"] > 1.0
        assert 0 <= summary["ece_raw"] <= 0.5

    def test_run_is_a_callable_reward_model(self, trained):
        run = trained["run"]
        assert isinstance(run, RewardRun) and isinstance(run.bundle, RewardModel)
        good, bad = run(["Describe item 9."] * 2, ["an excellent green table", "a green table chair"])
        assert good > bad
        assert run.score(["Describe item 9."], ["excellent"]) == run.bundle.score(["Describe item 9."], ["excellent"])

    def test_samples_are_held_out_pairs_with_rewards(self, trained):
        rows = [json.loads(line) for line in (trained["run"].output_dir / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == 32  # num_samples
        test = trained["test"]
        assert [r["chosen"] for r in rows] == [t["chosen"] for t in test[:32]]
        assert all(r["r_chosen"] > r["r_rejected"] for r in rows[:10])


class TestNormalization:
    def test_scores_on_training_responses_have_mean_0_std_1(self, trained):
        scores = np.array(trained["run"](*all_texts(trained["train"])))
        assert scores.mean() == pytest.approx(0.0, abs=1e-4)
        assert scores.std() == pytest.approx(1.0, abs=1e-4)
        assert trained["run"].bundle.scale != 1.0  # it really was rescaled

    def test_normalization_survives_reload(self, trained):
        run = trained["run"]
        saved = json.loads((run.output_dir / "model" / "reward_normalization.json").read_text())
        assert saved == {"offset": run.bundle.offset, "scale": run.bundle.scale}
        prompts, texts = all_texts(trained["test"])
        for again in (load_run(run.output_dir).bundle, load_reward_run(run.output_dir)):
            assert again(prompts, texts) == pytest.approx(run(prompts, texts), abs=1e-5)

    def test_normalize_false_keeps_raw_scores(self, tmp_path):
        train = marker_pairs(16, seed=2)
        run = train_reward_model("tiny", train, tiny_config(tmp_path, "raw", normalize=False, max_steps=2))
        assert (run.bundle.offset, run.bundle.scale) == (0.0, 1.0)
        prompts, texts = all_texts(train)
        batch = run.bundle.tokenizer(  # the raw head output for one response equals its score
            run.bundle.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompts[0]}, {"role": "assistant", "content": texts[0]}], tokenize=False
            ),
            return_tensors="pt",
            add_special_tokens=False,
        )
        with torch.no_grad():
            raw = run.model(**batch).logits[0, 0].item()
        assert run([prompts[0]], [texts[0]])[0] == pytest.approx(raw, abs=1e-5)


def scored_pairs(n: int = 4) -> list[dict]:
    return [
        {
            "prompt": f"Q{i}",
            "chosen": f"good answer {i}",
            "rejected": f"bad {i}",
            "score_chosen": 2.0 + i,
            "score_rejected": 1.0,
        }
        for i in range(n)
    ]


def first_step_loss(tmp_path, name, rows, backbone="tiny", **overrides) -> float:
    """The loss TRL logs for one step over all `rows` in a single batch (before the update)."""
    config = tiny_config(
        tmp_path, name, max_steps=1, per_device_train_batch_size=len(rows), eval_fraction=0, num_samples=0, **overrides
    )
    return train_reward_model(backbone, rows, config).metrics["loss"].iloc[0]


class TestLossVariants:
    """The first logged loss, recomputed by hand from the untrained model's raw rewards."""

    @pytest.fixture(scope="class")
    def raw(self):
        rows = scored_pairs()
        initial = tiny_model("reward", seed=0)  # the weights the stage starts from with seed=0
        r_c = torch.tensor(initial([r["prompt"] for r in rows], [r["chosen"] for r in rows]))
        r_r = torch.tensor(initial([r["prompt"] for r in rows], [r["rejected"] for r in rows]))
        return rows, r_c, r_r

    def test_plain_bradley_terry(self, tmp_path, raw):
        rows, r_c, r_r = raw
        expected = -torch.nn.functional.logsigmoid(r_c - r_r).mean().item()
        assert first_step_loss(tmp_path, "bt", rows) == pytest.approx(expected, abs=1e-4)

    def test_margin_is_score_chosen_minus_score_rejected(self, tmp_path, raw):
        rows, r_c, r_r = raw
        margin = torch.tensor([r["score_chosen"] - r["score_rejected"] for r in rows])
        expected = -torch.nn.functional.logsigmoid(r_c - r_r - margin).mean().item()
        assert first_step_loss(tmp_path, "margin", rows, use_margin=True) == pytest.approx(expected, abs=1e-4)

    def test_centering_adds_the_squared_sum_penalty(self, tmp_path, raw):
        rows, r_c, r_r = raw
        bt = -torch.nn.functional.logsigmoid(r_c - r_r).mean().item()
        expected = bt + 0.5 * ((r_c + r_r) ** 2).mean().item()
        loss = first_step_loss(tmp_path, "center", rows, center_rewards_coefficient=0.5)
        assert loss == pytest.approx(expected, abs=1e-4) and abs(loss - bt) > 1e-3


class TestEnsemble:
    @pytest.fixture(scope="class")
    def ensemble(self, tmp_path_factory):
        config = tiny_config(
            tmp_path_factory.mktemp("ens"),
            "ens",
            num_train_epochs=1,
            ensemble=2,
            ensemble_aggregate="mean_minus_std",
            ensemble_lambda=0.5,
        )
        return train_reward_model("tiny", marker_pairs(32, seed=0), config, eval_data=marker_pairs(8, seed=1))

    def test_members_are_separate_runs_with_their_own_seeds(self, ensemble):
        assert isinstance(ensemble, RewardEnsemble) and len(ensemble.members) == 2
        assert [m.output_dir.name for m in ensemble.members] == ["member-0", "member-1"]
        assert [m.config.seed for m in ensemble.members] == [0, 1]
        prompts, texts = all_texts(marker_pairs(4, seed=2))
        a, b = (np.array(m(prompts, texts)) for m in ensemble.members)
        assert not np.allclose(a, b)
        reloaded = load_run(ensemble.members[1].output_dir)  # each member reloads as a plain run
        assert reloaded.bundle(prompts, texts) == pytest.approx(b.tolist(), abs=1e-5)

    def test_aggregates_match_hand_computed_values(self, ensemble):
        prompts, texts = all_texts(marker_pairs(4, seed=2))
        a, b = (np.array(m(prompts, texts)) for m in ensemble.members)
        mean, std = (a + b) / 2, np.abs(a - b) / 2  # population std of two values
        assert ensemble(prompts, texts) == pytest.approx((mean - 0.5 * std).tolist(), abs=1e-6)
        as_mean = RewardEnsemble(members=ensemble.members, aggregate="mean")
        assert as_mean(prompts, texts) == pytest.approx(mean.tolist(), abs=1e-6)

    def test_folder_summary_and_reload(self, ensemble):
        folder = ensemble.output_dir
        for name in ("run.json", "config.yaml", "summary.json", "samples.jsonl", "metrics.jsonl"):
            assert (folder / name).exists(), name
        assert not (folder / "ensemble.json").exists()
        manifest = json.loads((folder / "run.json").read_text())
        assert manifest["kind"] == "ensemble" and manifest["stage"] == "reward"
        assert (manifest["members"], manifest["aggregate"], manifest["lambda"]) == (
            ["member-0", "member-1"],
            "mean_minus_std",
            0.5,
        )
        assert {row["member"] for row in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())} == {
            0,
            1,
        }
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["ensemble"] == 2 and len(summary["member_eval"]) == 2
        assert set(summary["eval"]) == set(METRICS)
        sample = json.loads((folder / "samples.jsonl").read_text().splitlines()[0])
        assert len(sample["members"]) == 2
        prompts, texts = all_texts(marker_pairs(3, seed=3))
        for again in (load_run(folder), load_reward_run(folder)):  # both go through run.json's kind
            assert isinstance(again, RewardEnsemble) and (again.aggregate, again.lam) == ("mean_minus_std", 0.5)
            assert [m.output_dir.name for m in again.members] == ["member-0", "member-1"]
            assert again(prompts, texts) == pytest.approx(ensemble(prompts, texts), abs=1e-5)
        assert set(again.metrics["member"]) == {0, 1} and again.summary == summary


class TestBadInput:
    @pytest.fixture
    def no_models(self, monkeypatch):
        def refuse(*args, **kwargs):
            raise AssertionError("a model was loaded before the input was checked")

        for name in ("tiny_model", "load_reward_model", "load_run"):
            monkeypatch.setattr(reward_stage, name, refuse)

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"ensemble": 0}, "ensemble must be a whole number of reward models >= 1"),
            ({"ensemble_aggregate": "median"}, "ensemble_aggregate must be one of mean, mean_minus_std"),
            ({"ensemble_lambda": -1.0}, "ensemble_lambda must be >= 0"),
            ({"eval_fraction": 1.0}, r"eval_fraction must be in \[0, 1\)"),
            ({"learning_rate": -1.0}, r"learning_rate must be a number >= 0, got -1\.0 \(0 freezes the weights\)"),
            ({"center_rewards_coefficient": -0.1}, "center_rewards_coefficient must be >= 0"),
        ],
    )
    def test_bad_config_values(self, tmp_path, fields, message):
        with pytest.raises(ConfigError, match=message):
            RewardConfig(output_dir=str(tmp_path / "x"), bf16=False, **fields)

    def test_margin_without_scores(self, tmp_path, no_models):
        config = tiny_config(tmp_path, "m", use_margin=True)
        with pytest.raises(ConfigError, match="use_margin=True needs score_chosen and score_rejected.*Fix"):
            train_reward_model("tiny", marker_pairs(4, seed=0), config)
        assert not (tmp_path / "m").exists()  # nothing half-written

    def test_empty_dataset(self, tmp_path, no_models):
        from datasets import Dataset

        empty = Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
        with pytest.raises(ConfigError, match="preference data is empty"):
            train_reward_model("tiny", empty, tiny_config(tmp_path, "e"))

    def test_eval_fraction_that_holds_out_everything(self, tmp_path, no_models):
        with pytest.raises(ConfigError, match="holds out every one"):
            train_reward_model("tiny", marker_pairs(2, seed=0), tiny_config(tmp_path, "f", eval_fraction=0.99))


class TestHeldOutSplit:
    def test_carve_is_deterministic_and_keeps_prompts_whole(self):
        from rlhf_lab.data import load_preferences

        rows = [{"prompt": f"P{i // 2}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(400)]
        data = load_preferences(rows)
        train, held = reward_stage._carve(data, 0.1)
        again, _ = reward_stage._carve(data.shuffle(seed=1), 0.1)
        assert 20 < len(held) < 60 and len(train) + len(held) == 400

        def texts(d):
            return sorted(c[0]["content"] for c in d["chosen"])

        assert texts(train) == texts(again)  # the same split whatever the order
        assert not {p[0]["content"] for p in train["prompt"]} & {p[0]["content"] for p in held["prompt"]}


class TestEncoderBackbone:
    def test_minilm_trains_on_exactly_what_it_scores(self, tmp_path):
        """An encoder has no chat template: the stage hands TRL the ids `score` uses (sentence pairs)."""
        rows = scored_pairs()
        torch.manual_seed(0)  # the stage seeds the fresh head the same way with seed=0
        initial = load_reward_model("all-minilm-l6-v2")
        prompts = [r["prompt"] for r in rows]
        r_c = torch.tensor(initial(prompts, [r["chosen"] for r in rows]))
        r_r = torch.tensor(initial(prompts, [r["rejected"] for r in rows]))
        expected = -torch.nn.functional.logsigmoid(r_c - r_r).mean().item()
        loss = first_step_loss(tmp_path, "minilm", rows, backbone="all-minilm-l6-v2")
        assert loss == pytest.approx(expected, abs=1e-4)


class TestLora:
    def test_adapters_and_head_train_and_reload_identically(self, tmp_path):
        config = tiny_config(tmp_path, "lora", max_steps=2, eval_fraction=0, num_samples=0)
        run = train_reward_model("tiny", marker_pairs(16, seed=0), config, lora={"r": 4})
        trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n or ".score." in n for n in trainable)
        assert (run.output_dir / "model" / "adapter_model.safetensors").exists()
        prompts, texts = all_texts(marker_pairs(3, seed=5))
        assert load_reward_run(run.output_dir)(prompts, texts) == pytest.approx(run(prompts, texts), abs=1e-5)
