#!/usr/bin/env python3
"""bntrain models in PyTorch: the nn.Sequential a model spec describes, bntrain checkpoints
loaded into it, and ONNX export.

    python Scripts/reference/bntrain_torch.py summary 'fc256-bn-relu-dropout0.2-fc'
    python Scripts/reference/bntrain_torch.py eval run.safetensors --data Data/fashion-mnist
    python Scripts/reference/bntrain_torch.py onnx run.safetensors run.onnx

A spec (or preset) maps token by token onto nn.Sequential, so the modules' indices are the
layer indices and the state_dict names are bntrain's tensor names (`0.weight`,
`2.running_mean`, ...): fcN -> nn.Linear, sigmoid/tanh/relu -> nn.Sigmoid/Tanh/ReLU,
bn -> nn.BatchNorm1d(eps=bntrain.bn_eps, momentum=1 - bntrain.bn_momentum), ln ->
nn.LayerNorm(eps=1e-5), dropoutP -> nn.Dropout(P). The input is the flattened image scaled to
[-1, 1] as (p/255 - 0.5) * 2, shape (N, pixels). Checkpoints of bntrain 0.3 (dfn2 with tensors
fc1/bn/fc2) are renamed on load. As a module: `sequential(spec, inputs, classes)`, `load(path)`.
"""
import argparse
import pathlib
import re
import sys

PRESETS = {
    "dfn2": lambda hidden: f"fc{hidden}-sigmoid-bn-fc",
    "bn-paper": lambda hidden: "-".join(["fc100-bn-sigmoid"] * 3 + ["fc"]),
    "mlp": lambda hidden: "-".join(["fc256-bn-relu-dropout0.2"] * 2 + ["fc"]),
}


def tokens(spec, hidden=200):
    """The layer tokens of a spec or preset (bntrain's grammar: '-' or spaces between tokens)."""
    spec = spec.strip()
    if spec in PRESETS:
        spec = PRESETS[spec](hidden)
    return [t for piece in spec.split("-") for t in piece.split()]


def sequential(spec, inputs, classes, bn_eps=1e-5, bn_momentum=0.9, hidden=200):
    """The nn.Sequential of a bntrain spec for `inputs` features and `classes` classes."""
    import torch.nn as nn
    layers, width = [], inputs
    for t in tokens(spec, hidden):
        if t.startswith("fc"):
            out = int(t[2:]) if t != "fc" else classes
            layers.append(nn.Linear(width, out))
            width = out
        elif t in ("sigmoid", "tanh", "relu"):
            layers.append({"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[t]())
        elif t == "bn":
            layers.append(nn.BatchNorm1d(width, eps=bn_eps, momentum=1 - bn_momentum))
        elif t == "ln":
            layers.append(nn.LayerNorm(width, eps=1e-5))
        elif re.fullmatch(r"dropout[0-9.]+", t):
            layers.append(nn.Dropout(float(t[7:])))
        else:
            raise ValueError(f"unknown layer token {t!r} in {spec!r}")
    return nn.Sequential(*layers)


LEGACY = {"fc1": "0", "bn": "2"}


def load(path):
    """(model in eval mode, spec, metadata, input width) from a bntrain safetensors checkpoint."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    # The model part only: optimizer state (`optimizer.*`, see the README) is bntrain's own.
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith("optimizer.")}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    spec = meta.get("bntrain.model")
    if spec is None and "fc1.weight" in tensors:  # bntrain 0.3: dfn2 with named modules
        has_bn = "bn.weight" in tensors
        rename = dict(LEGACY, fc2="3" if has_bn else "2")
        tensors = {rename[k.split(".")[0]] + "." + k.split(".", 1)[1]: v for k, v in tensors.items()}
        spec = f"fc{tensors['0.weight'].shape[0]}-sigmoid" + ("-bn" if has_bn else "") + "-fc"
    toks = tokens(spec)
    first = next(i for i, t in enumerate(toks) if t.startswith("fc") or t in ("bn", "ln"))
    w = tensors[f"{first}.weight"]
    inputs = w.shape[1] if toks[first].startswith("fc") else w.shape[0]
    classes = tensors[f"{len(toks) - 1}.weight"].shape[0]
    model = sequential(spec, inputs, classes, bn_eps=float(meta.get("bntrain.bn_eps", 1e-5)),
                       bn_momentum=float(meta.get("bntrain.bn_momentum", 0.9)))
    model.load_state_dict(tensors, strict=True)
    return model.eval(), spec, meta, inputs


def export_onnx(model, inputs, path):
    """Writes the model (eval mode) as ONNX with a dynamic batch dimension: input 'images'
    (N, pixels) float32 in [-1, 1], output 'logits' (N, classes)."""
    import torch
    torch.onnx.export(model.eval(), (torch.zeros(2, inputs),), str(path), input_names=["images"], output_names=["logits"],
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
        model = sequential(args.spec, 784, 10)
        print(model)
        print(f"parameters={sum(p.numel() for p in model.parameters())}")
        return
    model, spec, _, inputs = load(args.checkpoint)
    if args.cmd == "onnx":
        export_onnx(model, inputs, args.out)
        print(f"onnx spec={spec} out={args.out}")
        return
    import numpy as np
    import torch
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import common
    _, _, xte, yte = common.load(args.data, np)
    with torch.no_grad():
        logits = model(torch.from_numpy(xte))
    acc = float((logits.argmax(1).numpy() == yte).mean())
    print(f"eval spec={spec} test={len(yte)} test_acc={acc:.4f}")


if __name__ == "__main__":
    main()
