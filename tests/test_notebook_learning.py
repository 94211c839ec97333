"""Notebook baselines that watch learning must notice when nothing is learned.

Every notebook trains something. Here each runs under the ci profile with every learning rate forced
to 0 (`learning_rate`, `dpo_learning_rate`, `ppo_learning_rate`: the weights stay frozen), through
`rlhf-lab regress` itself. Each notebook must still run to the end, and regress must exit 1 with a
REGRESSION on that notebook's learning metrics: a baseline that passes with frozen weights says
nothing about learning. One regress call runs every notebook, two at a time (a few minutes).
"""

import json
from pathlib import Path

import papermill
import pytest
import yaml

from rlhf_lab.regress.runner import regress

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"

# notebook -> the learning metrics (a loss that drops, a margin or a score that rises, a policy that
# moves) whose ci baselines must fail when the weights are frozen
LEARNING = {
    "00_quickstart": {
        "sft/loss_drop",
        "sft/final_loss",
        "rm/eval_mean_margin",
        "dpo/margin",
        "compare/ppo_kl_k3",
        "compare/dpo_kl_k3",
    },
    "01_sft": {"sft/loss_drop", "sft/final_loss", "sft/eval_loss"},
    "02_reward_model": {"rm/eval_mean_margin", "rm/eval_ece"},
    "03_ppo": {
        *(f"ppo/{run}/{metric}" for run in ("fixed", "no-kl", "adaptive") for metric in ("gold_gain", "last_kl")),
        "ppo/adaptive/final_beta",
    },
    "04_dpo": {
        f"dpo/{run}/{metric}"
        for run in ("sigmoid-b0.1", "ipo-b0.1", "sigmoid-b0.5")
        for metric in ("margin", "loss", "accuracy")
    },
    "05_label_and_iterate": {"dpo/round1_margin", "dpo/round2_margin"},
    "06_evaluate_and_compare": {
        *(f"{key}/{metric}" for key in ("ppo", "dpo") for metric in ("gold_gain", "win_rate_gold", "gold", "kl_k3")),
        "ppo/distinct_2",
    },
    "07_reward_hacking": {f"overopt/{k}/{metric}" for k in (8, 16) for metric in ("gold_gain", "proxy_gain")},
    "08_grpo": {"compare/gold_gain", "compare/win_rate_gold", "grpo/final_kl"},
    "09_method_shootout": {f"{m}/{metric}" for m in ("ppo", "grpo", "rloo", "dpo") for metric in ("gold_gain", "kl")},
    "10_export": {"ppo/last_kl"},
    "11_be_the_reward": {"human/quirk_gain", "human/kl"},
}


def frozen_profiles(folder: Path) -> tuple[Path, dict[str, list[str]]]:
    """A copy of profiles.yaml whose ci entries set every `*learning_rate` parameter to 0."""
    profiles = yaml.safe_load((NOTEBOOKS_DIR / "profiles.yaml").read_text())
    zeroed = {}
    for name, params in profiles["ci"].items():
        known = papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"))
        zeroed[name] = sorted(key for key in known if key.endswith("learning_rate"))
        params.update(dict.fromkeys(zeroed[name], 0.0))
    path = folder / "profiles.yaml"
    path.write_text(yaml.safe_dump(profiles))
    return path, zeroed


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frozen")
    profiles, zeroed = frozen_profiles(folder)
    code = regress(
        None, "ci", jobs=2, notebooks_dir=NOTEBOOKS_DIR, profiles=profiles, out=folder / "out", log=lambda *_: None
    )
    return code, json.loads((folder / "out" / "results.json").read_text()), zeroed


def test_every_notebook_is_covered_and_has_a_learning_rate_to_freeze(frozen):
    _, results, zeroed = frozen
    assert set(results["notebooks"]) == set(LEARNING), "list the learning metrics of every notebook in LEARNING"
    assert all(zeroed.values()), f"a notebook without a learning_rate parameter: {zeroed}"


def test_regress_fails_when_nothing_learns(frozen):
    code, results, _ = frozen
    assert code == 1
    assert results["failing"]


@pytest.mark.parametrize("name", sorted(LEARNING))
def test_a_frozen_notebook_runs_to_the_end_and_its_learning_checks_fail(frozen, name):
    _, results, _ = frozen
    run = results["notebooks"][name]
    assert run["ok"], f"{name} did not run to the end with learning rate 0: {run['error']}"
    status = {c["metric"]: c["status"] for c in results["checks"] if c["notebook"] == name}
    assert "FAILED" not in status.values()
    passing = {m: (status.get(m), run["records"].get(m)) for m in LEARNING[name] if status.get(m) != "REGRESSION"}
    assert not passing, f"{name}: these learning checks pass (or are missing) with frozen weights: {passing}"
