"""Shared pieces of the reference implementations: flags, IDX loading, report lines.

The flags and the output lines mirror bntrain's (`epoch=N train_loss=... test_acc=...
seconds=... test_seconds=...`, then `summary ...`), so Scripts/bench can parse all three alike.
"""
import argparse
import gzip
import os
import pathlib
import struct
import sys


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", default=None, help="dataset folder (default: Data/mnist, else Data/fashion-mnist)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bn-momentum", type=float, default=0.9, help="decay of the running averages (bntrain's convention)")
    p.add_argument("--bn-eps", type=float, default=1e-5)
    p.add_argument("--no-batchnorm", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-batch", type=int, default=1000)
    p.add_argument("--model", default="dfn2", help="a bntrain preset or spec (torch only; numpy implements dfn2)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw", "rmsprop"], help="torch only; numpy implements sgd")
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--adam-eps", type=float, default=1e-8)
    p.add_argument("--alpha", type=float, default=0.99)
    args = p.parse_args()
    if args.data is None:
        repo = pathlib.Path(__file__).resolve().parents[2]
        args.data = str(repo / "Data" / ("mnist" if (repo / "Data" / "mnist").is_dir() else "fashion-mnist"))
    return args


def set_threads_env(n):
    """Must run before numpy/torch are imported: OpenBLAS and OpenMP read these at load."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def _find(folder, stems):
    names = os.listdir(folder)
    for stem in stems:
        for n in (stem, stem + ".gz"):
            if n in names:
                return os.path.join(folder, n)
        matches = sorted({n for n in names if n.removesuffix(".gz").endswith("-" + stem)})
        if len(matches) >= 1:
            return os.path.join(folder, matches[0])
    sys.exit(f"reference: no file matching {stems} in {folder}")


def read_idx(path):
    """Returns (dims, raw bytes) of an unsigned-byte IDX file, gzipped or not."""
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 8:
        sys.exit(f"reference: {path} is not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def load(folder, np):
    """(train_x, train_y, test_x, test_y) as float32 in [-1, 1] and int64 labels."""
    out = []
    for images, labels in ((["train-images-idx3-ubyte"], ["train-labels-idx1-ubyte"]),
                           (["t10k-images-idx3-ubyte", "test-images-idx3-ubyte"], ["t10k-labels-idx1-ubyte", "test-labels-idx1-ubyte"])):
        dims, raw = read_idx(_find(folder, images))
        x = np.frombuffer(raw, dtype=np.uint8).reshape(dims[0], dims[1] * dims[2])
        x = ((x.astype(np.float64) / 255.0 - 0.5) * 2.0).astype(np.float32)
        _, raw = read_idx(_find(folder, labels))
        out += [x, np.frombuffer(raw, dtype=np.uint8).astype(np.int64)]
    return out


def line(kind, fields):
    s = (kind + " " if kind else "") + " ".join(f"{k}={v}" for k, v in fields)
    print(s, flush=True)


def peak_rss_mib():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def epoch_line(epoch, train_loss, prev_loss, test_loss, test_acc, seconds, test_seconds):
    """An epoch record in bntrain's text format."""
    line(None, [("epoch", epoch), ("train_loss", f"{train_loss:.6f}"),
                ("loss_change", "nan" if prev_loss is None else f"{train_loss - prev_loss:.6f}"),
                ("test_loss", f"{test_loss:.6f}"), ("test_acc", f"{test_acc:.4f}"),
                ("seconds", f"{seconds:.3f}"), ("test_seconds", f"{test_seconds:.3f}")])


def summary_line(epochs, test_acc, total_seconds):
    line("summary", [("epochs", epochs), ("final_test_acc", f"{test_acc:.4f}"),
                     ("train_seconds", f"{total_seconds:.3f}"), ("seconds_per_epoch", f"{total_seconds / epochs:.4f}"),
                     ("peak_rss_mib", f"{peak_rss_mib():.1f}")])
