#!/usr/bin/env python3
"""A PyTorch (CPU) implementation of bntrain's training, for comparison.

Any bntrain model spec or preset (--model, default dfn2: nn.Linear -> nn.Sigmoid ->
nn.BatchNorm1d -> nn.Linear) built by bntrain_torch.sequential, F.cross_entropy, and
torch.optim's SGD (--momentum, --nesterov), Adam, AdamW or RMSprop (--optimizer) with
--weight-decay, Glorot-normal weights (xavier_normal_), zero biases, float32. Same flags and
output lines as bntrain. BatchNorm1d's momentum is 1 - --bn-momentum (PyTorch weighs the new
value).
"""
import sys
import time
import pathlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

args = common.parse_args(__doc__)
common.set_threads_env(args.threads)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import bntrain_torch  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
xtr, ytr, xte, yte = common.load(args.data, np)
if args.train_limit:
    idx = np.random.default_rng(args.seed).permutation(len(xtr))[:args.train_limit]
    xtr, ytr = xtr[idx], ytr[idx]
xtr, ytr, xte, yte = (torch.from_numpy(np.ascontiguousarray(a)) for a in (xtr, ytr, xte, yte))
d, h, c = xtr.shape[1], args.hidden, int(ytr.max()) + 1

side = int(round(d ** 0.5))
image = (1, side, d // side) if bntrain_torch.is_convolutional(args.model, h) else None
if image is not None:  # convolutions take (N, 1, H, W)
    xtr, xte = xtr.view(-1, *image), xte.view(-1, *image)
model = bntrain_torch.sequential(args.model, d, c, bn_eps=args.bn_eps, bn_momentum=args.bn_momentum, hidden=h, image=image)
if args.no_batchnorm:
    model = nn.Sequential(*[m for m in model if not isinstance(m, nn.BatchNorm1d)])
for m in model:
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_normal_(m.weight)
        nn.init.zeros_(m.bias)
if args.optimizer == "sgd":
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay)
elif args.optimizer in ("adam", "adamw"):
    cls = torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW
    opt = cls(model.parameters(), lr=args.lr, betas=(args.beta1, args.beta2), eps=args.adam_eps, weight_decay=args.weight_decay)
else:
    opt = torch.optim.RMSprop(model.parameters(), lr=args.lr, alpha=args.alpha, eps=args.adam_eps, momentum=args.momentum, weight_decay=args.weight_decay)

common.line("config", [("impl", "torch"), ("torch", torch.__version__), ("train", len(xtr)), ("test", len(xte)),
                       ("epochs", args.epochs), ("batch", args.batch), ("lr", args.lr), ("hidden", h),
                       ("model", args.model), ("optimizer", args.optimizer), ("momentum", args.momentum),
                       ("batchnorm", "off" if args.no_batchnorm else "on"), ("seed", args.seed),
                       ("threads", torch.get_num_threads())])
prev, total = None, 0.0
for epoch in range(1, args.epochs + 1):
    model.train()
    t0 = time.perf_counter()
    order = torch.randperm(len(xtr))
    loss_sum = 0.0
    for start in range(0, len(xtr), args.batch):
        bi = order[start:start + args.batch]
        x, y = xtr[bi], ytr[bi]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(y)
    seconds = time.perf_counter() - t0
    total += seconds
    model.eval()
    t1 = time.perf_counter()
    tl, correct = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(xte), args.eval_batch):
            z = model(xte[s:s + args.eval_batch])
            y = yte[s:s + args.eval_batch]
            tl += F.cross_entropy(z, y, reduction="sum").item()
            correct += int((z.argmax(1) == y).sum())
    test_seconds = time.perf_counter() - t1
    train_loss = loss_sum / len(xtr)
    common.epoch_line(epoch, train_loss, prev, tl / len(xte), correct / len(xte), seconds, test_seconds)
    prev = train_loss
common.summary_line(args.epochs, correct / len(xte), total)
