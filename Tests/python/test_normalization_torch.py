"""The normalization lab against PyTorch and hand-computed values: precise BN (fvcore's
update_bn_stats) and its checkpoints (docs/normalization.md)."""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import read_idx, run, scaled
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "Scripts" / "reference"))
import bntrain_torch  # noqa: E402
import batch_renorm  # noqa: E402,F401


def records(out, kind):
    return [r for r in map(json.loads, out.splitlines()) if r["kind"] == kind]


def torch_precise_bn(net, x, batch, limit=None):
    """fvcore's update_bn_stats, written from its source: momentum 1 (so each forward leaves
    the batch's statistics in the buffers), cumulative averages in batch order, whole
    batches of the first `limit` rows."""
    import torch
    bns = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    n = len(x) if limit is None else min(limit, len(x))
    rows = min(batch, n)
    mean = [torch.zeros_like(m.running_mean) for m in bns]
    var = [torch.zeros_like(m.running_var) for m in bns]
    net.train()
    with torch.no_grad():
        for i in range(max(n // rows, 1)):
            net(x[i * rows:(i + 1) * rows])
            for k, m in enumerate(bns):
                mean[k] += (m.running_mean - mean[k]) / (i + 1)
                var[k] += (m.running_var - var[k]) / (i + 1)
    for m, mo, a, b in zip(bns, saved, mean, var):
        m.momentum = mo
        m.running_mean.copy_(a)
        m.running_var.copy_(b)
    return bns


@pytest.mark.parametrize("spec", ["bn-paper", "conv8k3-bn-relu-maxpool2-fc"])
def test_precise_bn_is_step_matched_with_fvcore_update_bn_stats(bntrain, small_fashion, tmp_path, spec):
    """Shared initial weights, file order: every epoch, PyTorch trains, saves its EMA
    statistics, recomputes them as fvcore does over the first 640 images, evaluates the test
    set, and puts the EMA back, as --bn-stats precise does. Test losses agree to 1e-4
    relative, the checkpoint's running statistics are fvcore's and its bn_ema.* PyTorch's EMA."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(3)
    torch.set_num_threads(1)
    image = (1, 28, 28) if bntrain_torch.is_convolutional(spec) else None
    model = bntrain_torch.sequential(spec, 784, 10, image=image)
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "init.safetensors"))
    # One shard per batch and, for the conv net, a rate below SGD's chaos there (test_cnn_torch.py).
    epochs, batch, lr, limit = 3, 64, (0.01 if image else 0.05), 640
    out = run([bntrain, "--data", str(small_fashion), "--model", spec, "--init-from", str(tmp_path / "init.safetensors"),
               "--shuffle", "none", "--epochs", str(epochs), "--batch", str(batch), "--lr", str(lr), "--quiet",
               "--bn-stats", "precise", "--precise-bn-examples", str(limit), "--bn-running-var", "unbiased",
               "--shard-size", str(batch),                "--save", str(tmp_path / "run.safetensors"), "--log-format", "jsonl"]).stdout
    ours = [r["test_loss"] for r in records(out, "epoch")]

    x = torch.from_numpy(scaled(read_idx(small_fashion / "train-images-idx3-ubyte")))
    y = torch.from_numpy(read_idx(small_fashion / "train-labels-idx1-ubyte").astype(np.int64))
    tx = torch.from_numpy(scaled(read_idx(small_fashion / "t10k-images-idx3-ubyte")))
    ty = torch.from_numpy(read_idx(small_fashion / "t10k-labels-idx1-ubyte").astype(np.int64))
    if image:
        x, tx = x.view(-1, *image), tx.view(-1, *image)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    theirs = []
    for _ in range(epochs):
        model.train()
        for s in range(0, len(x), batch):
            loss = torch.nn.functional.cross_entropy(model(x[s:s + batch]), y[s:s + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        bns = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
        ema = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
        torch_precise_bn(model, x, batch, limit)
        model.eval()
        with torch.no_grad():
            theirs.append(torch.nn.functional.cross_entropy(model(tx), ty).item())
        for m, (a, b) in zip(bns, ema):
            m.running_mean.copy_(a)
            m.running_var.copy_(b)
    for e, (a, b) in enumerate(zip(ours, theirs), 1):
        print(f"{spec} epoch {e}: test loss bntrain {a} PyTorch {b:.6f} relative {abs(a - b) / b:.1e}")
        assert abs(a - b) / b < 1e-4, (e, a, b)
    # The pass itself, from bntrain's own final weights: fvcore's statistics, to float32 rounding.
    saved = load_file(str(tmp_path / "run.safetensors"))
    names = sorted({k.split(".")[0] for k in saved if k.endswith(".running_mean") and not k.startswith("bn_ema.")}, key=int)
    mine = bntrain_torch.sequential(spec, 784, 10, image=image)
    state = {k: torch.from_numpy(v) for k, v in saved.items() if not k.startswith(("optimizer.", "bn_ema."))}
    mine.load_state_dict(state)
    torch_precise_bn(mine, x, batch, limit)
    sd = mine.state_dict()
    for name in names:
        for what in ("running_mean", "running_var"):
            np.testing.assert_allclose(saved[f"{name}.{what}"], sd[f"{name}.{what}"].numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{name}.{what}")
    # The EMA statistics kept beside: PyTorch's, to the drift of three epochs of training.
    assert len(names) == len(ema)
    for name, (em, ev) in zip(names, ema):
        np.testing.assert_allclose(saved[f"bn_ema.{name}.running_mean"], em.numpy(), rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(saved[f"bn_ema.{name}.running_var"], ev.numpy(), rtol=2e-3, atol=2e-4)


def test_precise_statistics_of_an_input_bn_are_the_hand_computed_batch_averages(bntrain, tiny, tmp_path):
    """`bn-fc` normalises the pixels themselves: its precise running mean is the average of
    the batch means and its running variance the average of the batch variances (biased, the
    default), over whole batches of the first 250 images: 3 batches of 80, the rest left out."""
    run([bntrain, "--data", str(tiny), "--model", "bn-fc", "--epochs", "1", "--batch", "80", "--quiet",
         "--bn-stats", "precise", "--precise-bn-examples", "250", "--save", str(tmp_path / "p.safetensors")])
    x = scaled(read_idx(tiny / "train-images-idx3-ubyte")).astype(np.float64)[:240].reshape(3, 80, -1)
    saved = load_file(str(tmp_path / "p.safetensors"))
    np.testing.assert_allclose(saved["0.running_mean"], x.mean(axis=1).mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(saved["0.running_var"], x.var(axis=1).mean(axis=0), rtol=1e-5, atol=1e-6)
    # Not the pooled variance of the 240 images (which adds the spread of the batch means).
    pooled = x.reshape(240, -1).var(axis=0)
    assert np.abs(saved["0.running_var"] - pooled).max() > 1e-6


def tensors(path):
    return {k: v.tobytes() for k, v in load_file(str(path)).items()}


def test_precise_bn_gives_the_same_bits_for_any_worker_count_and_on_resume(bntrain, small_fashion, tmp_path):
    """Workers 1 and 2 write identical tensors; 2 epochs straight equal 1 epoch, then a resume
    for the second (the EMA continues from bn_ema.*, not from the precise values)."""
    base = [bntrain, "--data", str(small_fashion), "--model", "mlp", "--batch", "128", "--quiet",
            "--bn-stats", "precise", "--log-format", "jsonl"]
    outs = {}
    for w in ("1", "2"):
        outs[w] = run(base + ["--epochs", "2", "--workers", w, "--save", str(tmp_path / f"w{w}.safetensors")]).stdout
    assert tensors(tmp_path / "w1.safetensors") == tensors(tmp_path / "w2.safetensors")
    run(base + ["--epochs", "1", "--save", str(tmp_path / "r.safetensors")])
    resumed = run([bntrain, "--resume", str(tmp_path / "r.safetensors"), "--data", str(small_fashion), "--epochs", "2",
                   "--quiet", "--log-format", "jsonl", "--save", str(tmp_path / "r.safetensors")]).stdout
    assert tensors(tmp_path / "r.safetensors") == tensors(tmp_path / "w1.safetensors")
    assert records(resumed, "epoch")[-1]["test_loss"] == records(outs["1"], "epoch")[-1]["test_loss"]
    # The precise statistics differ from the EMA ones kept beside them.
    t = load_file(str(tmp_path / "w1.safetensors"))
    assert not np.array_equal(t["1.running_mean"], t["bn_ema.1.running_mean"])


def test_eval_precise_bn_recomputes_what_a_precise_run_saves(bntrain, small_fashion, tmp_path):
    """Precise BN never changes training: an EMA run and a precise run train alike, and
    `eval --precise-bn all` of the EMA run's checkpoint gives the precise run's last test loss
    (bn-paper has no dropout, so the passes see the same batches the same way)."""
    base = [bntrain, "--data", str(small_fashion), "--model", "bn-paper", "--batch", "60", "--epochs", "2", "--quiet", "--log-format", "jsonl"]
    ema = run(base + ["--save", str(tmp_path / "ema.safetensors")]).stdout
    precise = run(base + ["--bn-stats", "precise"]).stdout
    assert [r["train_loss"] for r in records(ema, "epoch")] == [r["train_loss"] for r in records(precise, "epoch")]
    assert "precise_seconds" in records(precise, "epoch")[0] and "precise_seconds" not in records(ema, "epoch")[0]
    out = run([bntrain, "eval", "--model", str(tmp_path / "ema.safetensors"), "--data", str(small_fashion), "--precise-bn", "all", "--log-format", "jsonl"]).stdout
    e = json.loads(out)
    assert e["precise_bn"] == 1260 and e["precise_bn_batch"] == 60  # 21 whole batches of the 1,280 images
    assert e["test_loss"] == records(precise, "epoch")[-1]["test_loss"]
    plain = json.loads(run([bntrain, "eval", "--model", str(tmp_path / "ema.safetensors"), "--data", str(small_fashion), "--log-format", "jsonl"]).stdout)
    assert plain["test_loss"] == records(ema, "epoch")[-1]["test_loss"] != e["test_loss"]


def test_bn_report_against_numpy_for_a_bn_on_the_pixels(bntrain, tiny, tmp_path):
    """`bn-fc`: the population statistics are the pixels' own, and batch-statistics accuracy
    is BN on each test batch then the fc layer; both computed here in numpy from the saved
    weights. The running and precise accuracies are eval's, without and with --precise-bn."""
    ck = tmp_path / "m.safetensors"
    run([bntrain, "--data", str(tiny), "--model", "bn-fc", "--epochs", "1", "--batch", "50", "--lr", "0.1", "--quiet", "--save", str(ck)])
    out = run([bntrain, "bn-report", "--model", str(ck), "--data", str(tiny), "--log-format", "jsonl"]).stdout
    layer, summary = records(out, "bn")[0], records(out, "bn_report")[0]
    t = load_file(str(ck))
    x = scaled(read_idx(tiny / "train-images-idx3-ubyte")).astype(np.float64)
    mu, var = x.mean(axis=0), x.var(axis=0)
    want = np.linalg.norm(t["0.running_mean"] - mu) / np.linalg.norm(np.sqrt(var))
    assert abs(layer["mean_distance"] - want) < 1e-5 * max(1, want)
    want_v = np.linalg.norm(t["0.running_var"] - var) / np.linalg.norm(var)
    assert abs(layer["var_distance"] - want_v) < 1e-5 * max(1, want_v)
    tx = scaled(read_idx(tiny / "t10k-images-idx3-ubyte")).astype(np.float64)
    ty = read_idx(tiny / "t10k-labels-idx1-ubyte")
    correct = 0
    for s in range(0, len(tx), 50):
        b = tx[s:s + 50]
        h = (b - b.mean(axis=0)) / np.sqrt(b.var(axis=0) + 1e-5) * t["0.weight"] + t["0.bias"]
        correct += int(((h @ t["1.weight"].T.astype(np.float64) + t["1.bias"]).argmax(axis=1) == ty[s:s + 50]).sum())
    assert summary["acc_batch"] == round(correct / len(tx), 4)
    plain = json.loads(run([bntrain, "eval", "--model", str(ck), "--data", str(tiny), "--log-format", "jsonl"]).stdout)
    precise = json.loads(run([bntrain, "eval", "--model", str(ck), "--data", str(tiny), "--log-format", "jsonl", "--precise-bn", "all"]).stdout)
    assert summary["acc_running"] == plain["test_acc"] and summary["acc_precise"] == precise["test_acc"]
    assert summary["drift_layer"] == "0" and summary["layers"] == 1


@pytest.mark.parametrize("args,needle", [
    (["--model", "fc32-relu-fc", "--bn-stats", "precise"], "--bn-stats precise recomputes BN statistics, but model"),
    (["--model", "bn-paper", "--precise-bn-examples", "100"], "--precise-bn-examples sets how many images"),
    (["--model", "bn-paper", "--bn-stats", "precise", "--precise-bn-examples", "100000"], "is more than the 400 training images"),
    (["--model", "bn-paper", "--bn-stats", "precise", "--precise-bn-examples", "0"], "--precise-bn-examples must be from 1"),
    (["--model", "bn-paper", "--bn-stats", "exact"], "--bn-stats"),
])
def test_bad_precise_bn_flags_get_one_line_and_exit_64(bntrain, tiny, args, needle):
    import subprocess
    r = subprocess.run([bntrain, "--data", str(tiny), "--epochs", "1"] + args, capture_output=True, text=True)
    assert r.returncode == 64, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_checkpoint_with_bad_ema_statistics_is_refused(bntrain, tiny, tmp_path):
    """The bn_ema.* tensors are validated like the model's: a NaN, a negative variance, a
    missing pair (resume of a precise run) and a stray one (an EMA run) each exit 65."""
    import subprocess
    from safetensors.numpy import save_file
    ck = tmp_path / "p.safetensors"
    run([bntrain, "--data", str(tiny), "--model", "bn-fc", "--epochs", "1", "--quiet", "--bn-stats", "precise", "--save", str(ck)])
    good = load_file(str(ck))
    import json as _json, struct
    raw = ck.read_bytes()
    meta = _json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
    cases = {
        "nan": dict(good, **{"bn_ema.0.running_mean": np.full_like(good["bn_ema.0.running_mean"], np.nan)}),
        "negative": dict(good, **{"bn_ema.0.running_var": -np.ones_like(good["bn_ema.0.running_var"])}),
        "missing": {k: v for k, v in good.items() if k != "bn_ema.0.running_var"},
    }
    for name, t in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        save_file(t, str(bad), metadata=meta)
        r = subprocess.run([bntrain, "--resume", str(bad), "--data", str(tiny), "--epochs", "2"], capture_output=True, text=True)
        assert r.returncode == 65 and "bn_ema.0" in r.stderr and len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)


def ghost(net, size):
    """Hoffer et al.'s ghost batch norm on a PyTorch net: every BN module normalises each
    consecutive group of `size` rows with the group's statistics, the running statistics
    updated once per group, in order (the module called once per group)."""
    import torch
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            plain = m.forward
            m.forward = lambda x, plain=plain, m=m: torch.cat([plain(c) for c in x.split(size)]) if m.training else plain(x)
    return net


@pytest.mark.parametrize("spec,size,shard", [("bn-paper", 16, 32), ("bn-paper", 32, 32), ("bn-paper", 64, 32),
                                             ("conv8k3-bn-relu-maxpool2-fc", 32, 16)])
def test_ghost_bn_is_step_matched_with_pytorch_groups(bntrain, small_fashion, tmp_path, spec, size, shard):
    """--bn-ghost G against PyTorch's BN called on each group of G rows: per-epoch training
    loss to 1e-4 relative, and the running statistics after the run. Ghost sizes below, at and
    above the shard (whole shards combined), and BatchNorm2D."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(11)
    torch.set_num_threads(1)
    image = (1, 28, 28) if bntrain_torch.is_convolutional(spec) else None
    model = bntrain_torch.sequential(spec, 784, 10, image=image)
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "init.safetensors"))
    epochs, batch, lr = 2, 128, (0.01 if image else 0.05)
    out = run([bntrain, "--data", str(small_fashion), "--model", spec, "--init-from", str(tmp_path / "init.safetensors"),
               "--shuffle", "none", "--epochs", str(epochs), "--batch", str(batch), "--lr", str(lr), "--quiet", "--log-format", "jsonl",
               "--bn-ghost", str(size), "--shard-size", str(shard), "--bn-running-var", "unbiased", "--workers", "2",
               "--save", str(tmp_path / "g.safetensors")]).stdout
    ours = [r["train_loss"] for r in records(out, "epoch")]
    x = torch.from_numpy(scaled(read_idx(small_fashion / "train-images-idx3-ubyte")))
    y = torch.from_numpy(read_idx(small_fashion / "train-labels-idx1-ubyte").astype(np.int64))
    if image:
        x = x.view(-1, *image)
    ghost(model, size)
    from conftest import torch_epoch_losses
    theirs = torch_epoch_losses(model, x, y, epochs, batch, lr)
    for e, (a, b) in enumerate(zip(ours, theirs), 1):
        print(f"{spec} ghost {size} shard {shard} epoch {e}: bntrain {a} PyTorch {b:.6f} relative {abs(a - b) / b:.1e}")
        assert abs(a - b) / b < 1e-4, (e, a, b)
    saved, sd = load_file(str(tmp_path / "g.safetensors")), model.state_dict()
    for k in sd:
        if k.endswith(("running_mean", "running_var")):
            np.testing.assert_allclose(saved[k], sd[k].numpy(), rtol=2e-3, atol=2e-4, err_msg=k)
        if k.endswith("num_batches_tracked"):
            assert int(saved[k]) == int(sd[k]), k  # one update per ghost batch


def test_ghost_bn_differs_from_whole_batch_bn_and_equals_bn_sync_off_at_the_shard(bntrain, small_fashion, tmp_path):
    """--bn-ghost S is --bn-sync off (the shard as the ghost batch), bit for bit; a ghost
    batch of the whole batch is plain BN; any other size changes the numbers."""
    base = [bntrain, "--data", str(small_fashion), "--model", "bn-paper", "--epochs", "1", "--batch", "128", "--quiet", "--log-format", "jsonl"]
    def loss(*extra):
        return records(run(base + list(extra)).stdout, "epoch")[0]["train_loss"]
    assert loss("--bn-ghost", "32") == loss("--bn-sync", "off")
    assert loss("--bn-ghost", "128") == loss()
    assert loss("--bn-ghost", "64") not in (loss(), loss("--bn-sync", "off"))
    # Any worker count: the same bits.
    assert loss("--bn-ghost", "64", "--workers", "2") == loss("--bn-ghost", "64", "--workers", "1")


@pytest.mark.parametrize("args,needle", [
    (["--bn-ghost", "500"], "is larger than the batch"),
    (["--bn-ghost", "48", "--batch", "96"], "is not a multiple of --shard-size 32"),
    (["--bn-ghost", "16", "--bn-sync", "off"], "give one of them"),
    (["--bn-ghost", "0"], "--bn-ghost must be from 1"),
    (["--bn-ghost", "8", "--model", "fc16-relu-fc"], "has no bn layer"),
])
def test_bad_ghost_flags_get_one_line_and_exit_64(bntrain, tiny, args, needle):
    import subprocess
    r = subprocess.run([bntrain, "--data", str(tiny), "--epochs", "1", "--model", "bn-paper"] + args, capture_output=True, text=True)
    assert r.returncode == 64, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("spec,fixed", [("bn-paper", True), ("bn-paper", False), ("conv8k3-bn-relu-maxpool2-fc", True),
                                        ("conv8k3-bn-relu-maxpool2-fc", False)])
def test_batch_renorm_is_step_matched_with_the_paper_reference(bntrain, small_fashion, tmp_path, spec, fixed):
    """--bn-renorm against Scripts/reference/batch_renorm.py (Algorithm 1 in PyTorch, r and d
    under no_grad): fixed limits (r_max 1.5, d_max 0.5) and the paper's schedule scaled to the
    run; per-epoch training loss to 1e-4 relative and the running statistics after. Two
    epochs: with the relaxed limits the conv net's weights drift apart ~10x per epoch (7e-7,
    5e-6, 7e-5 of the largest conv weight after epochs 1-3, losses still within 5e-6), since
    r and d held constant are a biased gradient that amplifies float32 rounding."""
    import torch
    from safetensors.torch import save_file
    import batch_renorm
    torch.manual_seed(13)
    torch.set_num_threads(1)
    image = (1, 28, 28) if bntrain_torch.is_convolutional(spec) else None
    model = bntrain_torch.sequential(spec, 784, 10, image=image)
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "init.safetensors"))
    epochs, batch, lr = 2, 64, (0.01 if image else 0.05)
    flags = ["--renorm-rmax", "1.5", "--renorm-dmax", "0.5"] if fixed else []
    out = run([bntrain, "--data", str(small_fashion), "--model", spec, "--init-from", str(tmp_path / "init.safetensors"),
               "--shuffle", "none", "--epochs", str(epochs), "--batch", str(batch), "--lr", str(lr), "--quiet", "--log-format", "jsonl",
               "--bn-renorm", "--shard-size", str(batch), "--save", str(tmp_path / "r.safetensors")] + flags).stdout
    ours = [r["train_loss"] for r in records(out, "epoch")]
    x = torch.from_numpy(scaled(read_idx(small_fashion / "train-images-idx3-ubyte")))
    y = torch.from_numpy(read_idx(small_fashion / "train-labels-idx1-ubyte").astype(np.int64))
    if image:
        x = x.view(-1, *image)
    batch_renorm.renormalize(model)
    steps = (len(x) + batch - 1) // batch
    from conftest import torch_epoch
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    theirs = []
    for e in range(epochs):
        def before(k, e=e):
            batch_renorm.set_limits(model, *((1.5, 0.5) if fixed else batch_renorm.limits(e * steps + k, epochs * steps)))
        theirs.append(torch_epoch(model, opt, x, y, batch, before_step=before))
    if not fixed:
        last = records(out, "epoch")[-1]
        assert (last["renorm_rmax"], last["renorm_dmax"]) == (3.0, 5.0)
        assert records(out, "epoch")[0]["renorm_rmax"] < 3.0
    for e, (a, b) in enumerate(zip(ours, theirs), 1):
        print(f"{spec} renorm {'fixed' if fixed else 'schedule'} epoch {e}: bntrain {a} PyTorch {b:.6f} relative {abs(a - b) / b:.1e}")
        assert abs(a - b) / b < 1e-4, (e, a, b)
    saved, sd = load_file(str(tmp_path / "r.safetensors")), model.state_dict()
    for k in sd:
        if k.endswith(("running_mean", "running_var")):
            np.testing.assert_allclose(saved[k], sd[k].numpy(), rtol=2e-3, atol=2e-4, err_msg=k)


def test_batch_renorm_changes_training_and_unit_limits_do_not(bntrain, small_fashion):
    """r_max 1, d_max 0 is plain BN (to rounding); the schedule's relaxed limits are not."""
    base = [bntrain, "--data", str(small_fashion), "--model", "bn-paper", "--epochs", "2", "--batch", "32", "--quiet", "--log-format", "jsonl"]
    def losses(*extra):
        return [r["train_loss"] for r in records(run(base + list(extra)).stdout, "epoch")]
    plain, unit, relaxed = losses(), losses("--bn-renorm", "--renorm-rmax", "1", "--renorm-dmax", "0"), losses("--bn-renorm", "--renorm-rmax", "3", "--renorm-dmax", "5")
    assert all(abs(a - b) < 1e-5 for a, b in zip(plain, unit))
    assert any(abs(a - b) > 1e-3 for a, b in zip(plain, relaxed))


@pytest.mark.parametrize("spec", ["bn-paper", "conv8k3-bn-relu-maxpool2-fc"])
def test_freezing_is_step_matched_with_pytorch_bn_eval(bntrain, small_fashion, tmp_path, spec):
    """--bn-freeze-after 2 against PyTorch with every BN module put in eval mode from epoch 2
    (running statistics used and left alone, gradients through them as constants): per-epoch
    training loss to 1e-4 relative, the running statistics unchanged after epoch 1, and two
    workers the same bits as one."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(17)
    torch.set_num_threads(1)
    image = (1, 28, 28) if bntrain_torch.is_convolutional(spec) else None
    model = bntrain_torch.sequential(spec, 784, 10, image=image)
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "init.safetensors"))
    epochs, batch, lr = 3, 64, (0.01 if image else 0.05)
    def ours(workers, save):
        return run([bntrain, "--data", str(small_fashion), "--model", spec, "--init-from", str(tmp_path / "init.safetensors"),
                    "--shuffle", "none", "--epochs", str(epochs), "--batch", str(batch), "--lr", str(lr), "--quiet", "--log-format", "jsonl",
                    "--bn-freeze-after", "2", "--shard-size", str(batch), "--bn-running-var", "unbiased", "--workers", workers, "--save", str(save)]).stdout
    one = ours("1", tmp_path / "f1.safetensors")
    two = ours("2", tmp_path / "f2.safetensors")
    assert tensors(tmp_path / "f1.safetensors") == tensors(tmp_path / "f2.safetensors")
    mine = [r["train_loss"] for r in records(one, "epoch")]
    assert [r["bn_frozen"] for r in records(one, "epoch")] == ["no", "yes", "yes"]
    x = torch.from_numpy(scaled(read_idx(small_fashion / "train-images-idx3-ubyte")))
    y = torch.from_numpy(read_idx(small_fashion / "train-labels-idx1-ubyte").astype(np.int64))
    if image:
        x = x.view(-1, *image)
    from conftest import torch_epoch
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    bns = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    theirs = [torch_epoch(model, opt, x, y, batch)]
    after_one = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    for _ in range(epochs - 1):
        model.train()
        for m in bns:
            m.eval()
        total = 0.0
        for s in range(0, len(x), batch):
            loss = torch.nn.functional.cross_entropy(model(x[s:s + batch]), y[s:s + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(y[s:s + batch])
        theirs.append(total / len(x))
    for e, (a, b) in enumerate(zip(mine, theirs), 1):
        print(f"{spec} freeze epoch {e}: bntrain {a} PyTorch {b:.6f} relative {abs(a - b) / b:.1e}")
        assert abs(a - b) / b < 1e-4, (e, a, b)
    saved = load_file(str(tmp_path / "f1.safetensors"))
    for k, v in after_one.items():
        np.testing.assert_allclose(saved[k], v.numpy(), rtol=2e-3, atol=2e-4, err_msg=k)


@pytest.mark.parametrize("args,needle", [
    (["--renorm-rmax", "2"], "add --bn-renorm"),
    (["--bn-renorm", "--renorm-rmax", "0.5"], "--renorm-rmax must be from 1"),
    (["--bn-renorm", "--renorm-dmax=-1"], "--renorm-dmax must be from 0"),
    (["--bn-renorm", "--model", "fc16-relu-fc"], "has no bn layer"),
    (["--bn-freeze-after", "0"], "--bn-freeze-after must be an epoch"),
    (["--bn-freeze-after", "2", "--bn-stats", "precise"], "use one of them"),
    (["--bn-freeze-after", "2", "--model", "fc16-relu-fc"], "has no bn layer"),
])
def test_bad_renorm_and_freeze_flags_get_one_line_and_exit_64(bntrain, tiny, args, needle):
    import subprocess
    r = subprocess.run([bntrain, "--data", str(tiny), "--epochs", "1", "--model", "bn-paper"] + args, capture_output=True, text=True)
    assert r.returncode == 64, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_precise_checkpoint_loads_in_pytorch_with_its_precise_statistics(bntrain, small_fashion, tmp_path):
    """Scripts/reference/bntrain_torch.py drops the bn_ema.* state and evaluates the precise
    statistics: the accuracy bntrain eval reports."""
    import torch
    ck = tmp_path / "p.safetensors"
    run([bntrain, "--data", str(small_fashion), "--model", "mlp", "--epochs", "1", "--quiet", "--bn-stats", "precise", "--save", str(ck)])
    net, _, _, _ = bntrain_torch.load(ck)
    net.eval()
    tx = torch.from_numpy(scaled(read_idx(small_fashion / "t10k-images-idx3-ubyte")))
    ty = torch.from_numpy(read_idx(small_fashion / "t10k-labels-idx1-ubyte").astype(np.int64))
    with torch.no_grad():
        acc = (net(tx).argmax(1) == ty).float().mean().item()
    e = json.loads(run([bntrain, "eval", "--model", str(ck), "--data", str(small_fashion), "--log-format", "jsonl"]).stdout)
    assert round(acc, 4) == e["test_acc"]
