#!/usr/bin/env python3
"""Batch renormalization (Ioffe 2017, "Batch Renormalization: Towards Reducing Minibatch
Dependence in Batch-Normalized Models", Algorithm 1) in PyTorch, written from the paper for
step-matching bntrain's --bn-renorm (PyTorch has no module for it).

    from batch_renorm import renormalize, limits
    renormalize(net)                      # every BatchNorm1d/2d of net becomes batch renorm
    set_limits(net, *limits(step, total)) # before each step: the paper's schedule, scaled

Per channel, in training, with the running statistics before the step:
    sigma_B = sqrt(var_B + eps) (var_B biased),   sigma = sqrt(running_var + eps)
    r = stop_gradient(clip(sigma_B / sigma, 1/r_max, r_max))
    d = stop_gradient(clip((mu_B - running_mean) / sigma, -d_max, d_max))
    y = gamma ((x - mu_B) / sigma_B * r + d) + beta
The running statistics are then updated as BatchNorm's (the EMA of the batch mean and of the
batch variance, unbiased or not as the module's `unbiased` says). The paper's Algorithm 1
averages sigma itself (sigma := sigma + alpha (sigma_B - sigma)); bntrain keeps BN's buffers
so that checkpoints and evaluation stay BatchNorm's, and so does this reference. Evaluation
is plain BatchNorm with the running statistics.

Schedule (`limits`): Ioffe trains with r_max = 1, d_max = 0 for 5k steps, then relaxes them
to r_max = 3 by 40k steps and d_max = 5 by 25k steps. bntrain reads those step numbers as
fractions of a 50k-step run: 10%, 80% and 50% of the run's total steps, linear in between.
"""
import torch


def limits(step, total):
    """(r_max, d_max) before the 0-based `step` of a run of `total` steps."""
    n = max(total, 1)
    start = 0.1 * n
    r = min(max((step - start) / (0.8 * n - start), 0.0), 1.0)
    d = min(max((step - start) / (0.5 * n - start), 0.0), 1.0)
    return 1.0 + 2.0 * r, 5.0 * d


def _forward(bn, x):
    if not bn.training or not getattr(bn, "renorm", False):
        return bn._plain_forward(x)
    dims = [0] if x.dim() == 2 else [0, 2, 3]
    shape = [1, -1] + [1] * (x.dim() - 2)
    mu = x.mean(dim=dims)
    var = ((x - mu.view(shape)) ** 2).mean(dim=dims)
    sigma_b = torch.sqrt(var + bn.eps)
    sigma = torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        r = torch.clamp(sigma_b / sigma, 1.0 / bn.rmax, bn.rmax)
        d = torch.clamp((mu - bn.running_mean) / sigma, -bn.dmax, bn.dmax)
    xhat = (x - mu.view(shape)) / sigma_b.view(shape) * r.view(shape) + d.view(shape)
    y = bn.weight.view(shape) * xhat + bn.bias.view(shape)
    with torch.no_grad():
        m = x.numel() // x.shape[1]
        v = var * m / (m - 1) if bn.unbiased and m > 1 else var
        bn.running_mean.mul_(1 - bn.momentum).add_(bn.momentum * mu)
        bn.running_var.mul_(1 - bn.momentum).add_(bn.momentum * v)
        bn.num_batches_tracked += 1
    return y


def renormalize(net, unbiased=False):
    """Turns every BatchNorm1d/2d module of `net` into batch renormalization (limits 1, 0
    until `set_limits`); `unbiased` as bntrain's --bn-running-var."""
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m._plain_forward = m.forward
            m.renorm, m.rmax, m.dmax, m.unbiased = True, 1.0, 0.0, unbiased
            m.forward = lambda x, m=m: _forward(m, x)
    return net


def set_limits(net, rmax, dmax):
    for m in net.modules():
        if getattr(m, "renorm", False):
            m.rmax, m.dmax = rmax, dmax
