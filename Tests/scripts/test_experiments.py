"""The normalization lab's experiment scripts end to end on a small scale (--quick): each
trains its runs, prints its table and draws its figure; a bad argument is one line."""
import subprocess

import pytest

from conftest import REPO

EXPERIMENTS = REPO / "Scripts" / "experiments"


def quick(name, tmp_path):
    r = subprocess.run([str(EXPERIMENTS / name), "--quick", "--out", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def table_rows(out, first):
    return [[c.strip() for c in l.strip("|").split("|")] for l in out.splitlines() if l.startswith(f"| {first}")]


def is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_precise_bn_experiment_quick(tmp_path, bntrain):
    out = quick("precise-bn", tmp_path)
    rows = {r[0]: r for r in table_rows(out, "ema") + table_rows(out, "precise")}
    assert set(rows) == {"ema", "precise"}, out
    for r in rows.values():
        assert 0 < float(r[3]) <= float(r[4]) <= 1, r  # worst epoch <= mean
    assert '"kind":"bn_report"' in out and '"drift_layer":' in out
    assert is_png(tmp_path / "docs" / "precise-bn-accuracy.png") and is_png(tmp_path / "docs" / "precise-bn-report.png")
    assert (tmp_path / "runs" / "fashion-mnist-heldout" / "train-images-idx3-ubyte").stat().st_size == 16 + 8000 * 784


def test_ghost_bn_experiment_quick(tmp_path, bntrain):
    out = quick("ghost-bn", tmp_path)
    rows = table_rows(out, "32 ") + table_rows(out, "1024 ")
    assert len(rows) == 2, out
    for r in rows:
        assert all(0 < float(c.split(" ")[0]) <= 1 for c in r[1:3]), r
    assert is_png(tmp_path / "docs" / "ghost-bn.png")
    bad = subprocess.run([str(EXPERIMENTS / "ghost-bn"), "--ghosts", "16,4096"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--ghosts" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_batch_renorm_experiment_quick(tmp_path, bntrain):
    import numpy as np
    import sys
    sys.path.insert(0, str(EXPERIMENTS))
    import lab
    out = quick("batch-renorm", tmp_path)
    for name in ("BN, batch 32", "BN, batch 4", "BRN, batch 4", "BN, i.i.d. batches", "BN, 2-class batches", "BRN, 2-class batches"):
        rows = table_rows(out, name)
        assert len(rows) == 1 and 0 < float(rows[0][1].split(" ")[0]) <= 1, (name, out)
    assert is_png(tmp_path / "docs" / "batch-renorm.png")
    # Every batch of 32 of the reordered training set holds exactly two classes, 16 each.
    labels = lab.read_idx(tmp_path / "runs" / "fashion-mnist-2class-n1024" / "train-labels-idx1-ubyte")
    for b in labels.reshape(-1, 32):
        values, counts = np.unique(b, return_counts=True)
        assert len(values) == 2 and list(counts) == [16, 16], b


def test_norm_cost_quick(bntrain):
    r = subprocess.run([str(EXPERIMENTS / "norm-cost"), "--quick"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [l for l in r.stdout.splitlines() if l.startswith("| ") and " / " in l.split("|")[1]]
    assert len(rows) == 4, r.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and float(cells[3]) > 0, row
    assert "precise pass" in rows[0]
