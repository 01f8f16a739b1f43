"""Convolutional models against PyTorch: lenet-bn step-matched from shared weights (SGD and
Adam, 2 epochs), a CNN checkpoint evaluated by PyTorch and run by onnxruntime."""
import json
import sys

import numpy as np
import pytest

from conftest import REPO, fields, read_idx, run, scaled, torch_losses, write_idx

sys.path.insert(0, str(REPO / "Scripts" / "reference"))
import bntrain_torch  # noqa: E402


@pytest.mark.parametrize("conv", ["auto", "im2col"])
@pytest.mark.parametrize("optimizer,flags", [("sgd", ["--lr", "0.01"]), ("adam", ["--optimizer", "adam", "--lr", "0.0003"])])
def test_lenet_bn_step_matched_with_pytorch(bntrain, small_fashion, tmp_path, optimizer, flags, conv):
    """1e-4 relative per epoch, for SGD (lr 0.01) and Adam (lr 3e-4).

    With oneDNN's convolutions (the default where libdnnl is installed, as on CI) the bound is
    strict: PyTorch's CPU convolutions are oneDNN's too, and the losses agree to 2e-7 (SGD and
    Adam, both epochs, measured). With im2col (`--conv im2col`, or no oneDNN) the bound is
    1e-4 or three times PyTorch's own spread (below), whichever is larger. Measured there:
    Adam 2e-7 and 1e-7; SGD 1.6e-4 and
    4.2e-4 with BatchNorm2D's sums in SIMD lanes (7e-6 and 8e-5 with plain sums: the last bits
    of one reduction move it by that much, within PyTorch's own spread). At larger rates float32 rounding is amplified by max-pool
    argmax flips, ReLU kinks and, for Adam, by parameters whose gradient is zero in exact
    arithmetic (the biases right before each BN; fc weights fed by features constant across a
    batch: PyTorch's own gradients for them are noise of 7e-9 to 3e-5, which Adam turns into
    lr-sized steps): at SGD lr 0.05 PyTorch disagrees with itself, rows permuted inside each
    batch, by ~1e-3 after an epoch. Should a rate be chaotic on some CPU, the bound falls back
    to three times PyTorch's own spread over five such twins."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(7)
    torch.set_num_threads(1)
    net = bntrain_torch.sequential("lenet-bn", 784, 10, image=(1, 28, 28))
    init = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    save_file(init, str(tmp_path / "init.safetensors"))
    epochs, batch = 2, 64
    out = run([bntrain, "--data", str(small_fashion), "--model", "lenet-bn", "--init-from", str(tmp_path / "init.safetensors"),
               "--shuffle", "none", "--epochs", str(epochs), "--batch", str(batch), "--quiet", "--log-format", "jsonl", "--conv", conv,
               "--shard-size", str(batch)] + flags).stdout
    records = [json.loads(l) for l in out.splitlines()]
    ours = [r["train_loss"] for r in records if r["kind"] == "epoch"]
    # One shard per batch: the strict bound compares the layers' arithmetic with PyTorch's on
    # the same whole batch (two shards of 32 add the weight gradients in another order, which
    # SGD's chaos here amplifies past 1e-4; test_workers_torch.py step-matches sharding).
    strict = records[0]["conv_kernels"] != "im2col"  # oneDNN's convolutions ran
    x = torch.from_numpy(scaled(read_idx(small_fashion / "train-images-idx3-ubyte"))).view(-1, 1, 28, 28)
    y = torch.from_numpy(read_idx(small_fashion / "train-labels-idx1-ubyte").astype(np.int64))

    def trained(permute=None):
        m = bntrain_torch.sequential("lenet-bn", 784, 10, image=(1, 28, 28))
        m.load_state_dict(init)
        lr = float(flags[flags.index("--lr") + 1])
        opt = torch.optim.Adam(m.parameters(), lr=lr) if optimizer == "adam" else torch.optim.SGD(m.parameters(), lr=lr)
        return torch_losses(m, opt, x, y, epochs, batch, permute)

    theirs = trained()
    floor = None
    for e, (a, b) in enumerate(zip(ours, theirs), 1):
        err, bound = abs(a - b) / b, 1e-4
        print(f"lenet-bn {optimizer} conv={records[0]['conv_kernels']} epoch {e}: bntrain {a} PyTorch {b:.6f} relative {err:.2e}")
        if err >= bound and not strict:
            if floor is None:
                runs = [theirs] + [trained(k) for k in (1, 2, 3, 4, 5)]
                floor = [max(abs(p[i] - q[i]) / q[i] for p in runs for q in runs) for i in range(epochs)]
            bound = max(bound, 3 * floor[e - 1])
        assert err < bound, f"lenet-bn {optimizer}, epoch {e}: bntrain {a} vs PyTorch {b} (relative {err:.2e}, bound {bound:.2e})"


def test_cnn_checkpoint_in_pytorch_and_onnxruntime(bntrain, small_fashion, tmp_path):
    import onnxruntime
    import torch
    path, onnx_path = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    out = run([bntrain, "--data", str(small_fashion), "--model", "lenet-bn", "--epochs", "2", "--optimizer", "adam", "--lr", "0.002",
               "--save", str(path), "--quiet"]).stdout
    reported = float(fields(out.strip().splitlines()[-2])["test_acc"])
    net, spec, meta, inputs = bntrain_torch.load(path)
    assert meta["bntrain.input_shape"] == "1x28x28" and inputs == 784
    images = read_idx(small_fashion / "t10k-images-idx3-ubyte")
    x = torch.from_numpy(scaled(images)).view(-1, 1, 28, 28)
    with torch.no_grad():
        acc = float((net(x).argmax(1).numpy() == read_idx(small_fashion / "t10k-labels-idx1-ubyte")).mean())
    assert abs(acc - reported) <= 2 / len(images), (acc, reported)
    bntrain_torch.export_onnx(net, inputs, onnx_path, image=(1, 28, 28))
    write_idx(tmp_path / "hundred-idx3-ubyte", images[:100])
    pred = run([bntrain, "predict", "--model", str(path), "--images", str(tmp_path / "hundred-idx3-ubyte"), "--log-format", "csv"]).stdout
    labels = [int(line.split(",")[1]) for line in pred.strip().splitlines()[1:]]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"images": scaled(images[:100]).reshape(-1, 1, 28, 28)})[0]
    assert logits.argmax(1).tolist() == labels


def test_decay_weights_decays_conv_kernels_as_pytorchs_parameter_groups_do(bntrain, small_fashion, tmp_path):
    """`--decay weights` is PyTorch's two parameter groups: every fc weight and conv kernel
    decays; biases and BatchNorm gains and shifts do not. One SGD step of lenet-bn over the
    whole small set (batch 1280, lr 0.01, weight decay 1: the decay is a third or more of each
    weight's update) from shared weights; every parameter's update agrees with PyTorch's to
    1e-3 of its size. One step, so no rounding is amplified: the updates agree to ~1e-6 on
    every BLAS kernel family. (The biases right before each BN have no gradient in exact
    arithmetic, only rounding noise, so they are left out.)"""
    import torch
    from safetensors.torch import load_file, save_file
    torch.manual_seed(11)
    torch.set_num_threads(1)
    net = bntrain_torch.sequential("lenet-bn", 784, 10, image=(1, 28, 28))
    init = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    save_file(init, str(tmp_path / "init.safetensors"))
    run([bntrain, "--data", str(small_fashion), "--model", "lenet-bn", "--init-from", str(tmp_path / "init.safetensors"),
         "--shuffle", "none", "--epochs", "1", "--batch", "1280", "--lr", "0.01", "--weight-decay", "1", "--decay", "weights",
         "--save", str(tmp_path / "ours.safetensors"), "--quiet"])
    ours = load_file(str(tmp_path / "ours.safetensors"))
    x = torch.from_numpy(scaled(read_idx(small_fashion / "train-images-idx3-ubyte"))).view(-1, 1, 28, 28)
    y = torch.from_numpy(read_idx(small_fashion / "train-labels-idx1-ubyte").astype(np.int64))
    assert len(y) == 1280
    decayed = [p for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for p in [m.weight]]
    others = [p for p in net.parameters() if all(p is not q for q in decayed)]
    assert len(decayed) == 5 and len(others) == 5 + 2 * 4  # 2 conv + 3 fc; their biases, 4 BNs' gains and shifts
    opt = torch.optim.SGD([{"params": decayed, "weight_decay": 1.0}, {"params": others, "weight_decay": 0.0}], lr=0.01)
    torch_losses(net, opt, x, y, 1, 1280)
    before_bn = {"0.bias", "4.bias", "8.bias", "11.bias"}
    for name, p in net.named_parameters():
        if name in before_bn:
            continue
        theirs, mine = (p.detach() - init[name]), (ours[name] - init[name])
        err = float((mine - theirs).norm() / theirs.norm())
        print(f"{name}: update relative difference {err:.2e}")
        assert err < 1e-3, f"{name}: bntrain's update and PyTorch's parameter groups' differ by {err:.2e}"
