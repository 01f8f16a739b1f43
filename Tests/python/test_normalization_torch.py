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
