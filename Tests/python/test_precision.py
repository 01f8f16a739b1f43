"""bf16 mixed precision reaches float32's accuracy on Fashion-MNIST (end to end, the release
binary): dfn2 on 20,000 images for 5 epochs (SGD) and lenet-bn on 10,000 for 3 epochs (Adam),
seeds 1-3 each, the mean test accuracy of the two precisions within 0.005. (docs/precision.md's
acceptance runs: lenet-bn on 20,000 images for 5 epochs, same bound.)"""
import statistics

import pytest

from conftest import fields, run


def has_bf16():
    flags = open("/proc/cpuinfo").read()
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.mark.parametrize("model,extra", [
    ("dfn2", ["--train-limit", "20000", "--epochs", "5"]),
    ("lenet-bn", ["--train-limit", "10000", "--epochs", "3", "--optimizer", "adam", "--lr", "0.001"]),
])
def test_bf16_reaches_float32_accuracy(bntrain, fashion, model, extra):
    if not has_bf16():
        pytest.skip("no bf16 instructions on this CPU (bntrain refuses --precision bf16 here; tested in PrecisionCommandTests)")
    acc = {}
    for precision in ("fp32", "bf16"):
        acc[precision] = []
        for seed in (1, 2, 3):
            out = run([bntrain, "--data", str(fashion), "--model", model, "--seed", str(seed), "--precision", precision, "--quiet"] + extra)
            lines = out.stdout.splitlines()
            assert fields(lines[0])["precision"] == precision
            acc[precision].append(float(fields(lines[-1])["final_test_acc"]))
    means = {p: statistics.mean(v) for p, v in acc.items()}
    assert abs(means["bf16"] - means["fp32"]) <= 0.005, f"{model}: {acc}"
    assert acc["bf16"] != acc["fp32"], "bf16 ran: its accuracies differ from float32's somewhere"
