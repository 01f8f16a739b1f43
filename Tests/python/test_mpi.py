"""Several processes under Open MPI (`mpirun` on localhost): 2 and 3 ranks, with 1 or 2 workers
each, print the records and save the tensors of one process on one worker, bit for bit; only
rank 0 writes; a rank that read other data is refused with one line naming it. Skipped where
`mpirun` is missing (Scripts/test installs openmpi-bin)."""
import json
import shutil
import struct
import subprocess

import numpy as np
import pytest

from conftest import run, write_idx

MPIRUN = shutil.which("mpirun")
pytestmark = pytest.mark.skipif(MPIRUN is None, reason="Open MPI's mpirun is not installed (Scripts/setup openmpi-bin)")


def mpirun(n, args, timeout=240):
    """`mpirun -n N` on this host only (loopback), as root in CI; a hung job fails the test."""
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "--host", f"localhost:{n}",
           "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo", "-n", str(n)] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def stable(stdout):
    """Records without timings, paths and the worker count."""
    out = []
    for line in stdout.splitlines():
        keep = [t for t in line.split() if "seconds" not in t.split("=", 1)[0] and t.split("=", 1)[0] not in ("workers", "saved", "save")]
        out.append(" ".join(keep))
    return out


def tensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    body = data[8 + n:]
    return {k: body[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in head.items() if k != "__metadata__"}


@pytest.fixture
def digits(tmp_path):
    """28x28 images, 10 classes, 700 training and 200 test images (the presets' input size)."""
    d = tmp_path / "digits"
    d.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 700), ("t10k", 200)):
        y = np.arange(n) % 10
        x = rng.integers(0, 90, (n, 28, 28)).astype(np.uint8)
        for i in range(n):
            x[i, 2 * y[i] + 3, 4:24] = 220
        write_idx(d / f"{split}-images-idx3-ubyte", x)
        write_idx(d / f"{split}-labels-idx1-ubyte", y)
    return d


@pytest.mark.parametrize("model,extra", [
    ("dfn2", ["--optimizer", "adam", "--lr", "1e-3"]),
    ("lenet-bn", ["--optimizer", "adam", "--lr", "1e-3", "--batch", "100"]),
    ("mlp", ["--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05", "--bn-sync", "off", "--batch", "70"]),
])
def test_ranks_give_one_process_bits(bntrain, digits, tmp_path, model, extra):
    args = ["--data", str(digits), "--model", model, "--epochs", "2", "--seed", "4", "--eval-every", "5"] + extra
    one = run([bntrain] + args + ["--workers", "1", "--save", str(tmp_path / "one.safetensors")])
    want = stable(one.stdout)
    for n, workers in ((2, "1"), (3, "2")):
        save = tmp_path / f"ranks{n}.safetensors"
        r = mpirun(n, [bntrain] + args + ["--workers", workers, "--save", str(save)])
        assert r.returncode == 0, r.stderr
        assert stable(r.stdout) == want, f"{n} ranks x {workers} workers printed other records"
        assert sum(line.startswith("summary ") for line in r.stdout.splitlines()) == 1, r.stdout
        assert tensors(save) == tensors(tmp_path / "one.safetensors"), f"{n} ranks saved other tensors"
        assert not any(line.startswith("bntrain: error") for line in r.stderr.splitlines()), r.stderr


def test_a_rank_with_other_data_is_refused(bntrain, digits, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(digits, other)
    x = np.frombuffer((other / "train-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8).reshape(700, 28, 28).copy()
    x[0, 0, 0] ^= 1
    write_idx(other / "train-images-idx3-ubyte", x)
    common = ["--model", "fc16-fc", "--epochs", "1"]
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
           "-n", "1", bntrain, "--data", str(digits)] + common + [":", "-n", "1", bntrain, "--data", str(other)] + common
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 65, (r.returncode, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("bntrain: error:")]
    assert len(errors) == 1, r.stderr
    assert "rank 1" in errors[0] and "other data than rank 0" in errors[0], errors
    assert r.stdout == "", r.stdout
