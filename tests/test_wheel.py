"""A lab from `pip install`: the wheel carries the notebooks, their profiles and baselines; installed in a
fresh venv outside the repository, `rlhf-lab lab DIR --copy-only` copies them out (never over the user's
edits) and `rlhf-lab regress` runs one notebook's CI profile from DIR against the shipped baselines.

The fresh venv gets the wheel alone (`--no-deps`); its dependencies come from this test's own environment
through a .pth line (a path line adds the folder only: the checkout's editable install stays out of it, and
the test checks that rlhf_lab is imported from the wheel), their data files through JUPYTER_PATH."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from rlhf_lab.regress.shipped import SHIPPED, copy_notebooks, shipped_notebooks

ROOT = Path(__file__).resolve().parents[1]


def run(command, cwd, env=None, timeout=600):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv's bin folder, the wheel's path): the wheel built from this checkout, installed in a fresh venv."""
    pytest.importorskip("hatchling", reason="the dev extra builds the wheel: pip install -e '.[dev]'")
    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
         str(ROOT)], cwd=tmp)  # fmt: skip
    wheel = next((tmp / "dist").glob("rlhf_lab-*.whl"))
    run([sys.executable, "-m", "venv", str(tmp / "venv")], cwd=tmp)
    purelib = Path(subprocess.check_output([str(tmp / "venv" / "bin" / "python"), "-c",
                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())  # fmt: skip
    (purelib / "_rlhf_lab_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(tmp / "venv" / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=tmp)  # fmt: skip
    return tmp / "venv" / "bin", wheel


def test_the_wheel_carries_the_notebooks_profiles_and_baselines(installed):
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted({p.name for pattern in SHIPPED for p in (ROOT / "notebooks").glob(pattern)})
    assert len(shipped) >= 12  # ten notebooks, profiles.yaml, baselines.json
    assert {f"rlhf_lab/notebooks/{name}" for name in shipped} <= names
    assert "rlhf_lab/widgets/labeling_panel.js" in names
    assert not [n for n in names if ".ipynb_checkpoints" in n]


def test_from_the_installed_wheel_lab_copies_the_notebooks_and_regress_runs_one(installed, tmp_path):
    bin_dir, _ = installed
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter")}  # the dependencies' data files (nbconvert's templates)  # fmt: skip
    where = run([str(bin_dir / "python"), "-c", "import rlhf_lab; print(rlhf_lab.__file__)"], cwd=tmp_path, env=env)
    assert str(bin_dir.parent) in where and str(ROOT) not in where  # the wheel's copy, not the checkout

    lab_dir = tmp_path / "my-lab"
    out = run([str(bin_dir / "rlhf-lab"), "lab", str(lab_dir), "--copy-only"], cwd=tmp_path, env=env)
    shipped = len({p for pattern in SHIPPED for p in (ROOT / "notebooks").glob(pattern)})
    assert f"{shipped} copied, 0 already there" in out, out
    assert (lab_dir / "notebooks" / "00_quickstart.ipynb").read_bytes() == (
        ROOT / "notebooks" / "00_quickstart.ipynb"
    ).read_bytes()

    run([str(bin_dir / "rlhf-lab"), "regress", "--profile", "ci", "--notebooks", "02_reward_model"], cwd=lab_dir,
        env=env)  # fmt: skip
    results = json.loads((lab_dir / "runs" / "regress" / "results.json").read_text())
    assert results["notebooks"]["02_reward_model"]["ok"] and not results["failing"], results
    assert results["checks"], "no baseline was checked"
    assert (lab_dir / "runs" / "regress" / "02_reward_model.html").exists()


def test_lab_never_overwrites_the_users_files(tmp_path):
    first = copy_notebooks(tmp_path)
    assert len(first.copied) >= 12 and not first.kept
    edited = tmp_path / "notebooks" / "01_sft.ipynb"
    edited.write_text('{"my": "edits"}', encoding="utf-8")
    (tmp_path / "notebooks" / "04_dpo.ipynb").unlink()
    again = copy_notebooks(tmp_path)
    assert again.copied == ["04_dpo.ipynb"] and again.kept == ["01_sft.ipynb"]
    assert edited.read_text(encoding="utf-8") == '{"my": "edits"}'
    assert "01_sft.ipynb" in str(again) and str(shipped_notebooks()) in str(again)


def test_lab_cli_copy_only_prints_what_it_did(tmp_path, capsys):
    from rlhf_lab.cli import main

    assert main(["lab", str(tmp_path), "--copy-only"]) == 0
    assert "copied" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "notebooks").iterdir()) == sorted(
        p.name for pattern in SHIPPED for p in shipped_notebooks().glob(pattern)
    )
