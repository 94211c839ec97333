"""PairGenerator: valid items, the blind A/B mapping, prefetch, worker errors, active learning,
and human_win_rate. Fake policies keep the logic tests fast; the tiny model proves the real path."""

import itertools
import math
import time

import pytest

from rlhf_lab import tiny_model
from rlhf_lab.labeling.pairs import PairGenerator, disagreement, human_win_rate, uncertainty
from rlhf_lab.labeling.store import PreferenceStore


class FakePolicy:
    """Deterministic text from (name, prompt, seed); optionally slow, failing or degenerate."""

    def __init__(self, name, delay=0.0, fail_on=None, text=None):
        self.name, self.delay, self.fail_on, self.text = name, delay, fail_on, text

    def generate(self, prompts, *, seed=None, **sampling):
        time.sleep(self.delay)
        if self.fail_on is not None and prompts[0] == self.fail_on:
            raise RuntimeError(f"boom on {prompts[0]!r}")
        if self.text is not None:
            return [self.text(prompts[0], seed)]
        return [f"{self.name} answers {prompts[0]} (seed {seed}, t={sampling['temperature']})"]


class FakeReward:
    """Scores looked up by the response's prefix (the prompt it answers, and its model)."""

    def __init__(self, table):
        self.table = table

    def score(self, prompts, completions):
        return [self.table[(p, c.split(" ")[0])] for p, c in zip(prompts, completions)]


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


@pytest.fixture
def store(tmp_path):
    with PreferenceStore(tmp_path / "labels.sqlite") as store:
        yield store


class TestItems:
    def test_one_tiny_policy_gives_valid_items(self, tiny_policy, store):
        sampling = [{"temperature": 0.7, "max_new_tokens": 6}, {"temperature": 1.0, "max_new_tokens": 6}]
        with PairGenerator(tiny_policy, ["Hi there", "Name a colour."], sampling=sampling) as pairs:
            items = list(pairs)
        assert [item["prompt"] for item in items] == ["Hi there", "Name a colour."]
        for item in items:
            texts = [r["text"] for r in item["responses"]]
            assert len(texts) == 2 and all(t.strip() for t in texts) and texts[0] != texts[1]
            assert sorted(r["sampling"]["temperature"] for r in item["responses"]) == [0.7, 1.0]
            assert all(isinstance(r["seed"], int) for r in item["responses"])
            assert item["metadata"]["models"] == [tiny_policy.name] * 2
            store.add_item(**item)  # the store accepts every item as it is
        # a response is reproducible from what it records
        first = items[0]["responses"][0]
        again = tiny_policy.generate([items[0]["prompt"]], seed=first["seed"], **first["sampling"])
        assert again == [first["text"]]

    def test_two_models_randomize_positions_and_record_the_mapping(self):
        a, b = FakePolicy("alpha"), FakePolicy("beta")
        with PairGenerator([a, b], [f"q{i}" for i in range(20)], seed=7) as pairs:
            items = list(pairs)
        firsts = []
        for item in items:
            models = item["metadata"]["models"]
            assert sorted(models) == ["alpha", "beta"]
            assert [r["text"].split(" ")[0] for r in item["responses"]] == models  # mapping is the truth
            assert [r["model"] for r in item["responses"]] == models
            assert item["metadata"]["generator"]["models"] == ["alpha", "beta"]
            firsts.append(models[0])
        assert 3 <= firsts.count("alpha") <= 17  # both orders occur (seeded shuffle)
        with PairGenerator([a, b], [f"q{i}" for i in range(20)], seed=7, prefetch=0) as again:
            assert [i["metadata"]["models"] for i in again] == [i["metadata"]["models"] for i in items]

    def test_prompts_as_rows_and_conversations(self):
        rows = [{"prompt": [{"role": "user", "content": "Hi"}]}, "Plain"]
        items = list(PairGenerator(FakePolicy("m"), rows, prefetch=0))
        assert items[0]["prompt"] == [{"role": "user", "content": "Hi"}] and items[1]["prompt"] == "Plain"

    def test_empty_or_identical_samples_are_redrawn_then_dropped(self):
        def text(prompt, seed):
            if prompt == "never":
                return "same"  # identical on every draw: given up on
            return "" if seed % 2 else f"ok {seed}"  # empty about half the time: redrawn

        pairs = PairGenerator(FakePolicy("m", text=text), ["a", "never", "b"], retries=20, prefetch=0)
        items = list(pairs)
        assert [i["prompt"] for i in items] == ["a", "b"]
        assert pairs.dropped == [(1, "response 1 repeats response 0")]
        assert all(r["text"].startswith("ok") for i in items for r in i["responses"])


class TestPrefetch:
    def test_next_is_fast_once_prefetched(self):
        slow = FakePolicy("slow", delay=0.05)  # 0.1 s per item (two responses)
        with PairGenerator(slow, [f"q{i}" for i in range(6)], prefetch=2) as pairs:
            for _ in range(3):  # a decision, then the person reads the next pair for a while
                deadline = time.monotonic() + 5
                while pairs.ready < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                start = time.perf_counter()
                next(pairs)
                assert time.perf_counter() - start < 0.02
        on_demand = PairGenerator(slow, ["q"], prefetch=0)
        start = time.perf_counter()
        next(on_demand)
        assert time.perf_counter() - start >= 0.1  # without prefetch the wait is the generation

    def test_tiny_model_next_item_ready(self, tiny_policy):
        prompts = ["Hi", "Name a colour.", "Count to three."]
        with PairGenerator(tiny_policy, prompts, sampling={"max_new_tokens": 4}, prefetch=3) as pairs:
            deadline = time.monotonic() + 30
            while pairs.ready < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            start = time.perf_counter()
            assert [next(pairs)["prompt"] for _ in prompts] == prompts
            assert time.perf_counter() - start < 0.05
            assert pairs.remaining == 0

    def test_worker_exception_reaches_the_consumer(self):
        pairs = PairGenerator(FakePolicy("m", fail_on="bad"), ["good", "bad", "never"])
        assert next(pairs)["prompt"] == "good"
        with pytest.raises(RuntimeError, match="boom on 'bad'"):
            next(pairs)
        with pytest.raises(RuntimeError, match="boom"):  # sticky, not a silent StopIteration
            next(pairs)
        pairs.close()

    def test_on_demand_exception_too(self):
        with pytest.raises(ValueError, match=r"prompts\[1\].*non-empty string"):
            list(PairGenerator(FakePolicy("m"), ["ok", "  "], prefetch=0))

    def test_close_stops_an_endless_generator(self):
        endless = (f"q{i}" for i in itertools.count())
        with PairGenerator(FakePolicy("m"), endless, prefetch=2) as pairs:
            next(pairs)
            assert pairs.remaining is None
        assert not pairs._thread.is_alive()
        with pytest.raises(StopIteration):
            next(pairs)


class TestActiveLearning:
    # margins (alpha - beta) per prompt: 1.0, 0.1, -3.0, 0.5 -> uncertainty .231, .025, .453, .122
    TABLE = {
        ("p0", "alpha"): 1.0,
        ("p0", "beta"): 0.0,
        ("p1", "alpha"): 0.3,
        ("p1", "beta"): 0.2,
        ("p2", "alpha"): -1.0,
        ("p2", "beta"): 2.0,
        ("p3", "alpha"): 0.5,
        ("p3", "beta"): 0.0,
    }

    def generate(self, reward, active, window=4):
        models = [FakePolicy("alpha"), FakePolicy("beta")]
        prompts = ["p0", "p1", "p2", "p3"]
        return list(PairGenerator(models, prompts, reward_model=reward, active=active, window=window))

    def test_uncertainty_order_matches_hand_computed(self):
        items = self.generate(FakeReward(self.TABLE), "uncertainty")
        assert [i["prompt"] for i in items] == ["p1", "p3", "p0", "p2"]
        by_hand = {
            "p0": sigmoid(1.0) - 0.5,
            "p1": sigmoid(0.1) - 0.5,
            "p2": 0.5 - sigmoid(-3.0),
            "p3": sigmoid(0.5) - 0.5,
        }
        for item in items:
            assert item["metadata"]["generator"]["uncertainty"] == pytest.approx(by_hand[item["prompt"]])
            for r in item["responses"]:
                assert r["metadata"]["reward"] == self.TABLE[(item["prompt"], r["model"])]

    def test_order_is_per_window(self):
        items = self.generate(FakeReward(self.TABLE), "uncertainty", window=2)
        assert [i["prompt"] for i in items] == ["p1", "p0", "p3", "p2"]

    def test_disagreement_order_with_an_ensemble(self):
        other = dict(self.TABLE)
        other[("p2", "alpha")] = 5.0  # members flip on p2 (margin -3 vs +3): most disagreement
        other[("p0", "alpha")] = -1.0  # p0: margin +1 vs -1
        items = self.generate([FakeReward(self.TABLE), FakeReward(other)], "disagreement")
        assert [i["prompt"] for i in items] == ["p2", "p0", "p1", "p3"]
        p2 = items[0]["metadata"]["generator"]["disagreement"]
        assert p2 == pytest.approx((sigmoid(3.0) - sigmoid(-3.0)) / 2)  # std of two values

    def test_score_functions(self):
        assert uncertainty([0.0, 0.0]) == 0.0
        assert uncertainty([3.0, 0.0, 2.9]) == pytest.approx(sigmoid(0.1) - 0.5)  # closest pair
        assert disagreement([[1.0, 0.0], [1.0, 0.0]]) == 0.0


class TestArguments:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"n": 1}, "at least 2"),
            ({"active": "random"}, "active='random' is unknown"),
            ({"active": "uncertainty"}, "reward_model"),
            ({"active": "disagreement", "reward_model": FakeReward({})}, "several reward models"),
            ({"sampling": {"seed": 3}}, "seeds come from seed="),
            ({"sampling": [{}, {}, {}]}, "3 settings for n=2"),
            ({"prefetch": -1}, "prefetch"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            PairGenerator(FakePolicy("m"), ["q"], **kwargs)

    def test_models_must_match_n_and_have_distinct_names(self):
        with pytest.raises(ValueError, match="pass n=3"):
            PairGenerator([FakePolicy("a"), FakePolicy("b"), FakePolicy("c")], ["q"])
        with pytest.raises(ValueError, match="share a name"):
            PairGenerator([FakePolicy("a"), FakePolicy("a")], ["q"])
        items = list(PairGenerator({"x": FakePolicy("a"), "y": FakePolicy("a")}, ["q"], prefetch=0))
        assert sorted(items[0]["metadata"]["models"]) == ["x", "y"]


class TestHumanWinRate:
    def test_blind_ab_win_rate_with_ci(self, store):
        with PairGenerator([FakePolicy("ppo"), FakePolicy("sft")], [f"q{i}" for i in range(10)]) as pairs:
            items = list(pairs)
        for index, item in enumerate(items):
            item_id = store.add_item(**item)
            ppo_at = item["metadata"]["models"].index("ppo")
            decision = "tie" if index == 9 else ("AB"[ppo_at] if index < 7 else "AB"[1 - ppo_at])
            store.label(item_id, decision, "ana")
        result = human_win_rate(store)
        assert (result.model_a, result.model_b) == ("ppo", "sft")  # the order given
        assert (result.wins, result.losses, result.ties) == (7, 2, 1)
        assert result.rate == pytest.approx(7 / 9)
        low, high = result.ci
        assert low < 7 / 9 < high
        assert human_win_rate(store, "sft", "ppo").wins == 2

    def test_names_needed_with_more_than_two_models(self, store):
        for models in (["a", "b"], ["a", "c"]):
            store.add_item("q", [{"text": f"{m} says"} for m in models], metadata={"models": models})
        with pytest.raises(ValueError, match=r"\['a', 'b', 'c'\].*model_a= and model_b="):
            human_win_rate(store)
        assert human_win_rate(store, "a", "c").n == 0


def test_two_tiny_models_end_to_end(tiny_policy, store):
    other = tiny_model("causal", seed=1)
    with PairGenerator([tiny_policy, other], ["Hi", "Bye"], sampling={"max_new_tokens": 4}) as pairs:
        for item in pairs:
            stored = store.get_item(store.add_item(**item))
            assert stored.models == item["metadata"]["models"]
            assert sorted(stored.models) == sorted([tiny_policy.name, other.name])


def test_a_slow_first_pair_shows_progress_while_it_is_prepared(capsys):
    slow = FakePolicy("slow", delay=0.8)  # two samples per item: 1.6 s before the first one is ready
    with PairGenerator(slow, ["Say hi.", "Name a colour."], prefetch=1) as pairs:
        first = next(pairs)
    assert first["prompt"] == "Say hi."
    err = capsys.readouterr().err
    assert "labelling: pair 0/2" in err and "preparing pair 1 of 2" in err, err
    assert "labelling: pair 0/2" in err and "ready" in err.splitlines()[-1], err

    fast = FakePolicy("fast")
    with PairGenerator(fast, ["Say hi."], prefetch=1) as pairs:
        next(pairs)
    assert "labelling" not in capsys.readouterr().err, "a quick item needs no progress line"
