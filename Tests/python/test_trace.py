"""--trace records against numpy: the same activations (the saved model run on the probe set
by PyTorch, up to the traced layer) give the same percentiles, mean and sd; every log format
carries the records in a parseable form."""
import csv
import io
import json
import shlex
import sys

import numpy as np
import pytest

from conftest import REPO, read_idx, run, scaled

sys.path.insert(0, str(REPO / "Scripts" / "reference"))
import bntrain_torch  # noqa: E402


def parse_text(line):
    return dict(tok.split("=", 1) for tok in shlex.split(line) if "=" in tok)


@pytest.mark.parametrize("model,trace,index,side", [
    ("bn-paper", "last-sigmoid", 8, "input"),                       # BN output feeding the last sigmoid
    ("bn-paper --no-batchnorm", "last-sigmoid:unit=7", 5, "input"),  # a pre-activation (fc+sigmoid unfused)
    ("mlp", "4:output:unit=3", 4, "output"),                         # the second fc's output
])
def test_trace_matches_numpy_on_the_same_activations(bntrain, small_fashion, tmp_path, model, trace, index, side):
    import torch
    ckpt = tmp_path / "m.safetensors"
    steps = 20  # 1,280 images in batches of 64: the trace at step 20 sees the saved model
    out = run([bntrain, "--data", str(small_fashion), "--model", *model.split(), "--epochs", "1", "--trace", trace,
               "--trace-every", str(steps), "--trace-examples", "300", "--save", str(ckpt), "--quiet",
               "--log-format", "jsonl"]).stdout
    rec = [json.loads(l) for l in out.splitlines() if json.loads(l)["kind"] == "trace"]
    assert len(rec) == 1 and rec[0]["step"] == steps and rec[0]["layer"] == index and rec[0]["side"] == side
    net, _, _, _ = bntrain_torch.load(ckpt)
    x = torch.from_numpy(scaled(read_idx(small_fashion / "t10k-images-idx3-ubyte")[:300]))
    with torch.no_grad():
        a = net[: index + (1 if side == "output" else 0)](x).double().numpy()
    unit = int(trace.split("unit=")[1]) if "unit=" in trace else 0
    for prefix, values in (("", a[:, unit]), ("all_", a.ravel())):
        expected = {"p15": np.percentile(values, 15), "p50": np.percentile(values, 50), "p85": np.percentile(values, 85),
                    "mean": values.mean(), "std": values.std()}
        for k, v in expected.items():
            assert rec[0][prefix + k] == pytest.approx(v, rel=1e-4, abs=1e-5), f"{model} {prefix}{k}"


def test_trace_and_eval_records_in_every_format(bntrain, tiny, tmp_path):
    args = [bntrain, "--data", str(tiny), "--epochs", "2", "--batch", "20", "--trace", "last-bn:output", "--trace-every", "5",
            "--eval-every", "10", "--quiet"]
    text = run(args).stdout.splitlines()
    jsonl = [json.loads(l) for l in run(args + ["--log-format", "jsonl"]).stdout.splitlines()]
    csv_out = run(args + ["--log-format", "csv", "--metrics", str(tmp_path / "m.csv")]).stdout
    traces_text = [parse_text(l) for l in text if l.startswith("trace ")]
    traces_json = [r for r in jsonl if r["kind"] == "trace"]
    traces_csv = [parse_text(l[2:]) for l in csv_out.splitlines() if l.startswith("# trace ")]
    assert len(traces_text) == len(traces_json) == len(traces_csv) == 8  # 40 steps, every 5
    for t, j, c in zip(traces_text, traces_json, traces_csv):
        assert float(t["p50"]) == pytest.approx(j["p50"]) == pytest.approx(float(c["p50"]))
        assert int(t["step"]) == j["step"]
    assert [r["step"] for r in jsonl if r["kind"] == "eval"] == [10, 20, 30, 40]
    # The CSV table still parses (pandas-style: comment lines skipped) with epoch rows only.
    rows = list(csv.DictReader(io.StringIO("\n".join(l for l in csv_out.splitlines() if not l.startswith("#")))))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    metrics = (tmp_path / "m.csv").read_text().splitlines()
    assert sum(l.startswith("# trace ") for l in metrics) == 8 and sum(l.startswith("# eval ") for l in metrics) == 4
