"""`lab.record` and `rlhf-lab regress`: the comparison rules on hand-made inputs, clear errors for bad
profiles, baselines and globs, and end to end on tiny notebooks written here (a perturbed baseline
and a failing cell both exit 1 with a readable report)."""

import json
import math

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from rlhf_lab.cli.main import main
from rlhf_lab.regress import baselines as rg
from rlhf_lab.regress.baselines import Check, Failure, NotebookRun, RegressError


def run(name, records=None, failure=None):
    return NotebookRun(name, executed=None, seconds=1.0, records=records or {}, failure=failure)


class TestCompareValue:
    @pytest.mark.parametrize(
        "spec, value, ok",
        [
            ({"value": 1.0, "abs": 0.1}, 1.09, True),
            ({"value": 1.0, "abs": 0.1}, 0.89, False),
            ({"value": -2.0, "rel": 0.1}, -2.19, True),  # 10% of |value|
            ({"value": -2.0, "rel": 0.1}, -1.79, False),
            ({"value": 0.6, "direction": "at_least"}, 0.95, True),
            ({"value": 0.6, "direction": "at_least"}, 0.59, False),
            ({"value": 0.6, "direction": "at_least", "abs": 0.05}, 0.56, True),  # slack below the floor
            ({"value": 0.2, "direction": "at_most"}, 0.21, False),
            ({"value": 0.2, "direction": "at_most", "rel": 0.1}, 0.219, True),
            ({"value": 8}, 8, True),  # no tolerance: exact
            ({"value": 8}, 9, False),
            ({"value": "sigmoid"}, "sigmoid", True),
            (
                {"value": True},
                1,
                True,
            ),  # JSON's true and 1 compare equal in Python: documented exact equality
            ({"value": 1.0, "abs": 5}, "1.0", False),  # a string where a number was expected
            ({"value": 1.0, "abs": 5}, None, False),
        ],
    )
    def test_rules(self, spec, value, ok):
        assert rg.compare_value(spec, value)[0] is ok

    def test_the_reason_names_the_bound(self):
        assert rg.compare_value({"value": 0.6, "direction": "at_least", "abs": 0.1}, 0.3)[1] == "below the floor 0.5"
        assert "off by +0.5" in rg.compare_value({"value": 1.0, "abs": 0.1}, 1.5)[1]

    def test_describe(self):
        assert rg.describe({"value": 1, "abs": 0.05}) == "±0.05"
        assert rg.describe({"value": 1, "rel": 0.1}) == "±10%"
        assert rg.describe({"value": 1, "direction": "at_least"}) == ">="
        assert rg.describe({"value": 1}) == "== exact"


class TestCompare:
    def test_statuses(self):
        baselines = {
            "nb": {"acc": {"value": 0.8, "abs": 0.05}, "loss": {"value": 1.0, "rel": 0.1}, "gone": {"value": 3}}
        }
        checks = rg.compare([run("nb", {"acc": 0.7, "loss": 1.05, "fresh": 2})], baselines)
        assert {c.metric: c.status for c in checks} == {
            "acc": "REGRESSION",
            "loss": "pass",
            "gone": "MISSING",
            "fresh": "new",
        }
        assert [c.metric for c in checks if c.failing] == ["acc", "gone"]

    def test_a_failed_or_silent_notebook_fails(self):
        boom = Failure("ValueError", "boom", "Traceback ...", 3, "raise ValueError('boom')")
        checks = rg.compare([run("a", failure=boom), run("b")], {})
        assert [(c.notebook, c.status) for c in checks] == [("a", "FAILED"), ("b", "FAILED")]
        assert "lab.record" in checks[1].detail

    def test_table_marks_failing_rows(self):
        from rlhf_lab.regress.runner import format_table

        table = format_table(
            [
                Check("nb", "acc", "REGRESSION", 0.7, {"value": 0.8, "abs": 0.05}, "off by -0.1"),
                Check("nb", "loss", "pass", 1.0, {"value": 1.0, "rel": 0.1}),
            ]
        )
        lines = table.splitlines()
        assert lines[0].split() == ["notebook", "metric", "baseline", "value", "check", "status"]
        assert lines[2].startswith("!") and "0.8" in lines[2] and "0.7" in lines[2] and "±0.05" in lines[2]
        assert lines[3].startswith(" ") and "pass" in lines[3]


class TestBaselinesFile:
    @pytest.mark.parametrize(
        "text, message",
        [
            ('{"ci": {"nb": {"acc": {"value": 0.8,}}}}', r"baselines.json: line 1 column \d+"),
            ('{"ci": {"nb": {"acc": {"value": 0.8, "tol": 1}}}}', r"ci\.nb\.acc: unknown key\(s\) tol"),
            ('{"ci": {"nb": {"acc": {"abs": 1}}}}', r"ci\.nb\.acc: a spec needs a 'value'"),
            ('{"ci": {"nb": {"acc": {"value": 1, "abs": 1, "rel": 1}}}}', "not both"),
            ('{"ci": {"nb": {"acc": {"value": 1, "abs": -1}}}}', "'abs' must be a number >= 0"),
            (
                '{"ci": {"nb": {"acc": {"value": 1, "direction": "up"}}}}',
                "'direction' must be one of at_least, at_most",
            ),
            ('{"ci": {"nb": {"acc": {"value": "x", "rel": 0.1}}}}', "'rel' needs a numeric 'value'"),
            ('{"ci": {"nb": [1, 2]}}', r"ci\.nb: expected an object"),
        ],
    )
    def test_malformed_baselines_name_the_file_and_field(self, tmp_path, text, message):
        path = tmp_path / "baselines.json"
        path.write_text(text)
        with pytest.raises(RegressError, match=message) as err:
            rg.load_baselines(path)
        assert str(path) in str(err.value)

    def test_update_keeps_tolerances_and_shows_the_diff(self):
        old = {
            "ci": {
                "nb": {
                    "acc": {"value": 0.8, "abs": 0.05},
                    "gone": {"value": 1},
                    "kl": {"value": 2.0, "direction": "at_most"},
                    "win": {"value": 0.6, "direction": "at_least"},
                },
                "broken": {"x": {"value": 1}},
            },
            "full": {"nb": {"acc": {"value": 0.9}}},
        }
        runs = [
            run("nb", {"acc": 0.8123456789, "steps": 8, "loss": 1.5, "kl": 0.25, "win": 0.4}),
            run("broken", failure=Failure("E", "", "")),
        ]
        new = rg.updated_baselines(old, "ci", runs)
        assert new["ci"]["nb"] == {
            "acc": {"value": 0.812346, "abs": 0.05},
            "loss": {"value": 1.5, "rel": rg.DEFAULT_REL},
            "steps": {"value": 8},
            "kl": {"value": 2.0, "direction": "at_most"},  # a met ceiling stays where it was
            "win": {"value": 0.4, "direction": "at_least"},
        }  # a floor it broke moves
        assert new["ci"]["broken"] == old["ci"]["broken"] and new["full"] == old["full"]
        text = rg.dump_baselines(new)
        assert json.loads(text) == new
        diff = rg.baseline_diff(rg.dump_baselines(old), text, "baselines.json")
        assert '-      "acc": {"value": 0.8, "abs": 0.05}' in diff
        assert '+      "acc": {"value": 0.812346, "abs": 0.05}' in diff
        assert '-      "gone": {"value": 1}' in diff


class TestProfilesAndSelection:
    def test_profiles(self, tmp_path):
        path = tmp_path / "profiles.yaml"
        path.write_text("ci:\n  nb: {x: 3}\n")
        assert rg.load_profile(path, "ci") == {"nb": {"x": 3}}
        assert rg.load_profile(path, "full") == {}
        with pytest.raises(RegressError, match="no profile 'nightly'. Fix: use one of ci, full"):
            rg.load_profile(path, "nightly")
        path.write_text("ci:\n  nb: [x]\n")
        with pytest.raises(RegressError, match=r"ci\.nb: expected a mapping of parameter -> value"):
            rg.load_profile(path, "ci")

    def test_unknown_parameter_is_an_error(self, tmp_path):
        write_notebook(tmp_path / "nb.ipynb", "x = 1", "pass")
        (tmp_path / "profiles.yaml").write_text("ci:\n  nb: {y: 3}\n")
        with pytest.raises(
            RegressError, match=r"ci\.nb: unknown parameter\(s\) y; the parameters cell of nb.ipynb defines x"
        ):
            rg.load_profile(tmp_path / "profiles.yaml", "ci", tmp_path)

    def test_globs(self, tmp_path):
        from rlhf_lab.regress.runner import select_notebooks

        for name in ("01_sft", "02_reward_model", "04_dpo"):
            write_notebook(tmp_path / f"{name}.ipynb", "x = 1", "pass")
        names = lambda patterns: [p.stem for p in select_notebooks(tmp_path, patterns)]  # noqa: E731
        assert names(None) == ["01_sft", "02_reward_model", "04_dpo"]
        assert names(["0[12]_*"]) == ["01_sft", "02_reward_model"]
        assert names(["04_dpo", "notebooks/01_sft.ipynb"]) == ["01_sft", "04_dpo"]
        with pytest.raises(
            RegressError, match="'09_\\*' matches no notebook .* there are: 01_sft, 02_reward_model, 04_dpo"
        ):
            select_notebooks(tmp_path, ["09_*"])


class TestRecord:
    def test_in_memory_and_into_the_sidecar(self, tmp_path, monkeypatch, capsys):
        sidecar = tmp_path / "out" / "nb.records.json"
        monkeypatch.setenv(rg.ENV_VAR, str(sidecar))
        rg.clear()
        assert rg.record("acc", np.float32(0.5)) == 0.5 and isinstance(rg.recorded()["acc"], float)
        rg.record("steps", np.int64(8))
        rg.record("acc", 0.75)  # the last value wins
        assert json.loads(sidecar.read_text()) == {"acc": 0.75, "steps": 8} == rg.recorded()
        assert "recorded acc = 0.75" in capsys.readouterr().out

    def test_interactive_use_writes_nothing(self, tmp_path, monkeypatch):
        monkeypatch.delenv(rg.ENV_VAR, raising=False)
        monkeypatch.chdir(tmp_path)
        import rlhf_lab as lab

        assert lab.record("x", 1) == 1 and lab.recorded()["x"] == 1
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("value, error", [(math.nan, ValueError), ([1, 2], TypeError), ({"a": 1}, TypeError)])
    def test_refuses_what_cannot_be_compared(self, value, error):
        with pytest.raises(error, match="Fix:"):
            rg.record("bad", value)


def write_notebook(path, parameters: str, *cells: str) -> None:
    first = new_code_cell(parameters, metadata={"tags": ["parameters"]})
    notebook = new_notebook(
        cells=[first, *(new_code_cell(c) for c in cells)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbformat.write(notebook, path)


@pytest.fixture
def suite(tmp_path):
    """A notebooks folder with one tiny notebook, its CI profile and a baseline it meets."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(
        folder / "tiny.ipynb",
        "x = 1\nlabel = 'a'",
        "import rlhf_lab as lab\nlab.record('double', x * 2.0)\nlab.record('label', label)",
    )
    (folder / "profiles.yaml").write_text("ci:\n  tiny: {x: 3, label: '<b>'}\n")
    (folder / "baselines.json").write_text(
        json.dumps({"ci": {"tiny": {"double": {"value": 6.0, "abs": 0.01}, "label": {"value": "<b>"}}}})
    )
    return folder


def regress(suite, capsys, *extra):
    code = main(["regress", "--notebooks-dir", str(suite), "--out", str(suite.parent / "out"), *extra])
    return code, capsys.readouterr().out


def test_regress_passes_then_a_perturbed_baseline_exits_1_with_a_readable_diff(suite, capsys):
    code, out = regress(suite, capsys)
    assert code == 0, out
    assert "regress passed: 2 pass, 0 failing" in out
    executed = nbformat.read(suite.parent / "out" / "tiny.ipynb", as_version=4)
    assert executed.metadata["rlhf_lab"]["records"] == {"double": 6.0, "label": "<b>"}

    baselines = json.loads((suite / "baselines.json").read_text())
    baselines["ci"]["tiny"]["double"]["value"] = 6.5  # a deliberately broken metric
    (suite / "baselines.json").write_text(rg.dump_baselines(baselines))
    code, out = regress(suite, capsys)
    assert code == 1
    row = next(line for line in out.splitlines() if "double" in line)
    assert row.startswith("!") and row.split()[1:6] == ["tiny", "double", "6.5", "6", "±0.01"]
    assert "REGRESSION (off by -0.5, allowed ±0.01)" in row
    assert "regress FAILED: 1 pass, 1 failing" in out
    report = (suite.parent / "out" / "report.html").read_text()
    assert "REGRESSION" in report and "&lt;b&gt;" in report and "<b>" not in report

    code, out = regress(suite, capsys, "--update-baselines")
    assert code == 0 and "regress passed (baselines updated)" in out
    assert (
        '-      "double": {"value": 6.5, "abs": 0.01}' in out and '+      "double": {"value": 6.0, "abs": 0.01}' in out
    )
    assert json.loads((suite / "baselines.json").read_text())["ci"]["tiny"]["double"] == {
        "value": 6.0,
        "abs": 0.01,
    }


def test_a_failing_cell_shows_its_source_and_traceback(suite, capsys):
    write_notebook(suite / "broken.ipynb", "x = 1", "y = x + 1\nraise ValueError(f'<boom {y}>')")
    (suite / "profiles.yaml").write_text("ci:\n  tiny: {x: 3, label: '<b>'}\n  broken: {x: 41}\n")
    code, out = regress(suite, capsys, "--jobs", "2")
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("! broken"))
    assert row.split()[2:6] == ["-", "-", "-", "-"] and row.endswith("FAILED (ValueError: <boom 42>)")
    failure = out[out.index("=== broken FAILED") :]
    assert (
        "cell 2 of the executed notebook" in failure
        and "--- cell source:\ny = x + 1\nraise ValueError(f'<boom {y}>')" in failure
    )
    assert "----> 2 raise ValueError" in failure.split("--- traceback:")[1]
    assert "\x1b[" not in failure  # no terminal colour codes
    assert (
        "tiny: ok" in out and "regress FAILED: 2 pass, 1 failing" in out
    )  # the other notebook ran in parallel and passed
    report = (suite.parent / "out" / "report.html").read_text()
    assert "&lt;boom 42&gt;" in report and "<boom" not in report
    results = json.loads((suite.parent / "out" / "results.json").read_text())
    assert results["failing"] and results["notebooks"]["broken"]["error"]["ename"] == "ValueError"


def test_bad_input_is_one_clear_line(suite, capsys):
    code = main(["regress", "--notebooks-dir", str(suite), "--notebooks", "nope*"])
    assert code == 1
    assert "rlhf-lab regress: error: --notebooks 'nope*' matches no notebook" in capsys.readouterr().err
    (suite / "baselines.json").write_text("{")
    assert main(["regress", "--notebooks-dir", str(suite), "--out", str(suite.parent / "out")]) == 1
    err = capsys.readouterr().err
    assert "baselines.json: line 1 column 2" in err and "--update-baselines" in err
    assert not (suite.parent / "out").exists()  # nothing ran
    (suite / "baselines.json").write_text("{}")
    write_notebook(suite / "new.ipynb", "x = 1", "pass")
    assert main(["regress", "--notebooks-dir", str(suite), "--out", str(suite.parent / "out")]) == 1
    assert (
        "profile 'ci' has no entry for new. Fix: add 'new: {model: tiny, ...}' under 'ci:'" in capsys.readouterr().err
    )
