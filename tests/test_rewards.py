"""The one reward adapter (`as_scorer`), its validation and combinations, and running reward normalization."""

import math

import numpy as np
import pytest
import torch

from rlhf_lab.rewards import RewardEnsemble, RewardFunction, RunningNorm, as_scorer, combine

PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "What is 2+2?"]
COMPLETIONS = ["hi", "blue, or maybe green", "one two three", "4"]


def length_reward(prompts, completions):
    return [float(len(c)) for c in completions]


def word_reward(prompts, completions):
    return [float(len(c.split())) for c in completions]


class FixedScorer:
    """Stands in for a RewardRun: scores come from a table, with the reward stage's score() signature."""

    def __init__(self, values, name="fixed"):
        self.values, self.name, self.calls = list(values), name, []

    def score(self, prompts, completions, **kwargs):
        self.calls.append(kwargs)
        return self.values[: len(completions)]


def test_callable_gives_float64_scores():
    fn = as_scorer(length_reward)
    assert isinstance(fn, RewardFunction)
    scores = fn(PROMPTS, COMPLETIONS)
    assert scores.dtype == np.float64 and scores.shape == (4,)
    assert scores.tolist() == [2.0, 20.0, 13.0, 1.0]
    combined, parts = fn.components(PROMPTS, COMPLETIONS)
    assert np.array_equal(combined, scores) and parts == {"reward (length_reward)": [2.0, 20.0, 13.0, 1.0]}
    assert as_scorer(fn) is fn  # already adapted: used as it is


def test_reward_model_bundle_and_model_tokenizer_pair(tiny_reward):
    expected = tiny_reward.score(PROMPTS, COMPLETIONS)
    bundle_fn = as_scorer(tiny_reward, batch_size=3)  # batches of 3 then 1: same scores
    np.testing.assert_allclose(bundle_fn(PROMPTS, COMPLETIONS), expected, atol=1e-5)
    assert bundle_fn.reward_models == [tiny_reward]
    pair_fn = as_scorer((tiny_reward.model, tiny_reward.tokenizer))
    np.testing.assert_allclose(pair_fn(PROMPTS, COMPLETIONS), expected, atol=1e-5)
    assert "LlamaForSequenceClassification" in pair_fn.names[0]
    # a pair inside a list is still one member, next to a callable
    mixed = as_scorer([(tiny_reward.model, tiny_reward.tokenizer), length_reward], weights=[1.0, 0.5])
    want = np.array(expected) + 0.5 * np.array(length_reward(PROMPTS, COMPLETIONS))
    np.testing.assert_allclose(mixed(PROMPTS, COMPLETIONS), want, rtol=1e-5, atol=1e-5)


def test_objects_with_score_get_batch_size():
    scorer = FixedScorer([0.5, -1.0, 2.0, 0.0])
    fn = as_scorer(scorer, batch_size=7)
    assert fn(PROMPTS, COMPLETIONS).tolist() == [0.5, -1.0, 2.0, 0.0]
    assert scorer.calls == [{"batch_size": 7}]


def test_reward_ensemble_is_its_members_under_its_own_aggregate():
    members = [FixedScorer([1.0, 2.0, 3.0, 4.0], "m0"), FixedScorer([3.0, 2.0, 1.0, 0.0], "m1")]
    ensemble = RewardEnsemble(members=members, aggregate="mean_minus_std", lam=0.5)
    # mean = [2, 2, 2, 2]; population std = [1, 0, 1, 2]
    assert ensemble.score(PROMPTS, COMPLETIONS) == [1.5, 2.0, 1.5, 1.0]
    fn = as_scorer(ensemble)
    assert fn(PROMPTS, COMPLETIONS).tolist() == [1.5, 2.0, 1.5, 1.0]
    assert fn.member_scores(PROMPTS, COMPLETIONS).tolist() == [[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]]
    assert fn.names == ["reward[0] (m0)", "reward[1] (m1)"]
    # inside a list an ensemble is one member, scored by its own aggregate
    assert as_scorer([ensemble, length_reward], weights=[1.0, 0.0])(PROMPTS, COMPLETIONS).tolist() == [
        1.5,
        2.0,
        1.5,
        1.0,
    ]


def test_combine_is_the_one_aggregation():
    matrix = [[1.0, 2.0], [3.0, 6.0]]
    assert combine(matrix).tolist() == [2.0, 4.0]
    assert combine(matrix, aggregate="mean_minus_std", lam=2.0).tolist() == [0.0, 0.0]
    assert combine(matrix, weights=[1.0, -1.0]).tolist() == [-2.0, -4.0]
    with pytest.raises(ValueError, match="aggregate must be one of mean, mean_minus_std"):
        combine(matrix, aggregate="max")


def test_gold_task_is_a_reward():
    import rlhf_lab as lab

    fn = as_scorer(lab.task("arithmetic"))
    prompt = "What is 7 + 5? Reply with the number only."
    assert fn([prompt] * 3, ["12", "It is 12", "13"]).tolist() == [1.0, 0.5, 0.0]


def test_a_name_is_not_a_reward():
    with pytest.raises(TypeError, match="is a name, not a reward"):
        as_scorer("runs/reward")


def test_weighted_list():
    fn = as_scorer([length_reward, word_reward], weights=[0.1, -2.0])
    # lengths [2, 20, 13, 1], words [1, 4, 3, 1]
    want = [0.1 * 2 - 2 * 1, 0.1 * 20 - 2 * 4, 0.1 * 13 - 2 * 3, 0.1 * 1 - 2 * 1]
    np.testing.assert_allclose(fn(PROMPTS, COMPLETIONS), want, rtol=1e-6)
    _, parts = fn.components(PROMPTS, COMPLETIONS)
    assert list(parts) == ["reward[0] (length_reward)", "reward[1] (word_reward)"]


@pytest.mark.parametrize(
    ("aggregate", "lam", "want"),
    [
        ("mean", 1.0, [1.5, 12.0, 8.0, 1.0]),
        # population std of each (length, words) column: [0.5, 8, 5, 0]
        ("mean_minus_std", 1.0, [1.0, 4.0, 3.0, 1.0]),
        ("mean_minus_std", 0.5, [1.25, 8.0, 5.5, 1.0]),
    ],
)
def test_ensemble_aggregation(aggregate, lam, want):
    fn = as_scorer([length_reward, word_reward], aggregate=aggregate, lam=lam)
    np.testing.assert_allclose(fn(PROMPTS, COMPLETIONS), want, rtol=1e-6)


def test_bad_arguments(tiny_reward):
    with pytest.raises(ValueError, match="got 1 weights for 2 rewards"):
        as_scorer([length_reward, word_reward], weights=[1.0])
    with pytest.raises(ValueError, match="aggregate must be one of mean, mean_minus_std"):
        as_scorer([length_reward], aggregate="median")
    with pytest.raises(ValueError, match="cannot be combined with aggregate='mean_minus_std'"):
        as_scorer([length_reward, word_reward], weights=[1, 1], aggregate="mean_minus_std")
    with pytest.raises(ValueError, match="at least one reward"):
        as_scorer([])
    with pytest.raises(TypeError, match=r"reward\[1\]: expected a RewardModel.*got int"):
        as_scorer([length_reward, 3])
    with pytest.raises(TypeError, match=r"bare LlamaForSequenceClassification; pass it with its tokenizer"):
        as_scorer(tiny_reward.model)
    with pytest.raises(ValueError, match="got 4 prompts but 3 completions"):
        as_scorer(length_reward)(PROMPTS, COMPLETIONS[:3])


def test_wrong_length_names_the_reward():
    def short(prompts, completions):
        return [1.0] * (len(completions) - 1)

    fn = as_scorer([length_reward, short])
    with pytest.raises(ValueError, match=r"reward\[1\] \(short\) returned 3 scores \(shape \(3,\)\) for 4 completions"):
        fn(PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match=r"reward \(<lambda>\) returned a scalar scores"):
        as_scorer(lambda p, c: 1.0)(PROMPTS, COMPLETIONS)


def test_nan_and_non_numbers_raise():
    def nan_reward(prompts, completions):
        return [0.0, math.nan, 1.0, math.inf]

    with pytest.raises(ValueError, match=r"reward \(nan_reward\) returned non-finite scores at positions \[1, 3\]"):
        as_scorer(nan_reward)(PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match=r"reward \(<lambda>\) returned \['a', 'b', 'c', 'd'\], which is not a list"):
        as_scorer(lambda p, c: list("abcd"))(PROMPTS, COMPLETIONS)


def test_tensor_and_column_outputs_are_accepted():
    fn = as_scorer(lambda p, c: torch.arange(len(c), dtype=torch.float64).unsqueeze(1))
    assert fn(PROMPTS, COMPLETIONS).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_running_norm_matches_numpy_over_concatenated_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=n) for n in (1, 7, 16, 3, 64)]
    norm = RunningNorm()
    seen = []
    for batch in batches:
        out = norm.normalize(torch.tensor(batch))  # float64 in, float64 out: compare tightly
        seen.append(batch)
        everything = np.concatenate(seen)
        assert norm.count == everything.size
        assert norm.mean == pytest.approx(everything.mean(), abs=1e-12)
        assert norm.std == pytest.approx(everything.std(), abs=1e-12)
        want = (batch - everything.mean()) / np.sqrt(everything.var() + norm.eps)
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-10, atol=1e-10)
        assert out.dtype == torch.float64
    assert norm.normalize(torch.ones(2, dtype=torch.float32)).dtype == torch.float32


def test_running_norm_clip_no_update_and_nan():
    norm = RunningNorm(clip=1.0)
    out = norm.normalize(torch.tensor([0.0, 0.0, 0.0, 10.0]))
    assert out.max().item() == 1.0 and out.min().item() >= -1.0
    before = norm.state_dict()
    norm.normalize(torch.tensor([100.0]), update=False)
    assert norm.state_dict() == before
    with pytest.raises(ValueError, match="non-finite"):
        norm.update([1.0, float("nan")])
    with pytest.raises(ValueError, match="clip must be"):
        RunningNorm(clip=0.0)


def test_running_norm_state_round_trip_is_exact():
    rng = np.random.default_rng(1)
    a, b = RunningNorm(clip=3.0), RunningNorm()
    for _ in range(5):
        a.update(rng.normal(size=9))
    b.load_state_dict(a.state_dict())
    x = torch.tensor(rng.normal(size=11))
    # both continue identically: same output, same statistics, bit for bit
    assert torch.equal(a.normalize(x), b.normalize(x))
    assert a.state_dict() == b.state_dict()
