"""`--workers` against PyTorch from shared weights. Synchronised BN (the default) is plain
BatchNorm over the whole batch; `--bn-sync off` is ghost batch norm: a PyTorch model whose BN
layers normalise each 32-row chunk of the batch on its own (running statistics updated once
per chunk, in chunk order, as `torch.cat([bn(c) for c in x.split(32)])` does)."""
import json
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import REPO, read_idx, run, scaled, torch_epoch_losses

sys.path.insert(0, str(REPO / "Scripts" / "reference"))
import bntrain_torch  # noqa: E402


def chunked(bn, size):
    """A BN module that, in training, normalises each `size`-row chunk with its own statistics."""
    import torch

    class Ghost(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = bn

        def forward(self, x):
            return torch.cat([self.bn(c) for c in x.split(size)]) if self.training else self.bn(x)

    return Ghost()


@pytest.mark.parametrize("spec,sync", [("fc64-bn-relu-fc32-bn-relu-fc", "on"), ("fc64-bn-relu-fc32-bn-relu-fc", "off"),
                                       ("conv4k3-bn-relu-maxpool2-fc32-bn-relu-fc", "off")])
def test_sharded_bn_step_matches_pytorch(bntrain, small_fashion, tmp_path, spec, sync):
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(3)
    torch.set_num_threads(1)
    image = (1, 28, 28) if bntrain_torch.is_convolutional(spec) else None
    model = bntrain_torch.sequential(spec, 784, 10, image=image)
    init = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(init, str(tmp_path / "init.safetensors"))
    epochs, batch, lr = 2, 100, 0.05  # shards of 32, 32, 32 and 4; the last batch (80) 3 shards
    out = run([bntrain, "--data", str(small_fashion), "--model", spec, "--init-from", str(tmp_path / "init.safetensors"),
               "--shuffle", "none", "--epochs", str(epochs), "--batch", str(batch), "--lr", str(lr), "--quiet",
               "--bn-running-var", "unbiased", "--workers", "2", "--bn-sync", sync, "--save", str(tmp_path / "out.safetensors"),
               "--log-format", "jsonl"]).stdout
    ours = [json.loads(l)["train_loss"] for l in out.splitlines() if json.loads(l)["kind"] == "epoch"]

    if sync == "off":
        for i, m in enumerate(model):
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                model[i] = chunked(m, 32)
    x = torch.from_numpy(scaled(read_idx(small_fashion / "train-images-idx3-ubyte")))
    y = torch.from_numpy(read_idx(small_fashion / "train-labels-idx1-ubyte").astype(np.int64))
    theirs = torch_epoch_losses(model, x.view(-1, *image) if image else x, y, epochs, batch, lr)
    for e, (a, b) in enumerate(zip(ours, theirs), 1):
        print(f"{spec} bn-sync {sync} epoch {e}: bntrain {a} PyTorch {b:.6f} relative {abs(a - b) / b:.1e}")
        assert abs(a - b) / b < 1e-4, f"{spec} bn-sync {sync} epoch {e}: bntrain {a} vs PyTorch {b}"
    # The running statistics (one update per chunk with ghost BN) and the step counts.
    saved = load_file(str(tmp_path / "out.safetensors"))
    state = {k.replace(".bn.", "."): v.numpy() for k, v in model.state_dict().items()}
    for k, v in state.items():
        if "running" in k or "num_batches" in k:
            np.testing.assert_allclose(saved[k], v, rtol=2e-3, atol=2e-4, err_msg=f"{spec} bn-sync {sync}: {k}")
