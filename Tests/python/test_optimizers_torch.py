"""Optimizers and schedules step-matched with torch.optim: from shared initial weights and the
same data order, every epoch's training loss agrees to 1e-4 relative over 3 epochs (5 for
plateau, which needs a stalling validation loss), on dfn2 and on mlp without dropout, and the
rate in force at each epoch's end is the scheduler's.

Where float32 itself cannot reproduce a run to 1e-4, the bound is how closely PyTorch
reproduces itself. On mlp (ReLU after BN) some parameters have gradients that are zero in
exact arithmetic — the bias before each BN, and first-layer weights of pixels that are
constant within a batch (BN's input gradient sums to zero over the batch) — so their float32
gradients are rounding noise, which Adam and RMSprop normalise into lr-sized random steps and
large-rate SGD amplifies: PyTorch run twice, the second time with only the order of the rows
inside each batch changed, differs by ~1e-3 at epoch 2 and ~5e-3 at epoch 3. There the test
allows three times PyTorch's largest self-difference at that epoch over five such twins,
measured in the same test; dfn2 has no such parameters and is held to 1e-4 throughout."""
import json
import math
import sys

import numpy as np
import pytest

from conftest import REPO, read_idx, run, scaled, torch_epoch

sys.path.insert(0, str(REPO / "Scripts" / "reference"))
import bntrain_torch  # noqa: E402

MASK = (1 << 64) - 1


class SplitMix64:
    """bntrain's generator (BNCore/Random), to reproduce its seeded validation split."""

    def __init__(self, seed, stream=None):
        if stream is None:
            self.state = seed
            return
        h = 0xCBF29CE484222325
        for b in stream.encode():
            h = ((h ^ b) * 0x100000001B3) & MASK
        self.state = SplitMix64(seed ^ h).next()

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, bound):
        m = self.next() * bound
        low = m & MASK
        if low < bound:
            threshold = ((1 << 64) - bound) % bound
            while low < threshold:
                m = self.next() * bound
                low = m & MASK
        return m >> 64

    def shuffle(self, xs):
        for i in range(len(xs) - 1, 0, -1):
            j = self.below(i + 1)
            xs[i], xs[j] = xs[j], xs[i]


def validation_split(n, fraction, seed):
    k = max(1, math.floor(n * fraction + 0.5))
    idx = list(range(n))
    SplitMix64(seed, "validation").shuffle(idx)
    return sorted(idx[k:]), sorted(idx[:k])


CASES = {
    "sgd-momentum-nesterov-wd": (["--optimizer", "sgd", "--momentum", "0.9", "--nesterov", "--weight-decay", "5e-4", "--lr", "0.05"],
                                 lambda p: __import__("torch").optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    "adam": (["--optimizer", "adam", "--lr", "0.001"], lambda p: __import__("torch").optim.Adam(p, lr=0.001)),
    "adamw": (["--optimizer", "adamw", "--lr", "0.001", "--weight-decay", "0.05"], lambda p: __import__("torch").optim.AdamW(p, lr=0.001, weight_decay=0.05)),
    "rmsprop": (["--optimizer", "rmsprop", "--lr", "0.0005", "--momentum", "0.5", "--weight-decay", "1e-4"],
                lambda p: __import__("torch").optim.RMSprop(p, lr=0.0005, momentum=0.5, weight_decay=1e-4)),
    "step": (["--lr", "0.1", "--lr-schedule", "step", "--lr-step-epochs", "1", "--lr-gamma", "0.5"], None),
    "cosine-warmup": (["--lr", "0.1", "--lr-schedule", "cosine", "--lr-min", "0.01", "--warmup-epochs", "1"], None),
    "plateau": (["--lr", "0.5", "--lr-schedule", "plateau", "--lr-patience", "0", "--lr-factor", "0.5", "--val-split", "0.5"], None),
}


def torch_run(model, case, x, y, val, epochs, batch, dtype, seed=11, permute=None):
    """PyTorch's own run of a case: per-epoch training losses and end-of-epoch rates. With
    `permute`, the rows of every batch are reordered (the same examples, another summation
    order): the rounding-only twin used to measure PyTorch's self-agreement."""
    import torch
    flags, make_opt = CASES[case]
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    net = bntrain_torch.sequential(model, 784, 10).to(dtype)
    x, val = x.to(dtype), (val[0].to(dtype), val[1]) if val else None
    lr = float(flags[flags.index("--lr") + 1])
    opt = make_opt(net.parameters()) if make_opt else torch.optim.SGD(net.parameters(), lr=lr)
    sched, warmup_epochs = None, 0.0
    if case == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    elif case == "cosine-warmup":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0.01)
        warmup_epochs = 1.0
    elif case == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=0, threshold=1e-4)
    steps = math.ceil(len(x) / batch)
    shuffler = torch.Generator().manual_seed(permute) if permute is not None else None
    losses, rates = [], []
    for e in range(epochs):
        base = opt.param_groups[0]["lr"]

        def warmup(k):  # linear warmup per step on top of the per-epoch schedule
            opt.param_groups[0]["lr"] = base * min(1.0, (e * steps + k + 1) / (warmup_epochs * steps))
        losses.append(torch_epoch(net, opt, x, y, batch, shuffler, warmup if warmup_epochs else None))
        rates.append(opt.param_groups[0]["lr"])
        opt.param_groups[0]["lr"] = base
        if case == "plateau":
            net.eval()
            with torch.no_grad():
                sched.step(torch.nn.functional.cross_entropy(net(val[0]), val[1]).item())
        elif sched is not None:
            sched.step()
    return net, losses, rates


@pytest.mark.parametrize("model", ["dfn2", "fc256-bn-relu-fc256-bn-relu-fc"])
@pytest.mark.parametrize("case", list(CASES))
def test_step_matched_with_torch_optim(bntrain, small_fashion, tmp_path, model, case):
    import torch
    from safetensors.torch import save_file
    flags, _ = CASES[case]
    epochs, batch = (6 if case == "plateau" else 3), 64
    torch.manual_seed(11)
    init = bntrain_torch.sequential(model, 784, 10)
    save_file({k: v.detach().clone().contiguous() for k, v in init.state_dict().items()}, str(tmp_path / "init.safetensors"))
    out = run([bntrain, "--data", str(small_fashion), "--model", model, "--init-from", str(tmp_path / "init.safetensors"),
               "--shuffle", "none", "--epochs", str(epochs), "--batch", str(batch), "--bn-running-var", "unbiased",
               "--quiet", "--log-format", "jsonl", "--seed", "3",
               # One shard per batch: the plateau case at lr 0.5 grows any rounding difference
               # about 100x an epoch (PyTorch's own reorderings part by 2e-4 at epoch 4, 5e-3 at
               # 5), so it is matched on the unsharded step; the sharded step is step-matched in
               # test_workers_torch.py.
               "--shard-size", str(batch)] + flags).stdout
    records = [json.loads(l) for l in out.splitlines() if json.loads(l)["kind"] == "epoch"]
    ours = [r["train_loss"] for r in records]

    x = torch.from_numpy(scaled(read_idx(small_fashion / "train-images-idx3-ubyte")))
    y = torch.from_numpy(read_idx(small_fashion / "train-labels-idx1-ubyte").astype(np.int64))
    val = None
    if "--val-split" in flags:
        train_idx, val_idx = validation_split(len(x), float(flags[flags.index("--val-split") + 1]), 3)
        val = (x[val_idx], y[val_idx])
        x, y = x[train_idx], y[train_idx]
    _, theirs, rates = torch_run(model, case, x, y, val, epochs, batch, torch.float32)
    assert len(ours) == epochs
    floor = None
    for e, (a, b) in enumerate(zip(ours, theirs), 1):
        err, bound = abs(a - b) / b, 1e-4
        if err >= bound and model != "dfn2":
            if floor is None:  # PyTorch against itself, only the summation order changed (5 twins)
                runs = [theirs] + [torch_run(model, case, x, y, val, epochs, batch, torch.float32, permute=k)[1] for k in (1, 2, 3, 4, 5)]
                floor = [max(abs(p[i] - q[i]) / q[i] for p in runs for q in runs) for i in range(epochs)]
            bound = max(bound, 3 * floor[e - 1])
        assert err < bound, f"{case} on {model}, epoch {e}: bntrain {a} vs PyTorch {b} (relative {err:.2e}, bound {bound:.2e})"
    for e, (a, b) in enumerate(zip([r["lr"] for r in records], rates), 1):
        assert a == pytest.approx(b, rel=1e-9), f"{case} on {model}: the rate at the end of epoch {e}"
    if case == "plateau":
        lr = float(flags[flags.index("--lr") + 1])
        assert min(r["lr"] for r in records) < lr, "the plateau rule reduced the rate at least once (else this case checks nothing)"
