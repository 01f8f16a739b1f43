#!/usr/bin/env python3
"""bntrain models in PyTorch: the nn.Sequential a model spec describes, bntrain checkpoints
loaded into it, and ONNX export.

    python Scripts/reference/bntrain_torch.py summary 'fc256-bn-relu-dropout0.2-fc'
    python Scripts/reference/bntrain_torch.py eval run.safetensors --data Data/fashion-mnist
    python Scripts/reference/bntrain_torch.py onnx run.safetensors run.onnx

Nothing about bntrain's layers is written down here: `bntrain summary --log-format jsonl`
describes every layer of a spec or preset (its token, output shape, checkpoint tensors and
the equivalent PyTorch module as a Python expression), and this module builds the
nn.Sequential from those records. The modules' indices are the layer indices, so the
state_dict names are bntrain's tensor names (`0.weight`, `2.running_mean`, ...). The first fc
after image layers flattens its input itself (FlattenLinear), so no extra module shifts the
indices. BatchNorm takes eps=bntrain.bn_eps and momentum=1 - bntrain.bn_momentum. The input
is the image scaled to [-1, 1] as (p/255 - 0.5) * 2: shape (N, pixels) for a fully connected
model, (N, C, H, W) for a convolutional one. Checkpoints of bntrain 0.3 (dfn2 with tensors
fc1/bn/fc2) are renamed on load. As a module: `sequential(spec, inputs, classes)`,
`load(path)`. bntrain is $BNTRAIN, else this checkout's release build, else on PATH.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
_described = {}


def bntrain_binary():
    """The bntrain that describes models: $BNTRAIN, else this checkout's release build, else PATH."""
    if os.environ.get("BNTRAIN"):
        return os.environ["BNTRAIN"]
    built = REPO / ".build" / "release" / "bntrain"
    return str(built) if built.exists() else (shutil.which("bntrain") or "bntrain")


def describe(spec, image=None, classes=10, hidden=200):
    """`bntrain summary`'s records (layers, then the total) for `spec` on images `image`
    ((C, H, W) or (H, W); default 28x28) with `classes` classes."""
    rows, cols = (image[-2], image[-1]) if image is not None else (28, 28)
    key = (spec, rows, cols, classes, hidden)
    if key not in _described:
        cmd = [bntrain_binary(), "summary", "--model", spec, "--input", f"{rows}x{cols}", "--classes", str(classes),
               "--log-format", "jsonl"] + (["--hidden", str(hidden)] if hidden != 200 else [])
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as e:
            raise SystemExit(f"bntrain_torch: cannot run bntrain to describe {spec!r} ({e}); "
                             "build it (swift build -c release) or set BNTRAIN to its path")
        if done.returncode != 0:
            raise ValueError(done.stderr.strip() or f"bntrain summary --model {spec!r} failed")
        _described[key] = [json.loads(line) for line in done.stdout.splitlines()]
    return _described[key]


def tokens(spec, hidden=200):
    """The canonical layer tokens of a spec or preset."""
    return [r["token"] for r in describe(spec, hidden=hidden) if r["kind"] == "layer"]


def is_convolutional(spec, hidden=200):
    """Whether the model sees its input as an image (it has image layers)."""
    return next(r for r in describe(spec, hidden=hidden) if r["kind"] == "total")["input_kind"] == "image"


def sequential(spec, inputs, classes, bn_eps=1e-5, bn_momentum=0.9, hidden=200, image=None):
    """The nn.Sequential of a bntrain spec for `inputs` features (or an `image` (C, H, W) for
    a convolutional spec) and `classes` classes."""
    import torch
    import torch.nn as nn

    class FlattenLinear(nn.Linear):
        """nn.Linear on the flattened (N, C*H*W) input, in PyTorch's (and bntrain's) order."""
        def forward(self, x):
            return super().forward(torch.flatten(x, 1))

    convolutional = is_convolutional(spec, hidden)
    shape = tuple(image) if convolutional and image is not None else (1, inputs)
    layers = []
    for r in (r for r in describe(spec, shape, classes, hidden) if r["kind"] == "layer"):
        module = eval(r["pytorch"], {"nn": nn, "FlattenLinear": FlattenLinear})  # bntrain's own description
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.eps, module.momentum = bn_eps, 1 - bn_momentum
        layers.append(module)
    return nn.Sequential(*layers)


def legacy_names(has_bn):
    """bntrain 0.3's dfn2 module names -> nn.Sequential indices (fc1 0, sigmoid 1, bn 2, fc2)."""
    return {"fc1": "0", "bn": "2", "fc2": "3" if has_bn else "2"}


def load(path):
    """(model in eval mode, spec, metadata, input width) from a bntrain safetensors checkpoint.
    A convolutional model's input is (N, C, H, W), C H W = the input width; its image shape is
    metadata["bntrain.input_shape"] ("CxHxW")."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    # The model part only: training state (`optimizer.*`, `bn_ema.*`; docs/checkpoints.md) is bntrain's own.
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith(("optimizer.", "bn_ema."))}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    spec = meta.get("bntrain.model")
    if spec is None and "fc1.weight" in tensors:  # bntrain 0.3: dfn2 with named modules
        has_bn = "bn.weight" in tensors
        rename = legacy_names(has_bn)
        tensors = {rename[k.split(".")[0]] + "." + k.split(".", 1)[1]: v for k, v in tensors.items()}
        spec = f"fc{tensors['0.weight'].shape[0]}-sigmoid" + ("-bn" if has_bn else "") + "-fc"
    image = input_image(spec, meta)
    layers = [r for r in describe(spec) if r["kind"] == "layer"]
    if image is not None:
        inputs = image[0] * image[1] * image[2]
    else:
        # The first layer with a weight: an fc's (out, in) or a norm's (in,), as bntrain reads it.
        w = next(tensors[f"{r['index']}.weight"] for r in layers if f"{r['index']}.weight" in r["tensors"].split(","))
        inputs = w.shape[1] if w.dim() == 2 else w.shape[0]
    classes = tensors[f"{len(layers) - 1}.weight"].shape[0]
    model = sequential(spec, inputs, classes, bn_eps=float(meta.get("bntrain.bn_eps", 1e-5)),
                       bn_momentum=float(meta.get("bntrain.bn_momentum", 0.9)), image=image)
    model.load_state_dict(tensors, strict=True)
    return model.eval(), spec, meta, inputs


def input_image(spec, meta):
    """(C, H, W) a convolutional checkpoint's model takes (metadata "bntrain.input_shape",
    "CxHxW"); None for a fully connected one, which takes (N, pixels)."""
    if not is_convolutional(spec):
        return None
    return tuple(int(d) for d in meta["bntrain.input_shape"].split("x"))


def export_onnx(model, inputs, path, image=None):
    """Writes the model (eval mode) as ONNX with a dynamic batch dimension: input 'images'
    (N, pixels), or (N, C, H, W) for a convolutional model, float32 in [-1, 1]; output
    'logits' (N, classes)."""
    import torch
    example = torch.zeros(2, *image) if image is not None else torch.zeros(2, inputs)
    torch.onnx.export(model.eval(), (example,), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}}, dynamo=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="print the nn.Sequential of a spec (28x28 inputs, 10 classes)")
    s.add_argument("spec")
    e = sub.add_parser("eval", help="test accuracy of a checkpoint, evaluated by PyTorch")
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True)
    o = sub.add_parser("onnx", help="export a checkpoint as ONNX")
    o.add_argument("checkpoint")
    o.add_argument("out")
    args = ap.parse_args()
    if args.cmd == "summary":
        model = sequential(args.spec, 784, 10, image=(1, 28, 28))
        print(model)
        print(f"parameters={sum(p.numel() for p in model.parameters())}")
        return
    model, spec, meta, inputs = load(args.checkpoint)
    image = input_image(spec, meta)
    if args.cmd == "onnx":
        export_onnx(model, inputs, args.out, image=image)
        print(f"onnx spec={spec} out={args.out}")
        return
    import numpy as np
    import torch
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import common
    _, _, xte, yte = common.load(args.data, np)
    with torch.no_grad():
        x = torch.from_numpy(xte)
        logits = model(x.view(-1, *image) if image is not None else x)
    acc = float((logits.argmax(1).numpy() == yte).mean())
    print(f"eval spec={spec} test={len(yte)} test_acc={acc:.4f}")


if __name__ == "__main__":
    main()
