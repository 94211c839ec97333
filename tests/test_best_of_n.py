"""Best-of-n: n samples of the base, the reward's favourite kept; its closed-form KL; a policy everywhere."""

import math

import pytest

import rlhf_lab as lab
from rlhf_lab.evaluation.best_of_n import best_of_n_kl
from rlhf_lab.evaluation.sampling import sample

PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "What is 2+2?"]


def vowels(prompts, completions):
    return [sum(ch in "aeiou" for ch in c) / max(1, len(c)) for c in completions]


def test_the_kl_formula():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(16) == pytest.approx(2.7725887 - 0.9375)
    # increasing in n, and below log n (the KL of always picking one of n equally likely samples)
    values = [best_of_n_kl(n) for n in range(1, 65)]
    assert values == sorted(values) and all(v < math.log(n) for n, v in enumerate(values, start=1) if n > 1)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n must be a whole number >= 1"):
            best_of_n_kl(bad)


def test_n_equal_1_is_the_base_policy(tiny_policy):
    bon = lab.best_of_n(tiny_policy, vowels, n=1)
    assert bon.kl == 0.0
    base = sample(tiny_policy, PROMPTS, max_new_tokens=6, seed=3)
    mine = sample(bon, PROMPTS, max_new_tokens=6, seed=3)
    assert mine.texts == base.texts and mine.completion_ids == base.completion_ids
    assert bon.generate(PROMPTS, max_new_tokens=6, seed=5) == tiny_policy.generate(
        PROMPTS, max_new_tokens=6, temperature=1.0, seed=5
    )


def test_it_keeps_the_best_of_its_samples(tiny_policy):
    n = 6
    bon = lab.best_of_n(tiny_policy, vowels, n=n)
    drawn = sample(tiny_policy, [p for p in PROMPTS for _ in range(n)], max_new_tokens=6, seed=1)
    chosen = sample(bon, PROMPTS, max_new_tokens=6, seed=1)
    for i, text in enumerate(chosen.texts):
        candidates = drawn.texts[i * n : (i + 1) * n]
        assert text in candidates and vowels([], [text])[0] == max(vowels([], candidates))
    base_mean = sum(vowels([], drawn.texts[::n])) / len(PROMPTS)
    assert sum(vowels([], chosen.texts)) / len(PROMPTS) > base_mean


def test_evaluate_and_compare_take_it_and_report_the_closed_form_kl(tiny_policy):
    bon = lab.best_of_n(tiny_policy, vowels, n=4)
    figures = lab.evaluate(bon, PROMPTS, reward=vowels, ref=tiny_policy, baseline=tiny_policy, max_new_tokens=6)
    assert figures["kl_k1"] == pytest.approx(math.log(4) - 0.75) and figures["ppl_ref_samples"] is None
    assert figures["win_rate_reward"] > 0.5
    table = lab.compare([tiny_policy, bon], PROMPTS, reward=vowels, max_new_tokens=6, show=False)
    assert list(table.index) == [tiny_policy.name, bon.name]
    assert table.loc[bon.name, "reward_mean"] > table.loc[tiny_policy.name, "reward_mean"]
    other = lab.tiny_model("causal", seed=9)
    with pytest.raises(ValueError, match="KL is known only against its base policy"):
        lab.evaluate(bon, PROMPTS, ref=other, max_new_tokens=4)


def test_pair_generator_samples_it(tiny_policy):
    bon = lab.best_of_n(tiny_policy, vowels, n=3)
    with lab.PairGenerator([bon, tiny_policy], PROMPTS[:2], prefetch=0, sampling={"max_new_tokens": 6}) as pairs:
        items = list(pairs)
    assert len(items) == 2 and {r["model"] for r in items[0]["responses"]} == {bon.name, tiny_policy.name}


def test_greedy_best_of_n_is_refused(tiny_policy):
    with pytest.raises(ValueError, match="best-of-n needs sampling"):
        lab.best_of_n(tiny_policy, vowels, n=3).generate(PROMPTS, temperature=0.0)
