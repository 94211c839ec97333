"""`lab.overoptimization` on tiny models: the table's shape, the measurements at update 0, the figure."""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rlhf_lab as lab
from rlhf_lab.evaluation.overoptimization import COLUMNS, plot_overoptimization
from rlhf_lab.tasks import Task

WORDS = [
    "cats",
    "rain",
    "trains",
    "music",
    "bread",
    "winter",
    "stars",
    "books",
    "tea",
    "maps",
    "snow",
    "clocks",
]


class VowelTask(Task):
    """A task a random tiny model gets varied gold on: the share of vowels in the completion."""

    name = "vowels"

    def _make_prompts(self):
        prompts = [f"Say something about {w}." for w in WORDS]
        return prompts[:8], prompts[8:]

    def gold(self, prompt, completion):
        return sum(ch in "aeiou" for ch in completion) / max(1, len(completion))


@pytest.fixture(scope="module")
def table(tiny_policy, tmp_path_factory):
    folder = tmp_path_factory.mktemp("overopt")
    config = lab.PPOConfig(
        batch_size=4, mini_batch_size=2, ppo_epochs=2, learning_rate=3e-3, monitor=False, num_samples=0, seed=0
    )
    reward_config = lab.RewardConfig(
        num_train_epochs=1, per_device_train_batch_size=4, monitor=False, num_samples=0, eval_fraction=0.0
    )
    annotator = lab.SimulatedAnnotator(VowelTask(), temperature=0.05, seed=0, ties=False)
    return lab.overoptimization(
        tiny_policy,
        VowelTask(),
        labels=[16, 8],
        updates=4,
        eval_every=2,
        eval_prompts=4,
        annotator=annotator,
        config=config,
        reward_config=reward_config,
        max_new_tokens=8,
        output_dir=folder,
    )


def test_table_has_one_row_per_label_count_and_measurement(table):
    assert list(table.columns) == COLUMNS
    assert sorted(table["labels"].unique()) == [8, 16]
    for (method, _), part in table.groupby(["method", "labels"]):
        # PPO: the start, every eval_every updates, in order; best-of-n: one row per n
        assert part["update"].tolist() == ([0, 2, 4] if method == "ppo" else [1, 2, 4, 8, 16])
    assert np.isfinite(table[["kl", "proxy", "gold", "length"]].to_numpy()).all()
    assert ((table["gold"] >= 0) & (table["gold"] <= 1)).all()
    assert np.allclose(table["sqrt_kl"], [math.sqrt(max(k, 0.0)) for k in table["kl"]])


def test_best_of_n_rows_use_the_closed_form_kl_and_climb_the_proxy(table):
    bon = table[table["method"] == "best-of-n"]
    assert np.allclose(bon["kl"], [math.log(n) - (n - 1) / n for n in bon["update"]])
    for _, part in bon.groupby("labels"):
        # each prompt's favourite of its first n pooled samples: a max over nested sets never falls with n
        assert np.all(np.diff(part["proxy"].to_numpy()) >= -1e-9)


def test_start_is_the_reference_and_training_moves_away(table):
    table = table[table["method"] == "ppo"]
    start = table[table["update"] == 0]
    assert np.allclose(start["kl"], 0.0, atol=1e-4)  # the policy before any update is the start policy
    assert start["gold"].nunique() == 1  # same policy, same seed: the same samples for every label count
    assert start["proxy"].nunique() == 2  # but two different proxies score them
    last = table[table["update"] == 4]
    assert (last["kl"] > 1e-3).all()
    assert (table["kl"] > -0.05).all()  # k1 is a Monte-Carlo estimate: a hair below 0 at most


def test_outputs_and_figure(table):
    folder = table.attrs["output_dir"]
    saved = pd.read_csv(f"{folder}/overoptimization.csv")
    assert saved.shape == table.shape
    figure = table.attrs["figure"]
    assert len(figure.data) == 8  # gold and proxy per label count, for PPO then for best-of-n
    names = [trace.name for trace in figure.data]
    assert names[:4] == ["gold, 8 labels", "proxy, 8 labels", "gold, 16 labels", "proxy, 16 labels"]
    assert names[4:6] == ["gold, 8 labels, best-of-n", "proxy, 8 labels, best-of-n"]
    assert [trace.yaxis for trace in figure.data] == ["y", "y2"] * 4
    page = table.attrs["output_dir"] + "/overoptimization.html"
    assert not re.search(r"<script[^>]*src=[\"']https?://", Path(page).read_text())  # offline: plotly.js is inside


def test_plot_from_a_hand_made_table():
    df = pd.DataFrame(
        {
            "labels": [5, 5, 5],
            "update": [0, 1, 2],
            "sqrt_kl": [0.0, 1.0, 2.0],
            "gold": [0.2, 0.5, 0.3],
            "proxy": [0.0, 1.0, 2.0],
        }
    )
    figure = plot_overoptimization(df)
    assert list(figure.data[0].x) == [0.0, 1.0, 2.0] and list(figure.data[0].y) == [0.2, 0.5, 0.3]
    assert list(figure.data[1].y) == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="gold"):
        plot_overoptimization(df.drop(columns="gold"))


def test_bad_arguments_fail_early(tiny_policy):
    with pytest.raises(ValueError, match="labels"):
        lab.overoptimization(tiny_policy, VowelTask(), labels=[0])
    with pytest.raises(ValueError, match="eval_every"):
        lab.overoptimization(tiny_policy, VowelTask(), labels=4, eval_every=0)
    with pytest.raises(KeyError, match="unknown task"):
        lab.overoptimization(tiny_policy, "nope", labels=4)
    assert callable(lab.overoptimization)  # still the function after `import rlhf_lab.evaluation.overoptimization`
