"""Shared test set-up: offline, deterministic, and tiny models built once per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RLHF_LAB_MONITOR", "html")  # headless monitors, also in papermill kernels
# trackio's database for report_to="trackio" runs: a temporary one, never the user's (read at trackio's import)
os.environ.setdefault("TRACKIO_DIR", __import__("tempfile").mkdtemp(prefix="rlhf-lab-trackio-"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_policy():
    from rlhf_lab import tiny_model

    return tiny_model("causal", seed=0)


@pytest.fixture(scope="session")
def tiny_reward():
    from rlhf_lab import tiny_model

    return tiny_model("reward", seed=0)


@pytest.fixture(scope="session")
def embedded_policy():
    from rlhf_lab import load_policy

    return load_policy()


@pytest.fixture(scope="session")
def benchmark_script():
    """`benchmark_script("grpo_e2e")`: a script of benchmarks/ imported as a module (they are not a package)."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
