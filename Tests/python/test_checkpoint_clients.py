"""bntrain checkpoints read by real clients: Python's safetensors + numpy, and PyTorch."""
import json

import numpy as np
from safetensors.numpy import load_file, save_file

from conftest import torch_epoch_losses, fields, read_idx, run, scaled


def test_numpy_reproduces_bntrain_test_accuracy(bntrain, fashion, tmp_path):
    model = tmp_path / "model.safetensors"
    out = run([bntrain, "--data", str(fashion), "--epochs", "2", "--train-limit", "5000", "--save", str(model), "--quiet"]).stdout
    reported = float(fields(out.strip().splitlines()[-2])["test_acc"])

    t = load_file(str(model))
    # dfn2 = fc200-sigmoid-bn-fc, named as nn.Sequential(Linear, Sigmoid, BatchNorm1d, Linear).
    assert t["0.weight"].shape == (200, 784) and t["0.weight"].dtype == np.float32
    assert t["3.weight"].shape == (10, 200) and t["2.running_var"].shape == (200,)
    assert t["2.num_batches_tracked"].dtype == np.int64 and int(t["2.num_batches_tracked"]) == 2 * 79
    x = scaled(read_idx(fashion / "t10k-images-idx3-ubyte.gz")).astype(np.float64)
    y = read_idx(fashion / "t10k-labels-idx1-ubyte.gz")
    h = 1.0 / (1.0 + np.exp(-(x @ t["0.weight"].T.astype(np.float64) + t["0.bias"])))
    h = t["2.weight"] * (h - t["2.running_mean"]) / np.sqrt(t["2.running_var"].astype(np.float64) + 1e-5) + t["2.bias"]
    logits = h @ t["3.weight"].T.astype(np.float64) + t["3.bias"]
    acc = float((logits.argmax(axis=1) == y).mean())
    # Float32 (bntrain) and float64 (here) may flip an example sitting on a decision boundary.
    assert abs(acc - reported) <= 2 / len(y), (acc, reported)


def test_pytorch_and_bntrain_agree_from_the_same_weights(bntrain, small_fashion, tmp_path):
    """dfn2, from a state dict with named modules (fc1, bn, fc2: bntrain 0.3's names, still read)."""
    import torch  # installed by Scripts/test into .venv; a missing torch fails this test
    rng = np.random.default_rng(3)
    init = {
        "fc1.weight": (rng.standard_normal((200, 784)) * np.sqrt(2 / 984)).astype(np.float32),
        "fc1.bias": np.zeros(200, np.float32),
        "bn.weight": np.ones(200, np.float32), "bn.bias": np.zeros(200, np.float32),
        "fc2.weight": (rng.standard_normal((10, 200)) * np.sqrt(2 / 210)).astype(np.float32),
        "fc2.bias": np.zeros(10, np.float32),
    }
    path = tmp_path / "init.safetensors"
    save_file(init, str(path))
    epochs, batch, lr = 3, 64, 0.01
    out = run([bntrain, "--data", str(small_fashion), "--init-from", str(path), "--shuffle", "none",
               "--epochs", str(epochs), "--batch", str(batch), "--lr", str(lr), "--quiet", "--log-format", "jsonl"]).stdout
    ours = [json.loads(l)["train_loss"] for l in out.splitlines() if json.loads(l)["kind"] == "epoch"]

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential()
    model.add_module("fc1", torch.nn.Linear(784, 200))
    model.add_module("act", torch.nn.Sigmoid())
    model.add_module("bn", torch.nn.BatchNorm1d(200, eps=1e-5, momentum=0.1))
    model.add_module("fc2", torch.nn.Linear(200, 10))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in init.items()}, strict=False)
    x = torch.from_numpy(scaled(read_idx(small_fashion / "train-images-idx3-ubyte")))
    y = torch.from_numpy(read_idx(small_fashion / "train-labels-idx1-ubyte").astype(np.int64))
    theirs = torch_epoch_losses(model, x, y, epochs, batch, lr)
    for e, (a, b) in enumerate(zip(ours, theirs), 1):
        assert abs(a - b) / b < 1e-4, f"epoch {e}: bntrain {a} vs PyTorch {b}"
