"""Agreement statistics and vote aggregation against values worked out by hand (rlhf_lab.labeling.agreement)."""

import math

import pytest

from rlhf_lab.labeling.agreement import (
    cohen_kappa,
    consensus,
    encode_decision,
    krippendorff_alpha,
    majority,
    pair_votes,
    wilson_interval,
)
from rlhf_lab.labeling.store import PreferenceStore

# Two annotators, ten items (used for kappa below and end to end through a store).
ANA = ["A", "A", "A", "A", "A", "A", "B", "B", "tie", "both_bad"]
BOB = ["A", "A", "A", "A", "B", "B", "B", "B", "tie", "A"]
# By hand:
#   agreements: items 1-4 (A/A), 7-8 (B/B), 9 (tie/tie) = 7 of 10, so p_o = 0.7
#   ana's marginals: A 6, B 2, tie 1, both_bad 1;  bob's: A 5, B 4, tie 1, both_bad 0
#   p_e = (6*5 + 2*4 + 1*1 + 1*0) / 10^2 = 39/100 = 0.39
#   kappa = (p_o - p_e) / (1 - p_e) = (0.7 - 0.39) / 0.61 = 0.31 / 0.61 = 0.508196...
KAPPA = 0.31 / 0.61

# Three annotators, four items, one missing label on items 2 and 4 (None).
UNITS = [["A", "A", "A"], ["A", "B", None], ["B", "B", "tie"], ["tie", None, "tie"]]
# By hand, Krippendorff's coincidence matrix: every ordered pair of labels from different
# annotators on one item adds 1 / (m - 1), m = labels on that item:
#   item 1 (m=3): A,A,A   -> 6 ordered (A,A) pairs x 1/2     -> o[A,A] += 3
#   item 2 (m=2): A,B     -> (A,B), (B,A) x 1                -> o[A,B] += 1, o[B,A] += 1
#   item 3 (m=3): B,B,tie -> 2 (B,B) x 1/2; 2 (B,tie) and 2 (tie,B) x 1/2
#                                                            -> o[B,B] += 1, o[B,tie] += 1, o[tie,B] += 1
#   item 4 (m=2): tie,tie -> 2 (tie,tie) x 1                 -> o[tie,tie] += 2
#   row totals: n_A = 3 + 1 = 4, n_B = 1 + 1 + 1 = 3, n_tie = 1 + 2 = 3; n = 10
#   observed disagreement: o[A,B] + o[B,A] + o[B,tie] + o[tie,B] = 4
#   expected: sum over c != k of n_c * n_k = 2 * (4*3 + 4*3 + 3*3) = 66
#   alpha = 1 - (n - 1) * 4 / 66 = 1 - 36/66 = 5/11 = 0.4545...
ALPHA = 5 / 11


class TestCohenKappa:
    def test_hand_computed(self):
        assert cohen_kappa(ANA, BOB) == pytest.approx(KAPPA)

    def test_perfect_and_chance(self):
        assert cohen_kappa(["A", "B", "A"], ["A", "B", "A"]) == pytest.approx(1.0)
        # p_o = 0.5; both say A half the time: p_e = (2*2 + 2*2)/16 = 0.5 -> kappa = 0
        assert cohen_kappa(["A", "A", "B", "B"], ["A", "B", "A", "B"]) == pytest.approx(0.0)

    def test_undefined_is_nan(self):
        # one category throughout: p_e = 1, kappa = 0/0
        assert math.isnan(cohen_kappa(["A", "A"], ["A", "A"]))
        assert math.isnan(cohen_kappa([], []))

    def test_lengths_must_match(self):
        with pytest.raises(ValueError, match="one label per item"):
            cohen_kappa(["A"], ["A", "B"])


class TestKrippendorffAlpha:
    def test_hand_computed(self):
        assert krippendorff_alpha(UNITS) == pytest.approx(ALPHA)

    def test_published_example(self):
        # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers,
        # 12 units, nominal alpha = 0.743. Rows are observers, columns units, None missing.
        observers = [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
            [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
        ]
        assert krippendorff_alpha(zip(*observers)) == pytest.approx(0.743, abs=5e-4)

    def test_two_annotators_no_missing_is_close_to_kappa(self):
        # alpha corrects kappa's chance term for small n (alpha uses pooled marginals); with these
        # ten items the two stay near each other.
        assert krippendorff_alpha(zip(ANA, BOB)) == pytest.approx(KAPPA, abs=0.05)

    def test_singletons_ignored_and_undefined_is_nan(self):
        assert math.isnan(krippendorff_alpha([["A"], ["B", None]]))  # no item has two labels
        assert math.isnan(krippendorff_alpha([["A", "A"], ["A", "A"]]))


class TestVotes:
    def test_pair_votes(self):
        assert pair_votes("A", 2) == {(0, 1): "first"}
        assert pair_votes("B", 2) == {(0, 1): "second"}
        assert pair_votes("skip", 2) == {}
        assert pair_votes("tie", 3) == {(0, 1): "tie", (0, 2): "tie", (1, 2): "tie"}
        # ranking best-first [2, 0, 1]: 2 beats 0 and 1, 0 beats 1
        assert pair_votes([2, 0, 1], 3) == {(0, 1): "first", (0, 2): "second", (1, 2): "second"}

    def test_majority_is_a_plurality_with_a_unique_top(self):
        assert majority(["first", "first", "second", "tie"]) == "first"
        assert majority(["first", "second"]) is None
        assert majority([]) is None

    def test_consensus_min_votes_and_level_votes(self):
        assert consensus(["A", "A", "B"], 2) == {(0, 1): "first"}
        assert consensus(["A", "B"], 2) == {}
        assert consensus(["A", "skip"], 2, min_votes=2) == {}
        assert consensus([[0, 1, 2], [0, 2, 1], [0, 1, 2]], 3) == {
            (0, 1): "first",
            (0, 2): "first",
            (1, 2): "first",
        }

    def test_encode_decision(self):
        assert encode_decision([1, 0], 2) == "B"  # a ranking of two is stored as the letter
        assert encode_decision((2, 0, 1), 3) == "[2, 0, 1]"
        with pytest.raises(ValueError, match="not a ranking"):
            encode_decision([0, 0, 1], 3)
        with pytest.raises(ValueError, match="not a ranking"):
            encode_decision([True, False], 2)


class TestWilson:
    def test_hand_computed(self):
        # 8 of 10, z = 1.959964, z^2 = 3.841459:
        #   scale  = 1 + z^2/n = 1.3841459
        #   centre = (0.8 + z^2/(2n)) / scale = 0.9920729 / 1.3841459 = 0.716738
        #   half   = z * sqrt(0.8*0.2/10 + z^2/(4n^2)) / scale
        #          = 1.959964 * sqrt(0.016 + 0.0096036) / 1.3841459 = 0.226578
        #   -> (0.490160, 0.943316)
        low, high = wilson_interval(8, 10)
        assert low == pytest.approx(0.490160, abs=1e-5)
        assert high == pytest.approx(0.943316, abs=1e-5)

    def test_edges(self):
        assert wilson_interval(0, 0) == (0.0, 1.0)
        low, high = wilson_interval(5, 5)
        assert high == pytest.approx(1.0) and 0.5 < low < 0.6  # 0.566


def test_store_agreement_matches_hand_values(tmp_path):
    store = PreferenceStore(tmp_path / "s.sqlite")
    ids = [store.add_item(f"Question {i}?", [f"Answer {i}a.", f"Answer {i}b."]) for i in range(10)]
    for item, a, b in zip(ids, ANA, BOB):
        store.label(item, a, "ana")
        store.label(item, b, "bob")
    extra = store.add_item("Only ana saw this?", ["Yes.", "No."])
    store.label(extra, "A", "ana")  # not shared: left out of kappa
    store.label(ids[0], "skip", "cy")  # a skip is no label: cy never enters the statistics
    report = store.agreement()
    assert report["annotators"] == ["ana", "bob"]
    assert report["kappa"] == pytest.approx(KAPPA)
    assert report["shared_items"] == 10
    assert report["pairwise"] == [{"annotators": ["ana", "bob"], "items": 10, "kappa": report["kappa"]}]


def test_store_agreement_three_annotators_matches_hand_alpha(tmp_path):
    store = PreferenceStore(tmp_path / "s.sqlite")
    for i, unit in enumerate(UNITS):
        item = store.add_item(f"Question {i}?", [f"Answer {i}a.", f"Answer {i}b."])
        for annotator, decision in zip(("ana", "bob", "cy"), unit):
            if decision is not None:
                store.label(item, decision, annotator)
    report = store.agreement()
    assert report["alpha"] == pytest.approx(ALPHA)
    assert report["kappa"] is None and len(report["pairwise"]) == 3


def test_ratings_are_votes_on_every_pair():
    assert encode_decision({"scores": [4, 2, 4]}, 3) == '{"scores": [4, 2, 4]}'
    assert pair_votes({"scores": [4, 2, 4]}, 3) == {(0, 1): "first", (0, 2): "tie", (1, 2): "second"}
    assert consensus([{"scores": [5, 1]}, "B", {"scores": [4, 2]}], 2) == {(0, 1): "first"}
    for bad, why in [({"scores": [4]}, "do not score the item's 2"), ({"scores": [0, 6]}, "not all whole numbers 1-5"),
                     ({"scores": [True, 2]}, "not all whole numbers"), ({"score": [1, 2]}, "do not score")]:  # fmt: skip
        with pytest.raises(ValueError, match=why):
            encode_decision(bad, 2)


def test_ratings_round_trip_through_a_store_and_count_in_agreement(tmp_path):
    with PreferenceStore(tmp_path / "labels.sqlite") as store:
        pair = store.add_item("Say hi.", ["Hi!", "Hello."])
        rated = store.add_item("Say hi.", ["Hi!", "Hello."], metadata={"rating": 5})
        assert rated != pair  # scores and a choice over the same texts are two items
        store.label(rated, {"scores": [5, 2]}, "ana")
        store.label(rated, {"scores": [5, 2]}, "bob")
        store.label(pair, "A", "ana")
        store.label(pair, "B", "bob")
        assert store.decision(rated, "ana") == {"scores": [5, 2]}
        report = store.agreement()
        assert report["shared_items"] == 2 and report["pairwise"][0]["items"] == 2
