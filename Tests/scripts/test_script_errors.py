"""Scripts/sweep and Scripts/plot on bad input: one '<script>: error: ...' line, a non-zero exit
below 128, no traceback and no stray files, whatever the user gave them."""
import os
import subprocess

import pytest

from conftest import REPO

SWEEP = REPO / "Scripts" / "sweep"
PLOT = REPO / "Scripts" / "plot"
EPOCH = '{"kind":"epoch","epoch":1,"train_loss":0.5,"test_acc":0.8}\n'


def one_line_error(r, script, code):
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), r.stderr
    assert r.returncode == code, (r.returncode, r.stderr)
    return lines[0]


def sweep(tmp_path, *args):
    return subprocess.run([str(SWEEP), *args, "--lr", "0.1", "--epochs", "1", "--bntrain", "/bin/true"],
                          capture_output=True, text=True, cwd=tmp_path)


@pytest.mark.parametrize("case, code, says", [
    ("empty", 64, "--out is empty"),
    ("file", 64, "is a file, not a folder"),
    ("under-file", 73, "is a file, not a folder"),
    ("proc", 73, "/proc"),
    ("summary-folder", 73, "summary.csv' is a folder"),
    ("runs-file", 73, "runs' is a file"),
])
def test_sweep_refuses_an_out_that_cannot_hold_it(tmp_path, case, code, says):
    (tmp_path / "afile").write_text("keep me\n")
    out = {"empty": "", "file": "afile", "under-file": "afile/sub", "proc": "/proc/bntrain-sweep",
           "summary-folder": "s1", "runs-file": "s2"}[case]
    if case == "summary-folder":
        (tmp_path / "s1" / "summary.csv").mkdir(parents=True)
    if case == "runs-file":
        (tmp_path / "s2").mkdir()
        (tmp_path / "s2" / "runs").write_text("")
    before = sorted(p.name for p in tmp_path.iterdir())
    line = one_line_error(sweep(tmp_path, "--out", out), "sweep", code)
    assert says in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing written into the current folder"
    assert (tmp_path / "afile").read_text() == "keep me\n"


def test_sweep_caps_its_jobs_at_the_runs_and_the_file_limit(tmp_path, tiny, bntrain):
    import importlib.machinery
    import importlib.util
    import resource
    import time
    loader = importlib.machinery.SourceFileLoader("sweep_module", str(SWEEP))
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("sweep_module", loader))
    loader.exec_module(mod)
    assert mod.job_slots(99999, 2) == 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert mod.job_slots(99999, 10 ** 9) == (soft - 32) // 4
    started = time.monotonic()
    r = subprocess.run([str(SWEEP), "--out", str(tmp_path / "s"), "--jobs", "99999", "--lr", "0.1,0.2", "--epochs", "1",
                        "--batch", "16", "--data", str(tiny), "--bntrain", bntrain], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "parallel: Warning" not in r.stderr and "file handles" not in r.stderr, r.stderr
    assert time.monotonic() - started < 20
    assert len(r.stdout.strip().splitlines()) == 3  # the CSV header and two configurations


PLOT_CASES = {
    "not-json": ("m.jsonl", "not json\n", "line 1 is not JSON"),
    "array": ("m.jsonl", "[1, 2]\n", "line 1 is a JSON list"),
    "binary": ("m.jsonl", bytes(range(256)), "not a text file"),
    "no-train-loss": ("m.jsonl", '{"kind":"epoch","test_acc":0.8}\n', "has no 'train_loss'"),
    "string-value": ("m.jsonl", '{"kind":"epoch","train_loss":"x","test_acc":0.8}\n', 'train_loss="x", not a number'),
    "null-value": ("m.jsonl", '{"kind":"epoch","train_loss":null,"test_acc":0.8}\n', "train_loss=null, not a number"),
    "ragged-csv": ("m.csv", "epoch,train_loss,test_acc\n1,0.5\n", "CSV row 2 has fewer fields"),
    "empty": ("m.jsonl", "", "no epoch records"),
}


@pytest.mark.parametrize("case", PLOT_CASES)
def test_plot_refuses_bad_metrics_in_one_line(tmp_path, case):
    name, content, says = PLOT_CASES[case]
    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = subprocess.run([str(PLOT), "--out", str(tmp_path / "o.png"), str(f)], capture_output=True, text=True)
    line = one_line_error(r, "plot", 65)
    assert says in line and str(f) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == [name], "no PNG, no temporary file"


def test_plot_trace_records_need_a_step(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"kind":"trace","p15":1,"p50":2,"p85":3,"layer":1,"unit":0}\n')
    r = subprocess.run([str(PLOT), "--kind", "trace", "--out", str(tmp_path / "o.png"), str(f)], capture_output=True, text=True)
    assert "has no 'step'" in one_line_error(r, "plot", 65)


@pytest.mark.parametrize("case", ["missing-folder", "a-folder"])
def test_plot_refuses_an_out_it_cannot_write(tmp_path, case):
    f = tmp_path / "m.jsonl"
    f.write_text(EPOCH)
    (tmp_path / "d").mkdir()
    out = tmp_path / ("nowhere/o.png" if case == "missing-folder" else "d")
    r = subprocess.run([str(PLOT), "--out", str(out), str(f)], capture_output=True, text=True)
    one_line_error(r, "plot", 73)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "m.jsonl"]
    assert os.listdir(tmp_path / "d") == []
