"""Every script answers --help with its usage on stdout and exit 0, and does nothing else:
no install, no build, no run (each returns within seconds)."""
import subprocess

import pytest

from conftest import REPO

SCRIPTS = ["setup", "data", "train", "test", "pyenv", "bench", "sweep", "plot", "fuzz", "experiments/bn-paper", "experiments/groupnorm",
           "experiments/precise-bn", "experiments/ghost-bn", "experiments/batch-renorm", "experiments/norm-cost"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    r = subprocess.run([str(REPO / "Scripts" / script), "--help"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) >= 2, r.stdout
    assert r.stderr == "", f"{script} --help wrote to stderr (did it start working?): {r.stderr[:300]}"
