"""Shared fixtures: the repository, the built bntrain binary, small IDX datasets."""
import gzip
import pathlib
import struct
import subprocess

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FASHION = REPO / "Data" / "fashion-mnist"


@pytest.fixture(scope="session")
def bntrain():
    """Path of a release build of bntrain (built once per session)."""
    subprocess.run(["swift", "build", "-c", "release", "--product", "bntrain"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return str(REPO / ".build" / "release" / "bntrain")


def read_idx(path):
    data = pathlib.Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x0801 if array.ndim == 1 else 0x0803
    head = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    pathlib.Path(path).write_bytes(head + array.tobytes())


@pytest.fixture(scope="session")
def fashion():
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"{FASHION} is missing; run 'Scripts/data fashion-mnist' first")
    return FASHION


@pytest.fixture(scope="session")
def small_fashion(tmp_path_factory, fashion):
    """The first 1,280 training and 2,000 test images of Fashion-MNIST, as raw IDX files."""
    d = tmp_path_factory.mktemp("small-fashion")
    for split, n in (("train", 1280), ("t10k", 2000)):
        write_idx(d / f"{split}-images-idx3-ubyte", read_idx(fashion / f"{split}-images-idx3-ubyte.gz")[:n])
        write_idx(d / f"{split}-labels-idx1-ubyte", read_idx(fashion / f"{split}-labels-idx1-ubyte.gz")[:n])
    return d


def scaled(images):
    """bntrain's pixel scaling, (p/255 - 0.5) * 2, computed in float64 and rounded to float32."""
    return ((images.reshape(len(images), -1).astype(np.float64) / 255.0 - 0.5) * 2.0).astype(np.float32)


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, r.stderr
    return r


def fields(line):
    return dict(tok.split("=", 1) for tok in line.split() if "=" in tok)


def striped_dataset(d, side, classes, counts, row, columns, low, high, bright, seed):
    """IDX files in folder d: noise in [low, high) with class k's stripe, row(k) over
    `columns`, set to `bright`; counts = (train, test) images, labels cycling through classes."""
    d.mkdir()
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "t10k"), counts):
        y = np.arange(n) % classes
        x = rng.integers(low, high, (n, side, side)).astype(np.uint8)
        for i in range(n):
            x[i, row(y[i]), columns] = bright
        write_idx(d / f"{split}-images-idx3-ubyte", x)
        write_idx(d / f"{split}-labels-idx1-ubyte", y)
    return d


@pytest.fixture
def tiny(tmp_path):
    """A 4-class 6x6 dataset that trains in milliseconds (class k: row k+1 bright)."""
    return striped_dataset(tmp_path / "tiny", 6, 4, (400, 200), lambda k: k + 1, slice(None), 20, 80, 170, 0)


def torch_epoch(net, opt, x, y, batch, shuffler=None, before_step=None):
    """One epoch of minibatch training over (x, y) in file order (bntrain's --shuffle none):
    the mean loss, weighted by batch size as bntrain's train_loss is. With `shuffler` (a
    torch.Generator) the rows inside every batch are reordered (same examples, another
    summation order); `before_step(k)` runs before batch k (a per-step rate, say)."""
    import torch
    net.train()
    total = 0.0
    for k, s in enumerate(range(0, len(x), batch)):
        if before_step is not None:
            before_step(k)
        xb, yb = x[s:s + batch], y[s:s + batch]
        if shuffler is not None:
            order = torch.randperm(len(yb), generator=shuffler)
            xb, yb = xb[order], yb[order]
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(yb)
    return total / len(x)


def torch_epoch_losses(model, x, y, epochs, batch, lr):
    """Plain SGD over (x, y) in file order: each epoch's mean loss."""
    import torch
    return torch_losses(model, torch.optim.SGD(model.parameters(), lr=lr), x, y, epochs, batch)


def torch_losses(net, opt, x, y, epochs, batch, permute=None):
    """Per-epoch mean training losses of plain minibatch training in file order; with
    `permute` (a seed), the rows inside every batch are reordered (same examples, another
    summation order: PyTorch's own rounding-level spread)."""
    import torch
    g = torch.Generator().manual_seed(permute) if permute is not None else None
    return [torch_epoch(net, opt, x, y, batch, g) for _ in range(epochs)]
