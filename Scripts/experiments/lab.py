"""Shared pieces of the normalization lab's experiments (Scripts/experiments/*): the
project's .venv, the release build, the dataset, cached runs, IDX files and statistics."""
import gzip
import json
import os
import pathlib
import struct
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def under_venv(name):
    """Re-runs the calling script with the project's .venv python (Scripts/pyenv adds matplotlib)."""
    try:
        import matplotlib  # noqa: F401
        import numpy  # noqa: F401
    except ImportError:
        if os.environ.get("BNTRAIN_EXPERIMENT_REEXEC"):
            sys.exit(f"{name}: error: matplotlib is still missing; run 'Scripts/pyenv matplotlib'")
        r = subprocess.run([str(REPO / "Scripts" / "pyenv"), "matplotlib"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{name}: error: could not install matplotlib: {r.stderr.strip()}")
        os.environ["BNTRAIN_EXPERIMENT_REEXEC"] = "1"
        os.execv(r.stdout.strip(), [r.stdout.strip(), sys.argv[0]] + sys.argv[1:])


def bntrain():
    """This checkout's release bntrain, built when needed."""
    r = subprocess.run(["swift", "build", "-c", "release", "--product", "bntrain"], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"lab: error: swift build failed:\n{r.stderr.strip()[-3000:]}")
    return REPO / ".build" / "release" / "bntrain"


def dataset():
    """Data/mnist when present (the papers' dataset), else Data/fashion-mnist."""
    return REPO / "Data" / ("mnist" if (REPO / "Data" / "mnist").is_dir() else "fashion-mnist")


def run(name, cmd, log):
    """Runs bntrain `cmd` with --log-format jsonl once (its stdout kept in `log` and reused
    when complete); returns its records."""
    log = pathlib.Path(log)
    if not log.exists() or '"kind":"summary"' not in log.read_text():
        r = subprocess.run([str(c) for c in cmd] + ["--log-format", "jsonl", "--quiet"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{name}: {log.stem} failed: {r.stderr.strip()}")
        log.write_text(r.stdout)
    return [json.loads(l) for l in log.read_text().splitlines() if l.strip()]


def epochs(records):
    return [r for r in records if r["kind"] == "epoch"]


def read_idx(path):
    """An IDX file (raw or .gz) as a numpy array."""
    import numpy as np
    path = pathlib.Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_idx(path, array):
    """Writes uint8 `array` as a raw IDX file, atomically."""
    import numpy as np
    a = np.ascontiguousarray(array, dtype=np.uint8)
    tmp = pathlib.Path(str(path) + ".tmp")
    tmp.write_bytes(struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(">" + "I" * a.ndim, *a.shape) + a.tobytes())
    tmp.replace(path)


def find(data, stem):
    """The IDX file `stem` in folder `data`, raw or .gz."""
    for p in (data / stem, data / (stem + ".gz")):
        if p.exists():
            return p
    sys.exit(f"lab: error: {data} has no {stem}[.gz]; run 'Scripts/data fashion-mnist'")


def heldout_split(data, out, train=8000):
    """The issue's held-out split: the dataset's 10,000 test images cut into `train`
    training and the rest test images (file order), as an IDX folder `out`."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "t10k-labels-idx1-ubyte").exists():
        x, y = read_idx(find(data, "t10k-images-idx3-ubyte")), read_idx(find(data, "t10k-labels-idx1-ubyte"))
        write_idx(out / "train-images-idx3-ubyte", x[:train])
        write_idx(out / "train-labels-idx1-ubyte", y[:train])
        write_idx(out / "t10k-images-idx3-ubyte", x[train:])
        write_idx(out / "t10k-labels-idx1-ubyte", y[train:])
    return out


def sd(xs):
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / max(len(xs) - 1, 1)) ** 0.5
