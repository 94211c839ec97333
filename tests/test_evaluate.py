"""Evaluation: statistics equal hand-computed values, bootstrap intervals cover the truth at about
their level, log-probabilities equal the ones generation sampled from, and evaluate / compare put
it together on tiny models with completions shown as escaped text."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import rlhf_lab as lab
from rlhf_lab.evaluation import stats
from rlhf_lab.evaluation.evaluate import _prompts_and_gold, completions_html
from rlhf_lab.evaluation.sampling import completion_logprobs, perplexity, sample, sequence_kl
from rlhf_lab.models.chat import tokenize_prompts
from rlhf_lab.runs import RunResult

PROMPTS = lab.task("concise").prompts("test")[:6]


class TestStats:
    def test_distinct_n(self):
        texts = ["a b a", "b c"]  # unigrams a b a b c: 3 of 5; bigrams (a b) (b a) (b c): 3 of 3
        assert stats.distinct_n(texts, 1) == pytest.approx(3 / 5)
        assert stats.distinct_n(texts, 2) == 1.0
        assert stats.distinct_n(["x x x x"], 1) == 0.25 and stats.distinct_n(["x x x x"], 2) == pytest.approx(1 / 3)
        assert stats.distinct_n(["one", ""], 2) == 0.0
        with pytest.raises(ValueError, match="n must be 1 or more"):
            stats.distinct_n(texts, 0)

    def test_win_rate_counts_ties_half(self):
        result = stats.win_rate([1, 2, 3, 4], [0, 2, 5, 4])
        assert (result["rate"], result["wins"], result["ties"], result["losses"], result["n"]) == (
            0.5,
            1,
            2,
            1,
            4,
        )
        assert stats.win_rate([1.0, 1.05], [1.0, 1.0], tol=0.1)["rate"] == 0.5
        assert stats.win_rate([3, 3], [1, 2])["rate"] == 1.0
        with pytest.raises(ValueError, match="one of each per prompt"):
            stats.win_rate([1, 2], [1])

    def test_mean_se_and_paired_difference(self):
        assert stats.mean_se([1, 2, 3, 4]) == pytest.approx((2.5, math.sqrt(5 / 3) / 2))
        assert stats.mean_se([7]) == (7.0, 0.0)
        diff = stats.paired_difference([1, 2, 3, 4], [0, 1, 2, 3])
        assert (diff["mean"], diff["lo"], diff["hi"], diff["significant"]) == (1.0, 1.0, 1.0, True)
        noisy = stats.paired_difference([1, -1, 1, -1], [0, 0, 0, 0])
        assert noisy["lo"] < 0 < noisy["hi"] and not noisy["significant"]

    def test_bootstrap_is_seeded_and_checks_input(self):
        values = np.random.default_rng(0).normal(size=30)
        assert stats.bootstrap_ci(values, seed=3) == stats.bootstrap_ci(values, seed=3)
        assert stats.bootstrap_ci(values, seed=3) != stats.bootstrap_ci(values, seed=4)
        lo, hi = stats.bootstrap_ci(values)
        assert lo < values.mean() < hi
        for bad, message in (([], "empty"), ([1.0, float("nan")], "non-finite")):
            with pytest.raises(ValueError, match=message):
                stats.bootstrap_ci(bad)
        with pytest.raises(ValueError, match="level must be between 0 and 1"):
            stats.bootstrap_ci(values, level=95)

    @pytest.mark.parametrize("level", [0.95, 0.8])
    def test_intervals_cover_the_true_mean_at_about_their_level(self, level):
        rng = np.random.default_rng(123)
        reps, n, true_mean = 300, 40, 1.0
        data = rng.normal(true_mean, 2.0, size=(reps, n))
        covered = [
            lo <= true_mean <= hi
            for lo, hi in (stats.bootstrap_ci(row, level=level, n_boot=1000, seed=i) for i, row in enumerate(data))
        ]
        coverage = float(np.mean(covered))
        assert level - 0.05 <= coverage <= min(level + 0.04, 0.99), coverage

    def test_paired_difference_covers_the_true_difference(self):
        rng = np.random.default_rng(7)
        shared = rng.normal(size=(200, 50))  # the prompt effect both policies share
        a, b = shared + 0.3 + rng.normal(0, 0.3, (200, 50)), shared + rng.normal(0, 0.3, (200, 50))
        results = [stats.paired_difference(x, y, n_boot=1000, seed=i) for i, (x, y) in enumerate(zip(a, b))]
        coverage = np.mean([r["lo"] <= 0.3 <= r["hi"] for r in results])
        assert 0.90 <= coverage <= 0.99
        assert (
            np.mean([r["significant"] for r in results]) > 0.95
        )  # 0.3 is 5 SE of the paired mean; unpaired it would be 1.5


class TestKL:
    def test_sequence_kl_on_known_logprobs(self):
        logprobs = torch.tensor([[-1.0, -2.0, float("nan")], [-0.5, 0.0, 0.0]])
        ref = torch.tensor([[-1.5, -1.0, 3.0], [-0.5, 9.0, 9.0]])
        mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        result = sequence_kl(logprobs, ref, mask)
        # log-ratios log p - log ref: sequence 1 (0.5, -1), sequence 2 (0)
        k1 = [0.5 - 1.0, 0.0]
        k3 = [(math.exp(-0.5) - 1 + 0.5) + (math.exp(1.0) - 1 - 1.0), 0.0]
        assert result["kl_k1"] == pytest.approx(np.mean(k1)) and result["kl_k3"] == pytest.approx(np.mean(k3))
        assert result["kl_k1_se"] == pytest.approx(np.std(k1, ddof=1) / math.sqrt(2))
        assert result["kl_k3_se"] == pytest.approx(np.std(k3, ddof=1) / math.sqrt(2))

    def test_monte_carlo_estimates_match_the_exact_kl(self):
        """Two-token sequences from p, with p and ref known exactly: both estimates land within 4 SE."""
        gen = torch.Generator().manual_seed(0)
        p1, r1 = torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.3, 0.3, 0.4])
        p2, r2 = (
            torch.tensor([[0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.9, 0.05, 0.05]]),
            torch.full((3, 3), 1 / 3),
        )
        p2 = p2 / p2.sum(-1, keepdim=True)
        exact = float((p1 * (p1 / r1).log()).sum() + (p1 * (p2 * (p2 / r2).log()).sum(-1)).sum())
        first = torch.multinomial(p1, 20000, replacement=True, generator=gen)
        second = torch.multinomial(p2[first], 1, generator=gen).squeeze(-1)
        logprobs = torch.stack([p1[first].log(), p2[first, second].log()], -1)
        ref_logprobs = torch.stack([r1[first].log(), r2[first, second].log()], -1)
        result = sequence_kl(logprobs, ref_logprobs, torch.ones_like(logprobs))
        for name in ("k1", "k3"):
            assert abs(result[f"kl_{name}"] - exact) < 4 * result[f"kl_{name}_se"], (name, result, exact)

    def test_perplexity(self):
        logprobs = torch.tensor([[math.log(0.5), math.log(0.25)], [math.log(0.5), -7.0]])
        mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
        assert perplexity(logprobs, mask) == pytest.approx(16 ** (1 / 3))
        with pytest.raises(ValueError, match="no completion tokens"):
            perplexity(logprobs, torch.zeros_like(mask))


class TestModels:
    def test_logprobs_equal_what_generation_sampled_from(self, tiny_policy):
        drawn = sample(tiny_policy, PROMPTS[:4], max_new_tokens=10, seed=3)
        logprobs, mask = completion_logprobs(tiny_policy, drawn, batch_size=3)  # batches pad differently
        tok = tiny_policy.tokenizer
        batch = tokenize_prompts(tok, PROMPTS[:4])
        torch.manual_seed(3)
        out = tiny_policy.model.generate(
            **batch,
            max_new_tokens=10,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new = out.sequences[:, batch["input_ids"].shape[1] :]
        assert [ids.tolist() for ids in new] == drawn.completion_ids  # no EOS from a tiny random model
        expected = torch.stack(out.logits, 1).float().log_softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        assert mask.sum() == 40
        torch.testing.assert_close(logprobs, expected, atol=1e-4, rtol=1e-4)

    def test_sample_cuts_at_eos_and_keeps_the_global_rng(self, tiny_policy):
        state = torch.random.get_rng_state()
        drawn = sample(tiny_policy, ["hi"] * 3, max_new_tokens=5, seed=0)
        assert torch.equal(torch.random.get_rng_state(), state)
        assert drawn.lengths == [5, 5, 5] and drawn.texts == tiny_policy.generate(
            ["hi"] * 3, max_new_tokens=5, temperature=1.0, top_k=0, seed=0
        )

    def test_against_itself(self, tiny_policy):
        result = lab.evaluate(
            tiny_policy, PROMPTS, ref=tiny_policy, baseline=tiny_policy, gold="concise", max_new_tokens=8
        )
        assert result["kl_k1"] == 0.0 and result["kl_k3"] == 0.0 and result["kl_k1_se"] == 0.0
        assert result["win_rate_gold"] == 0.5 and result["gold_diff_mean"] == 0.0
        drawn = sample(tiny_policy, PROMPTS, max_new_tokens=8)
        assert result["ppl_ref_samples"] == pytest.approx(perplexity(*completion_logprobs(tiny_policy, drawn)))

    def test_figures_with_a_reward_model_a_reference_and_a_task(self, tiny_policy, tiny_reward):
        other = lab.tiny_model("causal", seed=1)
        result = lab.evaluate(
            tiny_policy,
            PROMPTS,
            reward=tiny_reward,
            ref=other,
            baseline=other,
            gold="concise",
            max_new_tokens=8,
            n_boot=500,
        )
        assert result["n_prompts"] == len(PROMPTS)
        assert result["kl_k3"] > 0 and result["kl_k3_se"] > 0 and result["ppl_ref_samples"] > 1
        assert result["length_mean"] == 8 and 0 < result["distinct_1"] <= 1
        rows = result["samples"]
        scores = tiny_reward.score([r["prompt"] for r in rows], [r["completion"] for r in rows])
        assert [r["reward"] for r in rows] == pytest.approx(scores, abs=1e-5)
        assert result["reward_mean"] == pytest.approx(np.mean(scores), abs=1e-5)
        assert result["reward_lo"] <= result["reward_mean"] <= result["reward_hi"]
        assert result["gold_mean"] == 0.0 and result["win_rate_gold"] == 0.5  # random text earns no gold
        assert 0 <= result["win_rate_reward_lo"] <= result["win_rate_reward"] <= result["win_rate_reward_hi"] <= 1

    def test_callable_rewards_and_greedy_decoding(self, tiny_policy):
        result = lab.evaluate(
            tiny_policy,
            ["a", "b", "c"],
            reward=[lambda p, c: [len(x) for x in c], lambda p, c: [1.0] * len(c)],
            ref=lab.tiny_model("causal", seed=1),
            temperature=0,
            max_new_tokens=4,
        )
        greedy = tiny_policy.generate(["a", "b", "c"], max_new_tokens=4)
        assert [r["completion"] for r in result["samples"]] == greedy
        assert result["reward_mean"] == pytest.approx(np.mean([(len(t) + 1) / 2 for t in greedy]))
        assert result["kl_k3"] > 0  # measured on a second, purely sampled set

    def test_a_task_gives_its_test_prompts_and_gold(self):
        task = lab.task("arithmetic")
        assert _prompts_and_gold(task, None) == (task.prompts("test"), task)
        assert _prompts_and_gold("arithmetic", "concise") == (task.prompts("test"), "concise")
        rows = task.dataset("test")
        assert _prompts_and_gold(rows, None)[0] == rows["prompt"]

    def test_bad_prompts(self, tiny_policy):
        with pytest.raises(ValueError, match="no prompts"):
            lab.evaluate(tiny_policy, [])
        with pytest.raises(ValueError, match="no 'prompt'"):
            lab.evaluate(tiny_policy, __import__("datasets").Dataset.from_dict({"text": ["x"]}))
        with pytest.raises(KeyError, match="unknown task"):
            lab.evaluate(tiny_policy, "What is 2 + 2?")


class TestCompare:
    def test_table_and_panel(self, tiny_policy, tmp_path):
        run = RunResult(
            stage="ppo",
            model=lab.tiny_model("causal", seed=1).model,
            tokenizer=tiny_policy.tokenizer,
            metrics=pd.DataFrame(),
            summary={},
            output_dir=Path(tmp_path / "ppo-run"),
        )
        twin = lab.tiny_model("causal", seed=0)  # the same weights in another object
        prompts = lab.task("arithmetic").prompts("test")[:10]
        table = lab.compare([tiny_policy, run, twin], prompts, gold="arithmetic", max_new_tokens=6, n_boot=200)
        assert list(table.index) == ["tiny-causal-seed0", "ppo-run", "tiny-causal-seed0#2"]
        assert math.isnan(table.loc["tiny-causal-seed0", "win_rate_gold"])  # the baseline itself
        assert table.loc["tiny-causal-seed0#2", "win_rate_gold"] == 0.5  # the same weights: the same samples
        assert "gold_mean" in table.columns and "kl_k1" not in table.columns
        html = table.attrs["panel_html"]
        assert html.count("<tr>") == 1 + 8 and "ppo-run" in html
        first = table.attrs["samples"]["ppo-run"][0]["completion"]
        assert __import__("html").escape(first) in html

    def test_completions_are_escaped(self):
        html = completions_html(["<b>bold?</b>"], {"m<i>": [{"completion": "<script>alert(1)</script>", "gold": 1.0}]})
        assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "&lt;b&gt;bold?&lt;/b&gt;" in html and "m&lt;i&gt;" in html and "gold=1" in html

    def test_bad_input(self, tiny_policy):
        with pytest.raises(TypeError, match="list of runs or policies"):
            lab.compare(tiny_policy, PROMPTS)
        with pytest.raises(TypeError, match="unknown options.*temprature"):
            lab.compare([tiny_policy], PROMPTS, temprature=0.5)

    def test_evaluate_stays_callable_after_its_module_is_imported(self, tiny_policy):
        import rlhf_lab.evaluation.evaluate  # noqa: F401  (Python sets the module on the package over the function)

        assert lab.evaluate(tiny_policy, PROMPTS[:2], max_new_tokens=2)["n_prompts"] == 2


def test_compare_with_offloaded_runs_gives_the_same_table_one_model_at_a_time(tiny_policy, tmp_path, monkeypatch):
    import gc

    from rlhf_lab.evaluation import evaluate

    config = dict(max_steps=1, per_device_train_batch_size=2, batch_size=2, max_length=48, monitor=False,
                  disable_tqdm=True)  # fmt: skip
    runs = [
        lab.sft(tiny_policy, "starter", lab.SFTConfig(output_dir=str(tmp_path / f"sft{i}"), learning_rate=lr, **config))
        for i, lr in enumerate((1e-2, 3e-2))
    ]
    prompts = lab.task("arithmetic").prompts("test")[:6]
    options = dict(gold="arithmetic", ref=tiny_policy, max_new_tokens=6, n_boot=200, show=False)
    kept = lab.compare([tiny_policy, *runs], prompts, **options)
    for run in runs:
        run.offload()
    alive, real = [], evaluate.sample

    def watching(policy, *args, **kwargs):  # how many trained models are in memory while each one samples
        gc.collect()
        alive.append(sum(run.__dict__["_loaded"]() is not None for run in runs))
        return real(policy, *args, **kwargs)

    monkeypatch.setattr(evaluate, "sample", watching)
    offloaded = lab.compare([tiny_policy, *runs], prompts, **options)
    pd.testing.assert_frame_equal(kept, offloaded)
    assert max(alive) == 1 and len(alive) >= 2  # besides the baseline and reference, one run at a time
    gc.collect()
    assert all(run.__dict__["_loaded"]() is None for run in runs)  # and none once the table is made
