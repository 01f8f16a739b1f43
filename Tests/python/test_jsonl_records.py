"""Every JSON-lines record bntrain writes is one JSON object with distinct keys: a reader that
keeps the last of two equal keys (Python's json, jq, pandas) would lose a field."""
import json
import subprocess

from conftest import run


def strict(line):
    def pairs(items):
        keys = [k for k, _ in items]
        assert len(keys) == len(set(keys)), f"repeated key in {line}"
        return dict(items)
    return json.loads(line, object_pairs_hook=pairs)


def records(out):
    return [strict(line) for line in out.splitlines() if line.strip()]


def test_every_jsonl_record_kind_has_distinct_keys(bntrain, tiny, tmp_path):
    model = tmp_path / "m.safetensors"
    kinds = set()
    train = records(run([bntrain, "--data", str(tiny), "--epochs", "2", "--batch", "16", "--hidden", "8", "--val-split", "0.1",
                         "--trace", "last-sigmoid", "--trace-every", "5", "--eval-every", "10", "--log-format", "jsonl",
                         "--save", str(model), "--metrics", str(tmp_path / "m.jsonl"), "--quiet"]).stdout)
    kinds |= {r["kind"] for r in train}
    records((tmp_path / "m.jsonl").read_text())
    for cmd in (["summary", "--model", "lenet-bn"], ["summary"], ["gradcheck", "--model", "fc8-bn-relu-fc", "--samples", "5"],
                ["eval", "--model", str(model), "--data", str(tiny)],
                ["predict", "--model", str(model), "--images", str(tiny / "t10k-images-idx3-ubyte")]):
        r = subprocess.run([bntrain, *cmd, "--log-format", "jsonl"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        kinds |= {x.get("kind") for x in records(r.stdout)}
    assert {"config", "epoch", "summary", "trace", "eval", "layer", "total", "preset", "check", "prediction"} <= kinds, kinds
