#!/usr/bin/env python3
"""bntrain models in PyTorch: the nn.Sequential a model spec describes, bntrain checkpoints
loaded into it, and ONNX export.

    python Scripts/reference/bntrain_torch.py summary 'fc256-bn-relu-dropout0.2-fc'
    python Scripts/reference/bntrain_torch.py eval run.safetensors --data Data/fashion-mnist
    python Scripts/reference/bntrain_torch.py onnx run.safetensors run.onnx

A spec (or preset) maps token by token onto nn.Sequential, so the modules' indices are the
layer indices and the state_dict names are bntrain's tensor names (`0.weight`,
`2.running_mean`, ...): fcN -> nn.Linear, sigmoid/tanh/relu -> nn.Sigmoid/Tanh/ReLU,
bn -> nn.BatchNorm1d or nn.BatchNorm2d (by its input's shape; eps=bntrain.bn_eps,
momentum=1 - bntrain.bn_momentum), ln -> nn.LayerNorm(eps=1e-5), dropoutP -> nn.Dropout(P),
convNkK[sS][pP] -> nn.Conv2d, maxpoolK[sS] / avgpoolK[sS] -> nn.MaxPool2d / nn.AvgPool2d,
gap -> nn.AdaptiveAvgPool2d(1). The first fc after image layers flattens its input itself
(FlattenLinear), so no extra module shifts the indices. The input is the image scaled to
[-1, 1] as (p/255 - 0.5) * 2: shape (N, pixels) for a fully connected model, (N, C, H, W)
for a convolutional one. Checkpoints of bntrain 0.3 (dfn2 with tensors
fc1/bn/fc2) are renamed on load. As a module: `sequential(spec, inputs, classes)`, `load(path)`.
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
_expanded = {}
LAYER_TOKEN = re.compile(r"fc\d*|sigmoid|tanh|relu|bn|ln|gap|dropout[0-9.]+|(conv|maxpool|avgpool)\d+(?:[ksp]\d+)*")


def bntrain_binary():
    """The bntrain that expands presets: $BNTRAIN, else this checkout's release build, else PATH."""
    if os.environ.get("BNTRAIN"):
        return os.environ["BNTRAIN"]
    built = REPO / ".build" / "release" / "bntrain"
    return str(built) if built.exists() else (shutil.which("bntrain") or "bntrain")


def expand(preset, hidden=200):
    """A preset's layer tokens, from `bntrain summary --model PRESET --hidden H --log-format
    jsonl`: the presets are written down once, in bntrain."""
    if (preset, hidden) not in _expanded:
        cmd = [bntrain_binary(), "summary", "--model", preset, "--log-format", "jsonl"] + (["--hidden", str(hidden)] if hidden != 200 else [])
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as e:
            raise SystemExit(f"bntrain_torch: cannot run bntrain to expand preset {preset!r} ({e}); "
                             "build it (swift build -c release) or set BNTRAIN to its path")
        if done.returncode != 0:
            raise ValueError(done.stderr.strip() or f"bntrain summary --model {preset!r} failed")
        records = [json.loads(line) for line in done.stdout.splitlines()]
        _expanded[(preset, hidden)] = [r["token"] for r in records if r["kind"] == "layer"]
    return _expanded[(preset, hidden)]


def tokens(spec, hidden=200):
    """The layer tokens of a spec (bntrain's grammar: '-' or spaces between tokens) or of a
    preset (any name that is not such a spec: bntrain expands it)."""
    spec = spec.strip()
    toks = [t for piece in spec.split("-") for t in piece.split()]
    if toks and all(LAYER_TOKEN.fullmatch(t) for t in toks):
        return toks
    return expand(spec, hidden)


IMAGE_TOKEN = re.compile(r"(conv|maxpool|avgpool)(\d+)((?:[ksp]\d+)*)")


def is_convolutional(spec, hidden=200):
    return any(IMAGE_TOKEN.fullmatch(t) or t == "gap" for t in tokens(spec, hidden))


def sequential(spec, inputs, classes, bn_eps=1e-5, bn_momentum=0.9, hidden=200, image=None):
    """The nn.Sequential of a bntrain spec for `inputs` features (or an `image` (C, H, W) for
    a convolutional spec) and `classes` classes."""
    import torch
    import torch.nn as nn

    class FlattenLinear(nn.Linear):
        """nn.Linear on the flattened (N, C*H*W) input, in PyTorch's (and bntrain's) order."""
        def forward(self, x):
            return super().forward(torch.flatten(x, 1))

    layers, width = [], inputs
    shape = tuple(image) if image is not None and is_convolutional(spec, hidden) else None
    for t in tokens(spec, hidden):
        m = IMAGE_TOKEN.fullmatch(t)
        if m:
            kind, first = m.group(1), int(m.group(2))
            opts = {k: int(v) for k, v in re.findall(r"([ksp])(\d+)", m.group(3))}
            c, h, w = shape
            if kind == "conv":
                k, s, p = opts["k"], opts.get("s", 1), opts.get("p", 0)
                layers.append(nn.Conv2d(c, first, k, stride=s, padding=p))
                shape = (first, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
            else:
                s = opts.get("s", first)
                layers.append((nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)(first, stride=s))
                shape = (c, (h - first) // s + 1, (w - first) // s + 1)
            width = shape[0] * shape[1] * shape[2]
            continue
        if t == "gap":
            layers.append(nn.AdaptiveAvgPool2d(1))
            shape = (shape[0], 1, 1)
            width = shape[0]
            continue
        if t.startswith("fc"):
            out = int(t[2:]) if t != "fc" else classes
            layers.append(FlattenLinear(width, out) if shape is not None else nn.Linear(width, out))
            width, shape = out, None
        elif t in ("sigmoid", "tanh", "relu"):
            layers.append({"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[t]())
        elif t == "bn" and shape is not None:
            layers.append(nn.BatchNorm2d(shape[0], eps=bn_eps, momentum=1 - bn_momentum))
        elif t == "bn":
            layers.append(nn.BatchNorm1d(width, eps=bn_eps, momentum=1 - bn_momentum))
        elif t == "ln":
            layers.append(nn.LayerNorm(width, eps=1e-5))
        elif re.fullmatch(r"dropout[0-9.]+", t):
            layers.append(nn.Dropout(float(t[7:])))
        else:
            raise ValueError(f"unknown layer token {t!r} in {spec!r}")
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
    # The model part only: optimizer state (`optimizer.*`, see docs/checkpoints.md) is bntrain's own.
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith("optimizer.")}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    spec = meta.get("bntrain.model")
    if spec is None and "fc1.weight" in tensors:  # bntrain 0.3: dfn2 with named modules
        has_bn = "bn.weight" in tensors
        rename = legacy_names(has_bn)
        tensors = {rename[k.split(".")[0]] + "." + k.split(".", 1)[1]: v for k, v in tensors.items()}
        spec = f"fc{tensors['0.weight'].shape[0]}-sigmoid" + ("-bn" if has_bn else "") + "-fc"
    toks = tokens(spec)
    image = input_image(spec, meta)
    if image is not None:
        inputs = image[0] * image[1] * image[2]
    else:
        first = next(i for i, t in enumerate(toks) if t.startswith("fc") or t in ("bn", "ln"))
        w = tensors[f"{first}.weight"]
        inputs = w.shape[1] if toks[first].startswith("fc") else w.shape[0]
    classes = tensors[f"{len(toks) - 1}.weight"].shape[0]
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
