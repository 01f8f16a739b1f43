#!/usr/bin/env python3
"""A faithful numpy implementation of bntrain's reference network, for comparison.

Dense(784->H) -> Sigmoid -> BatchNorm1D -> Dense(H->C) -> softmax cross-entropy, plain SGD,
Glorot-normal weights, zero biases, float32. Same flags and output lines as bntrain.
"""
import sys
import time
import pathlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

args = common.parse_args(__doc__)
if args.model != "dfn2" or args.optimizer != "sgd" or args.momentum or args.weight_decay:
    sys.exit("numpy_bn.py implements dfn2 with plain SGD only; use torch_bn.py for other models and optimizers")
common.set_threads_env(args.threads)
import numpy as np  # noqa: E402

f32 = np.float32
rng = np.random.default_rng(args.seed)
xtr, ytr, xte, yte = common.load(args.data, np)
if args.train_limit:
    idx = rng.permutation(len(xtr))[:args.train_limit]
    xtr, ytr = xtr[idx], ytr[idx]
d, h, c = xtr.shape[1], args.hidden, int(ytr.max()) + 1
bn = not args.no_batchnorm


def glorot(fan_out, fan_in):
    return (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / (fan_in + fan_out))).astype(f32)


W1, b1 = glorot(h, d), np.zeros(h, f32)
W2, b2 = glorot(c, h), np.zeros(c, f32)
gamma, beta = np.ones(h, f32), np.zeros(h, f32)
rmean, rvar = np.zeros(h, f32), np.ones(h, f32)
m, eps, lr = f32(args.bn_momentum), f32(args.bn_eps), f32(args.lr)


def forward_eval(x):
    a = 1.0 / (1.0 + np.exp(-(x @ W1.T + b1)))
    if bn:
        a = gamma * (a - rmean) / np.sqrt(rvar + eps) + beta
    return a @ W2.T + b2


def logsumexp_loss(z, y):
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=1, keepdims=True)
    return (np.log(s[:, 0]) + zmax[:, 0] - z[np.arange(len(y)), y]), e / s


common.line("config", [("impl", "numpy"), ("numpy", np.__version__), ("train", len(xtr)), ("test", len(xte)),
                       ("epochs", args.epochs), ("batch", args.batch), ("lr", args.lr), ("hidden", h),
                       ("batchnorm", "on" if bn else "off"), ("seed", args.seed), ("threads", args.threads)])
prev = None
total = 0.0
for epoch in range(1, args.epochs + 1):
    t0 = time.perf_counter()
    order = rng.permutation(len(xtr))
    loss_sum = 0.0
    for start in range(0, len(xtr), args.batch):
        bi = order[start:start + args.batch]
        x, y = xtr[bi], ytr[bi]
        n = len(y)
        a = 1.0 / (1.0 + np.exp(-(x @ W1.T + b1)))
        if bn:
            mu = a.mean(axis=0)
            xmu = a - mu
            var = (xmu * xmu).mean(axis=0)
            istd = 1.0 / np.sqrt(var + eps)
            xhat = xmu * istd
            hb = gamma * xhat + beta
            rmean = m * rmean + (1 - m) * mu
            rvar = m * rvar + (1 - m) * var
        else:
            hb = a
        z = hb @ W2.T + b2
        losses, p = logsumexp_loss(z, y)
        loss_sum += float(losses.sum())
        dz = p
        dz[np.arange(n), y] -= 1.0
        dz /= f32(n)
        dW2, db2 = dz.T @ hb, dz.sum(axis=0)
        dhb = dz @ W2
        if bn:
            dbeta, dgamma = dhb.sum(axis=0), (dhb * xhat).sum(axis=0)
            da = (gamma * istd / n) * (n * dhb - dbeta - xhat * dgamma)
            gamma -= lr * dgamma
            beta -= lr * dbeta
        else:
            da = dhb
        dh1 = da * a * (1.0 - a)
        dW1, db1 = dh1.T @ x, dh1.sum(axis=0)
        W1 -= lr * dW1
        b1 -= lr * db1
        W2 -= lr * dW2
        b2 -= lr * db2
    seconds = time.perf_counter() - t0
    total += seconds
    t1 = time.perf_counter()
    tl, correct = 0.0, 0
    for s in range(0, len(xte), args.eval_batch):
        z = forward_eval(xte[s:s + args.eval_batch])
        l, _ = logsumexp_loss(z, yte[s:s + args.eval_batch])
        tl += float(l.sum())
        correct += int((z.argmax(axis=1) == yte[s:s + args.eval_batch]).sum())
    test_seconds = time.perf_counter() - t1
    train_loss = loss_sum / len(xtr)
    common.epoch_line(epoch, train_loss, prev, tl / len(xte), correct / len(xte), seconds, test_seconds)
    prev = train_loss
common.summary_line(args.epochs, correct / len(xte), total)
