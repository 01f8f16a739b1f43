"""The training loop allocates nothing per step: bnbench's training-step loop run 10 and
510 times makes exactly the same number of heap allocations (counted by an LD_PRELOAD
interposer on malloc, calloc, realloc and posix_memalign)."""
import os
import shutil

from conftest import REPO, run


def test_training_step_allocates_nothing(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    assert cc, "a C compiler is needed to build the allocation counter"
    lib = tmp_path / "malloc_count.so"
    run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(REPO / "Tests/python/support/malloc_count.c"), "-ldl"])
    run(["swift", "build", "-c", "release", "--product", "bnbench"], cwd=REPO)
    counts = []
    for steps in (10, 510):
        env = dict(os.environ, LD_PRELOAD=str(lib), OPENBLAS_NUM_THREADS="1")
        r = run([str(REPO / ".build/release/bnbench"), "--steps", str(steps), "--repeats", "1", "--square", "64"], env=env)
        counts.append(r.stderr.strip().splitlines()[-1])
    assert counts[0].startswith("mallocs="), counts
    assert counts[0] == counts[1], f"1,000 more training steps allocated: {counts[0]} vs {counts[1]}"
