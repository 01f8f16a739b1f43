"""bntrain models against PyTorch: checkpoints load into the equivalent nn.Sequential
(Scripts/reference/bntrain_torch.py) and evaluate to bntrain's accuracy; ONNX exports give
predict's labels under onnxruntime; new layers are step-matched from shared weights."""
import json
import pathlib
import sys

import numpy as np
import pytest

from conftest import torch_epoch_losses, REPO, fields, read_idx, run, scaled, write_idx

sys.path.insert(0, str(REPO / "Scripts" / "reference"))
import bntrain_torch  # noqa: E402


@pytest.mark.parametrize("model", ["bn-paper", "mlp"])
def test_pytorch_evaluation_of_a_loaded_checkpoint_reproduces_bntrains_accuracy(bntrain, small_fashion, tmp_path, model):
    import torch
    path = tmp_path / "m.safetensors"
    out = run([bntrain, "--data", str(small_fashion), "--model", model, "--epochs", "2", "--lr", "0.05",
               "--save", str(path), "--quiet"]).stdout
    reported = float(fields(out.strip().splitlines()[-2])["test_acc"])
    net, spec, meta, inputs = bntrain_torch.load(path)
    assert spec == json.loads(meta["bntrain.config"])["model"] or spec.startswith("fc")
    x = torch.from_numpy(scaled(read_idx(small_fashion / "t10k-images-idx3-ubyte")))
    y = read_idx(small_fashion / "t10k-labels-idx1-ubyte")
    with torch.no_grad():
        acc = float((net(x).argmax(1).numpy() == y).mean())
    # Different summation orders may flip an example sitting on a decision boundary.
    assert abs(acc - reported) <= 2 / len(y), (acc, reported)


def test_onnx_export_runs_in_onnxruntime_with_predicts_labels(bntrain, small_fashion, tmp_path):
    import onnxruntime
    path, onnx_path = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    run([bntrain, "--data", str(small_fashion), "--model", "mlp", "--epochs", "2", "--lr", "0.05", "--save", str(path), "--quiet"])
    net, _, _, inputs = bntrain_torch.load(path)
    bntrain_torch.export_onnx(net, inputs, onnx_path)
    images = read_idx(small_fashion / "t10k-images-idx3-ubyte")[:100]
    write_idx(tmp_path / "hundred-idx3-ubyte", images)
    pred = run([bntrain, "predict", "--model", str(path), "--images", str(tmp_path / "hundred-idx3-ubyte"), "--log-format", "csv"]).stdout
    labels = [int(line.split(",")[1]) for line in pred.strip().splitlines()[1:]]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"images": scaled(images)})[0]
    assert len(labels) == 100
    assert logits.argmax(1).tolist() == labels


@pytest.mark.parametrize("model", ["lenet-bn", "mlp"])
def test_the_documented_eval_and_onnx_commands_work_on_every_kind_of_checkpoint(bntrain, small_fashion, tmp_path, model):
    """`bntrain_torch.py eval CHECKPOINT --data D` and `onnx CHECKPOINT OUT` as a user runs
    them: a convolutional checkpoint is fed images (N, C, H, W), its accuracy is `bntrain
    eval`'s, and the ONNX file gives predict's labels."""
    import onnxruntime
    path, onnx_path = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    run([bntrain, "--data", str(small_fashion), "--model", model, "--epochs", "1", "--lr", "0.05", "--save", str(path), "--quiet"])
    ours = float(fields(run([bntrain, "eval", "--model", str(path), "--data", str(small_fashion)]).stdout.splitlines()[0])["test_acc"])
    script = [sys.executable, str(REPO / "Scripts" / "reference" / "bntrain_torch.py")]
    env = {**__import__("os").environ, "BNTRAIN": bntrain}
    theirs = fields(run(script + ["eval", str(path), "--data", str(small_fashion)], env=env).stdout.strip())
    assert theirs["spec"] == bntrain_torch.load(path)[1]
    assert abs(float(theirs["test_acc"]) - ours) <= 2 / 2000, (theirs, ours)
    run(script + ["onnx", str(path), str(onnx_path)], env=env)
    images = read_idx(small_fashion / "t10k-images-idx3-ubyte")[:100]
    write_idx(tmp_path / "hundred-idx3-ubyte", images)
    pred = run([bntrain, "predict", "--model", str(path), "--images", str(tmp_path / "hundred-idx3-ubyte"), "--log-format", "csv"]).stdout
    labels = [int(line.split(",")[1]) for line in pred.strip().splitlines()[1:]]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = scaled(images)
    shape = session.get_inputs()[0].shape
    logits = session.run(["logits"], {"images": x.reshape(-1, 1, 28, 28) if len(shape) == 4 else x})[0]
    assert (len(shape) == 4) == (model == "lenet-bn"), shape
    assert logits.argmax(1).tolist() == labels


def test_presets_come_from_bntrain(bntrain, monkeypatch):
    """The reference module writes no preset down: it asks bntrain, for dfn2 at any --hidden too."""
    monkeypatch.setenv("BNTRAIN", bntrain)
    listed = [json.loads(l) for l in run([bntrain, "summary", "--log-format", "jsonl"]).stdout.splitlines()]
    for preset in (r for r in listed if r["kind"] == "preset"):
        assert "-".join(bntrain_torch.tokens(preset["name"])) == preset["spec"]
    assert bntrain_torch.tokens("dfn2", hidden=300) == ["fc300", "sigmoid", "bn", "fc"]
    assert bntrain_torch.tokens("fc64 relu-fc") == ["fc64", "relu", "fc"]
    with pytest.raises(ValueError, match="nosuch"):
        bntrain_torch.tokens("nosuch")


def test_bntrains_layer_descriptions_give_pytorchs_tensor_names_and_counts(bntrain, monkeypatch):
    """For every preset and an all-kinds spec, the modules built from `bntrain summary`'s
    records have exactly the tensors bntrain's layers declare, and bntrain's parameter counts."""
    monkeypatch.setenv("BNTRAIN", bntrain)
    listed = [json.loads(l) for l in run([bntrain, "summary", "--log-format", "jsonl"]).stdout.splitlines()]
    for spec in [r["name"] for r in listed if r["kind"] == "preset"] + ["conv4k3s2p1-bn-relu-avgpool2-conv8k3-gap-fc16-ln-tanh-dropout0.1-fc"]:
        records = bntrain_torch.describe(spec, (1, 28, 28), 10)
        layers = [r for r in records if r["kind"] == "layer"]
        net = bntrain_torch.sequential(spec, 784, 10, image=(1, 28, 28))
        declared = [t for r in layers for t in r["tensors"].split(",") if t]
        assert list(net.state_dict()) == declared, spec
        for r, module in zip(layers, net):
            assert sum(p.numel() for p in module.parameters()) == r["parameters"], (spec, r)


@pytest.mark.parametrize("spec", ["bn-paper", "fc128-ln-tanh-fc64-ln-tanh-fc",
                                  "fc128-gn4-tanh-fc64-gn1-tanh-fc", "conv8k3-gn2-tanh-avgpool2-conv16k3-gn4-tanh-fc"])
def test_step_matched_with_pytorch_from_shared_weights(bntrain, small_fashion, tmp_path, spec):
    """Same initial weights (PyTorch's own init, saved and loaded with --init-from), same
    data order (--shuffle none): every epoch's training loss agrees to 1e-4 relative. GroupNorm
    (gnG) on vectors and images is step-matched with nn.GroupNorm here."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(5)
    torch.set_num_threads(1)
    image = (1, 28, 28) if bntrain_torch.is_convolutional(spec) else None
    model = bntrain_torch.sequential(spec, 784, 10, image=image)
    init = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(init, str(tmp_path / "init.safetensors"))
    epochs, batch, lr = 3, 64, 0.05
    out = run([bntrain, "--data", str(small_fashion), "--model", spec, "--init-from", str(tmp_path / "init.safetensors"),
               "--shuffle", "none", "--epochs", str(epochs), "--batch", str(batch), "--lr", str(lr), "--quiet",
               "--log-format", "jsonl"]).stdout
    ours = [json.loads(l)["train_loss"] for l in out.splitlines() if json.loads(l)["kind"] == "epoch"]

    x = torch.from_numpy(scaled(read_idx(small_fashion / "train-images-idx3-ubyte")))
    y = torch.from_numpy(read_idx(small_fashion / "train-labels-idx1-ubyte").astype(np.int64))
    theirs = torch_epoch_losses(model, x.view(-1, *image) if image else x, y, epochs, batch, lr)
    assert len(ours) == epochs
    for e, (a, b) in enumerate(zip(ours, theirs), 1):
        print(f"{spec} epoch {e}: bntrain {a} PyTorch {b:.6f} relative {abs(a - b) / b:.1e}")
        assert abs(a - b) / b < 1e-4, f"{spec} epoch {e}: bntrain {a} vs PyTorch {b}"


def test_legacy_checkpoint_loads_in_the_helper():
    net, spec, _, inputs = bntrain_torch.load(REPO / "Tests/bntrainTests/Fixtures/dfn2-v0.3.0.safetensors")
    assert spec == "fc8-sigmoid-bn-fc" and inputs == 36
    assert [k for k in net.state_dict() if k.endswith("weight")] == ["0.weight", "2.weight", "3.weight"]
