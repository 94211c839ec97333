"""evaluate_reward_model: every figure against values worked out by hand from a fake reward model."""

import math

import pytest
from datasets import Dataset

from rlhf_lab.stages.reward_eval import METRICS, evaluate_reward_model, expected_calibration_error

# Response text -> fixed score. Lengths in characters: D1 E2 B3 F4 A5 G6 C7.
SCORES = {"aaaaa": 2.0, "bbb": 0.0, "ccccccc": 1.0, "d": 0.5, "ee": 1.5, "ffff": 3.0, "gggggg": -1.0}
A, B, C, D, E, F, G = "aaaaa", "bbb", "ccccccc", "d", "ee", "ffff", "gggggg"
# P1 ranks three responses A > B > C (win counts 2, 1, 0); P2 and P3 have one pair each.
PAIRS = [("P1", A, B), ("P1", A, C), ("P1", B, C), ("P2", D, E), ("P3", F, G)]
ROWS = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def fake_rm(prompts, completions):
    return [SCORES[c] for c in completions]


@pytest.fixture(scope="module")
def metrics():
    return evaluate_reward_model(fake_rm, ROWS)


class TestHandComputed:
    def test_keys_are_exactly_the_contract(self, metrics):
        assert set(metrics) == set(METRICS)
        assert metrics["n_pairs"] == 5

    def test_accuracy_and_mean_margin(self, metrics):
        # margins: A-B = 2, A-C = 1, B-C = -1, D-E = -1, F-G = 4
        assert metrics["accuracy"] == pytest.approx(3 / 5)
        assert metrics["mean_margin"] == pytest.approx((2 + 1 - 1 - 1 + 4) / 5)

    def test_kendall_tau_over_the_three_response_prompt_only(self, metrics):
        # Humans: A > B > C. RM: A (2) > C (1) > B (0). Pairs AB and AC agree, BC disagrees: (2 - 1) / 3.
        assert metrics["kendall_tau"] == pytest.approx(1 / 3)

    def test_ece(self, metrics):
        # confidence = max(p, 1-p) with p = sigmoid(margin); bins (0.7, 0.8], (0.8, 0.9], (0.9, 1.0]:
        # margins 1, -1, -1 -> confidence sigmoid(1) = 0.731, correct 1 of 3;
        # margin 2 -> 0.881, correct; margin 4 -> 0.982, correct.
        expected = (3 / 5) * abs(1 / 3 - sigmoid(1)) + (1 / 5) * abs(1 - sigmoid(2)) + (1 / 5) * abs(1 - sigmoid(4))
        assert metrics["ece"] == pytest.approx(expected)

    def test_length_spearman(self, metrics):
        # ranks by score: G1 B2 D3 C4 E5 A6 F7; by length: D1 E2 B3 F4 A5 G6 C7
        # d = A 1, B -1, C -3, D 2, E 3, F 3, G -5; sum d^2 = 58; rho = 1 - 6 * 58 / (7 * 48)
        assert metrics["length_spearman"] == pytest.approx(1 - 6 * 58 / (7 * 48))

    def test_accuracy_when_chosen_is_shorter(self, metrics):
        # chosen shorter in A<C (right), B<C (wrong), D<E (wrong), F<G (right); A vs B is left out
        assert metrics["accuracy_chosen_shorter"] == pytest.approx(2 / 4)


class TestEdgeCases:
    def test_ece_of_an_undecided_model(self):
        # p = 0.5 everywhere: confidence 0.5, never correct (p > 0.5 is false) -> |0 - 0.5|
        assert expected_calibration_error([0.0, 0.0, 0.0]) == pytest.approx(0.5)

    def test_ece_one_bin_with_mixed_results(self):
        # margins +-ln(3): p = 0.75 or 0.25, confidence 0.75 for both; one right, one wrong: |0.5 - 0.75|
        assert expected_calibration_error([math.log(3), -math.log(3)], n_bins=4) == pytest.approx(0.25)

    def test_metrics_without_enough_structure_are_none(self):
        rows = [{"prompt": "P", "chosen": "longer answer", "rejected": "short"}]
        out = evaluate_reward_model(lambda p, c: [1.0] * len(c), rows)
        assert out["kendall_tau"] is None  # no prompt has more than two responses
        assert out["accuracy_chosen_shorter"] is None  # the chosen response is never the shorter one
        assert out["length_spearman"] is None  # constant rewards: no correlation
        assert out["accuracy"] == 0.0  # a tie is not a win

    def test_equal_win_counts_give_no_human_ordering(self):
        rows = [
            {"prompt": "P", "chosen": A, "rejected": B},
            {"prompt": "P", "chosen": B, "rejected": C},
            {"prompt": "P", "chosen": C, "rejected": A},
        ]
        assert evaluate_reward_model(fake_rm, rows)["kendall_tau"] is None  # a cycle: everyone wins once


class TestInputs:
    def test_each_distinct_response_is_scored_once_and_batch_size_is_passed(self):
        calls = []

        def rm(prompts, completions, batch_size=1):
            calls.append((list(completions), batch_size))
            return fake_rm(prompts, completions)

        evaluate_reward_model(rm, ROWS, batch_size=3)
        assert len(calls) == 1 and calls[0][1] == 3
        assert sorted(calls[0][0]) == sorted(SCORES)  # 7 distinct responses for 10 pair sides

    def test_dataset_in_lab_format_gives_the_same_figures(self, metrics):
        from rlhf_lab.data import load_preferences

        dataset = load_preferences(ROWS)
        assert isinstance(dataset, Dataset)
        assert evaluate_reward_model(fake_rm, dataset) == metrics

    def test_starter_means_the_starter_test_split(self):
        from rlhf_lab import starter_data

        out = evaluate_reward_model(lambda p, c: [float(len(x)) for x in c], "starter")
        assert out["n_pairs"] == len(starter_data("preference", "test"))
        assert out["length_spearman"] == pytest.approx(1.0)  # a pure length scorer

    def test_wrong_number_of_scores_is_an_error(self):
        with pytest.raises(ValueError, match=r"returned 1 scores .*for 7 completions"):
            evaluate_reward_model(lambda p, c: [0.0], ROWS)

    def test_empty_data_is_an_error(self):
        empty = Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
        with pytest.raises(ValueError, match="empty"):
            evaluate_reward_model(fake_rm, empty)
