"""Gold tasks, the simulated annotator and the preference sets it builds: gold on hand-written
completions, Bradley-Terry noise at the stated temperature, and pairs that train a reward model."""

import math

import numpy as np
import pytest

import rlhf_lab as lab
from rlhf_lab.labeling.annotator import SimulatedAnnotator, label_pairs, preference_dataset
from rlhf_lab.labeling.panel import LabelingPanel
from rlhf_lab.labeling.session import LabelingSession
from rlhf_lab.labeling.store import PreferenceStore
from rlhf_lab.tasks import ArithmeticTask, ConciseTask

VOLCANO = "What is a volcano? Answer in one short sentence that uses the words 'lava' and 'eruption'."
SUM = "What is 7 + 5? Reply with the number only."
DIFF = "What is 15 - 3? Reply with the number only."


def words(n):
    return " ".join(["word"] * n)


class TestTasks:
    def test_registry(self):
        assert set(lab.TASKS) == {"concise", "arithmetic", "variety"}
        assert lab.task("concise") is lab.TASKS["concise"]
        with pytest.raises(KeyError, match="concise, arithmetic, variety"):
            lab.task("poetry")

    @pytest.mark.parametrize("name", ["concise", "arithmetic", "variety"])
    def test_splits_are_fixed_disjoint_and_gradable(self, name):
        task = lab.task(name)
        train, test = task.prompts("train"), task.prompts("test")
        assert len(train) >= 60 and len(test) >= 20
        assert not set(train) & set(test)
        fresh = type(task)()  # generated again from scratch: the same prompts in the same order
        assert (fresh.prompts("train"), fresh.prompts("test")) == (train, test)
        assert all(task.gold(p, "") == 0.0 for p in test)  # every prompt parses; nothing earns gold
        with pytest.raises(ValueError, match="'train' or 'test'"):
            task.prompts("validation")

    def test_variety_is_the_share_of_distinct_character_trigrams(self):
        task = lab.task("variety")
        prompt = task.prompts("train")[0]
        assert task.gold(prompt, "abcd") == 1.0  # abc, bcd
        assert task.gold(prompt, "aaaa") == 0.5  # aaa twice
        assert task.gold(prompt, "Ab") == 0.0 and task.gold(prompt, "") == 0.0
        assert task.gold(prompt, "No no NO no") < task.gold(prompt, "No, thanks; maybe later.")

    def test_concise_test_split_holds_out_whole_topics(self):
        task = ConciseTask()
        topic = lambda p: task.keywords(p)  # noqa: E731
        assert not {topic(p) for p in task.prompts("train")} & {topic(p) for p in task.prompts("test")}

    def test_dataset_is_the_prompts_format(self):
        data = lab.task("arithmetic").dataset("test")
        assert data.column_names == ["prompt"]
        assert data[0]["prompt"] == [{"role": "user", "content": lab.task("arithmetic").prompts("test")[0]}]

    @pytest.mark.parametrize(
        "completion, expected",
        [
            ("A volcano is a mountain where lava bursts out in an eruption.", 1.0),  # 11 words, both
            ("Eruptions of a volcano pour LAVA over the land.", 1.0),  # plural and case do not matter
            ("A volcano erupts and its lava flows down.", 1.0),  # the stem "erupt" counts
            ("A volcano is a mountain where hot lava comes out.", 0.5),  # one of two words
            ("Lava eruption.", 1 * (0.3 + 0.7 * 2 / 5)),  # 2 words: brevity 2/5
            (f"{words(28)} lava eruption", 0.3 + 0.7 * (40 - 30) / 25),  # 30 words
            (f"{words(60)} lava eruption", 0.3),  # long and on topic: the floor
            ("I like trains very much indeed.", 0.0),  # short and off topic
            ("", 0.0),
        ],
    )
    def test_concise_gold(self, completion, expected):
        assert lab.task("concise").gold(VOLCANO, completion) == pytest.approx(expected)

    def test_stem(self):
        from rlhf_lab.tasks import stem

        assert [stem(w) for w in ("eruption", "plants", "measure", "slowly", "ice", "lava", "pumps")] == [
            "erupt",
            "plant",
            "measur",
            "slow",
            "ice",
            "lava",
            "pump",
        ]

    def test_gold_reads_strings_conversations_and_rows(self):
        task = lab.task("concise")
        text = "Lava flows out in an eruption of a volcano."
        conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": VOLCANO}]
        values = {
            task.gold(VOLCANO, text),
            task.gold(conversation, text),
            task.gold({"prompt": conversation}, text),
        }
        assert values == {1.0}

    @pytest.mark.parametrize(
        "prompt, completion, expected",
        [
            (SUM, "12", 1.0),
            (SUM, " **12**.\n", 1.0),
            (SUM, '"12"', 1.0),
            (SUM, "7 + 5 = 12.", 0.5),
            (SUM, "12 apples and 3 pears", 0.0),
            (SUM, "13", 0.0),
            (SUM, "112", 0.0),
            (DIFF, "12", 1.0),
            (DIFF, "The answer is 12", 0.5),
            (DIFF, "15 - 3", 0.0),
            (DIFF, "-12", 0.0),
            (DIFF, "`12`", 1.0),
        ],
    )
    def test_arithmetic_gold(self, prompt, completion, expected):
        assert lab.task("arithmetic").gold(prompt, completion) == expected

    def test_answers(self):
        assert ArithmeticTask().answer(SUM) == "12" and ArithmeticTask().answer(DIFF) == "12"

    def test_foreign_prompt_is_named(self):
        with pytest.raises(ValueError, match="not an arithmetic-task prompt.*volcano"):
            lab.task("arithmetic").gold(VOLCANO, "12")

    def test_task_is_a_batch_reward(self):
        from rlhf_lab.rewards import as_scorer

        task = lab.task("arithmetic")
        scores = as_scorer(task)([SUM, SUM, DIFF], ["12", "7 + 5 = 12", "3"])
        assert scores.tolist() == [1.0, 0.5, 0.0]
        with pytest.raises(ValueError, match="2 prompts but 1 completions"):
            task([SUM, SUM], ["12"])


def by_value(prompt, completion):
    """A gold that reads the completion as a number: pairs with any gold difference, by hand."""
    return float(completion)


class TestAnnotator:
    def test_noiseless_picks_the_higher_gold_and_ties_equal_gold(self):
        annotator = SimulatedAnnotator(by_value, temperature=0, seed=0)
        labels = annotator.label(["p"] * 4, ["1", "0", "0.5", "0.2"], ["0", "1", "0.5", "0.21"])
        assert labels == ["A", "B", "tie", "B"]
        assert annotator.label(["p"] * 4, ["1", "0", "0.5", "0.2"], ["0", "1", "0.5", "0.21"]) == labels

    def test_ties_false_flips_a_fair_coin_on_equal_gold(self):
        labels = SimulatedAnnotator(by_value, temperature=0, ties=False).label(["p"] * 4000, ["1"] * 4000, ["1"] * 4000)
        assert set(labels) == {"A", "B"} and abs(labels.count("A") / 4000 - 0.5) < 0.03

    def test_large_temperature_is_a_coin_flip(self):
        labels = SimulatedAnnotator(by_value, temperature=1e6, seed=1).label(["p"] * 4000, ["1"] * 4000, ["0"] * 4000)
        assert abs(labels.count("A") / 4000 - 0.5) < 0.03

    @pytest.mark.parametrize("temperature", [0.1, 0.5])
    def test_preference_rate_follows_the_bradley_terry_sigmoid(self, temperature):
        annotator = SimulatedAnnotator(by_value, temperature=temperature, seed=2)
        for diff in (-0.3, -0.1, 0.05, 0.2, 0.4):
            n = 4000
            labels = annotator.decide(np.full(n, diff), np.zeros(n))
            expected = 1 / (1 + math.exp(-diff / temperature))
            assert labels.count("A") / n == pytest.approx(expected, abs=0.03), diff
            assert annotator.probability(diff, 0.0) == pytest.approx(expected)

    def test_seeded(self):
        make = lambda seed: SimulatedAnnotator(by_value, temperature=1.0, seed=seed)  # noqa: E731
        pairs = (["p"] * 200, ["0.3"] * 200, ["0"] * 200)
        assert make(5).label(*pairs) == make(5).label(*pairs)
        assert make(5).label(*pairs) != make(6).label(*pairs)

    @pytest.mark.parametrize("temperature", [-1.0, float("nan"), "hot"])
    def test_bad_temperature(self, temperature):
        with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
            SimulatedAnnotator(by_value, temperature=temperature)

    def test_bad_gold(self):
        with pytest.raises(TypeError, match="gold must be a Task"):
            SimulatedAnnotator(42)
        with pytest.raises(ValueError, match="one finite number per completion"):
            SimulatedAnnotator(lambda p, c: float("nan")).label(["p"], ["a"], ["b"])

    def test_choice_and_rank(self):
        annotator = SimulatedAnnotator("arithmetic", temperature=0)
        item = {"prompt": SUM, "responses": [{"text": "13"}, {"text": "12"}]}
        assert annotator.choice(item) == "B" and annotator.choice(SUM, "12", "13") == "A"
        assert annotator.rank(SUM, ["13", "7 + 5 = 12", "12"]) == [2, 1, 0]
        with pytest.raises(ValueError, match="responses"):
            annotator.choice({"prompt": SUM, "responses": ["12"]})

    ITEMS = [
        {"prompt": SUM, "responses": ["12", "13"]},
        {"prompt": DIFF, "responses": ["11", "12"]},
        {"prompt": SUM, "responses": ["7 + 5 = 12", "12"]},
        {"prompt": DIFF, "responses": ["12!", "12"]},
    ]
    EXPECTED = {"12": "A", "11": "B", "7 + 5 = 12": "B", "12!": "tie"}

    @staticmethod
    def first_response_to_decision(store, who="sim"):
        prompts = {item.id: [r.text for r in item.responses] for item in store.items()}
        return {prompts[i][0]: by[who] for i, by in store.decisions([who]).items()}

    def test_labels_a_session_headless(self, tmp_path):
        with PreferenceStore(tmp_path / "labels.sqlite") as store:
            session = LabelingSession(store, self.ITEMS, annotator="sim")
            assert SimulatedAnnotator("arithmetic", temperature=0).label_session(session) == 4
            assert session.done and session.labeled == 4 and session.skipped == 0  # a tie is a label
            assert self.first_response_to_decision(store) == self.EXPECTED

    def test_a_limit_and_rankings_of_three(self, tmp_path):
        items = [{"prompt": SUM, "responses": ["13", "7 + 5 = 12", "12"]}, *self.ITEMS]
        with PreferenceStore(tmp_path / "labels.sqlite") as store:
            session = LabelingSession(store, items, annotator="sim")
            assert SimulatedAnnotator("arithmetic", temperature=0).label_session(session, limit=2) == 2
            assert not session.done and session.prompt == DIFF
            assert self.first_response_to_decision(store) == {"13": [2, 1, 0], "12": "A"}

    def test_label_panel_drives_the_panel_and_its_traits_follow(self, tmp_path):
        with PreferenceStore(tmp_path / "labels.sqlite") as store:
            panel = LabelingPanel(store, self.ITEMS, annotator="sim")
            assert SimulatedAnnotator("arithmetic", temperature=0).label_panel(panel) == 4
            assert panel.done and panel.labeled == 4 and panel.responses == []
            assert self.first_response_to_decision(store) == self.EXPECTED


class TestPreferenceSets:
    def test_label_pairs_orders_by_the_label_and_drops_ties(self):
        annotator = SimulatedAnnotator(by_value, temperature=0)
        data = label_pairs(
            ["p1", "p2", "p3", "p4", "p5"], ["1", "2", "0.5", "3", " "], ["2", "1", "0.5", "3", "1"], annotator
        )
        assert data.column_names == ["prompt", "chosen", "rejected", "gold_chosen", "gold_rejected"]
        assert data["prompt"] == [[{"role": "user", "content": "p1"}], [{"role": "user", "content": "p2"}]]
        assert [c[0]["content"] for c in data["chosen"]] == ["2", "2"]
        assert data["chosen"][0][0]["role"] == "assistant"
        assert data["gold_chosen"] == [2.0, 2.0] and data["gold_rejected"] == [1.0, 1.0]

    def test_noisy_labels_sometimes_choose_the_worse(self):
        data = label_pairs(["p"] * 400, ["0.1"] * 400, ["0"] * 400, SimulatedAnnotator(by_value, temperature=0.1))
        flipped = sum(c < r for c, r in zip(data["gold_chosen"], data["gold_rejected"]))
        assert abs(flipped / 400 - 1 / (1 + math.e)) < 0.06  # P(worse chosen) = sigmoid(-1)

    def test_from_a_tiny_policy_into_reward_training(self, tiny_policy, tmp_path):
        annotator = SimulatedAnnotator(lambda p, c: len(c), temperature=0, seed=0)
        prompts = lab.task("concise").prompts("train")[:4]
        data = preference_dataset(tiny_policy, prompts, annotator, n_pairs=6, max_new_tokens=6, batch_size=4)
        assert len(data) == 6
        assert all(len(c[0]["content"]) > len(r[0]["content"]) for c, r in zip(data["chosen"], data["rejected"]))
        again = preference_dataset(
            tiny_policy, prompts, SimulatedAnnotator(lambda p, c: len(c)), n_pairs=6, max_new_tokens=6, batch_size=4
        )
        assert again["chosen"] == data["chosen"]  # seeded samples and labels: the same set
        config = lab.RewardConfig(
            output_dir=str(tmp_path / "rm"),
            max_steps=2,
            per_device_train_batch_size=2,
            learning_rate=1e-3,
            bf16=False,
            logging_steps=1,
            eval_fraction=0,
            num_samples=0,
            monitor=False,
            disable_tqdm=True,
        )
        run = lab.train_reward_model("tiny", data, config)
        assert run.summary["train_pairs"] == 6 and run.summary["steps"] == 2
        assert len(run(prompts[:2], ["a", "b"])) == 2

    def test_says_when_every_pair_ties(self, tiny_policy):
        with pytest.raises(ValueError, match="only 0 of 3 pairs.*ties=False"):
            preference_dataset(
                tiny_policy, ["hi"], SimulatedAnnotator(lambda p, c: 0.0), n_pairs=3, max_new_tokens=2, max_rounds=2
            )
