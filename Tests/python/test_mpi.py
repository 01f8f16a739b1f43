"""Several processes under Open MPI (`mpirun` on localhost): 2 and 3 ranks, with 1 or 2 workers
each, print the records and save the tensors of one process on one worker, bit for bit; only
rank 0 writes; a rank that read other data is refused with one line naming it. Skipped where
`mpirun` is missing (Scripts/test installs openmpi-bin)."""
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from safetensors.numpy import load_file

from conftest import run, striped_dataset, write_idx

MPIRUN = shutil.which("mpirun")
pytestmark = pytest.mark.skipif(MPIRUN is None, reason="Open MPI's mpirun is not installed (Scripts/setup openmpi-bin)")


def mpirun(n, args, timeout=240):
    """`mpirun -n N` on this host only (loopback), as root in CI; a hung job fails the test."""
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "--host", f"localhost:{n}",
           "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo", "-n", str(n)] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def stable(stdout):
    """Records without timings, paths and the worker count."""
    out = []
    for line in stdout.splitlines():
        keep = [t for t in line.split() if "seconds" not in t.split("=", 1)[0] and t.split("=", 1)[0] not in ("workers", "saved", "save")]
        out.append(" ".join(keep))
    return out


def tensors(path):
    return {k: v.tobytes() for k, v in load_file(str(path)).items()}


@pytest.fixture
def digits(tmp_path):
    """28x28 images, 10 classes, 700 training and 200 test images (the presets' input size)."""
    return striped_dataset(tmp_path / "digits", 28, 10, (700, 200), lambda k: 2 * k + 3, slice(4, 24), 0, 90, 220, 1)


@pytest.mark.parametrize("model,extra", [
    ("dfn2", ["--optimizer", "adam", "--lr", "1e-3"]),
    ("lenet-bn", ["--optimizer", "adam", "--lr", "1e-3", "--batch", "100"]),
    ("mlp", ["--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05", "--bn-sync", "off", "--batch", "70"]),
    # The normalization lab's modes: precise BN (its pass divided among the ranks), ghost
    # batches of two shards, batch renormalization and freezing.
    ("mlp", ["--lr", "0.05", "--batch", "128", "--bn-stats", "precise", "--bn-ghost", "64"]),
    ("lenet-bn", ["--lr", "0.02", "--batch", "100", "--bn-renorm", "--bn-freeze-after", "2"]),
])
def test_ranks_give_one_process_bits(bntrain, digits, tmp_path, model, extra):
    args = ["--data", str(digits), "--model", model, "--epochs", "2", "--seed", "4", "--eval-every", "5", "--val-split", "0.1"] + extra
    one = run([bntrain] + args + ["--workers", "1", "--save", str(tmp_path / "one.safetensors")])
    want = stable(one.stdout)
    for n, workers in ((2, "1"), (3, "2")):
        save = tmp_path / f"ranks{n}.safetensors"
        r = mpirun(n, [bntrain] + args + ["--workers", workers, "--save", str(save)])
        assert r.returncode == 0, r.stderr
        assert stable(r.stdout) == want, f"{n} ranks x {workers} workers printed other records"
        assert sum(line.startswith("summary ") for line in r.stdout.splitlines()) == 1, r.stdout
        assert tensors(save) == tensors(tmp_path / "one.safetensors"), f"{n} ranks saved other tensors"
        assert not any(line.startswith("bntrain: error") for line in r.stderr.splitlines()), r.stderr
        notes = [line for line in r.stderr.splitlines() if "MPI ranks" in line]
        assert notes == [f"bntrain: note: one run over {n} MPI ranks ({n} on this host), {workers} worker{'s' if workers != '1' else ''} each; rank 0 writes"], r.stderr


def test_workers_auto_divides_the_cores_among_the_ranks(bntrain, digits):
    def core(cpu):
        t = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            return open(t + "physical_package_id").read().strip(), open(t + "core_id").read().strip()
        except OSError:
            return cpu, cpu
    physical = len({core(c) for c in os.sched_getaffinity(0)})
    r = mpirun(2, [bntrain, "--data", str(digits), "--epochs", "1", "--workers", "auto"])
    assert r.returncode == 0, r.stderr
    each = max(1, physical // 2)
    assert f"2 MPI ranks (2 on this host), {each} worker" in r.stderr, r.stderr


def test_a_rank_with_other_data_is_refused(bntrain, digits, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(digits, other)
    x = np.frombuffer((other / "train-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8).reshape(700, 28, 28).copy()
    x[0, 0, 0] ^= 1
    write_idx(other / "train-images-idx3-ubyte", x)
    common = ["--model", "fc16-fc", "--epochs", "1"]
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
           "-n", "1", bntrain, "--data", str(digits)] + common + [":", "-n", "1", bntrain, "--data", str(other)] + common
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 65, (r.returncode, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("bntrain: error:")]
    assert len(errors) == 1, r.stderr
    assert "rank 1" in errors[0] and "other data than rank 0" in errors[0], errors
    assert r.stdout == "", r.stdout


def wait_for(path, proc, timeout=60):
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.05)


def rank_pids(marker):
    """The pids of the ranks whose command line holds `marker` (a unique --data folder)."""
    out = subprocess.run(["pgrep", "-f", f"bntrain --data {marker}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_killed_rank_ends_the_job_and_the_checkpoint_loads(bntrain, digits, tmp_path):
    save = tmp_path / "k.safetensors"
    cmd = [MPIRUN, "-q", "--allow-run-as-root", "--oversubscribe", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
           "-n", "2", bntrain, "--data", str(digits), "--epochs", "100000", "--save", str(save)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(save, proc)
        pids = [p for p in rank_pids(digits) if p != proc.pid]
        assert len(pids) == 2, pids
        killed = time.time()
        os.kill(max(pids), signal.SIGKILL)
        out, err = proc.communicate(timeout=20)
        took = time.time() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode not in (0, None), proc.returncode
    assert took < 10, took
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("bntrain: note:")]
    assert len(lines) == 1 and "ended during the run" in lines[0] and "rank " in lines[0], err
    r = run([bntrain, "eval", "--model", str(save), "--data", str(digits)])
    assert "accuracy" in r.stdout or "test_acc" in r.stdout, r.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_mpirun_saves_and_resumes_as_one_process(bntrain, digits, tmp_path, sig):
    save = tmp_path / "s.safetensors"
    args = ["--model", "mlp", "--optimizer", "adam", "--lr", "1e-3", "--seed", "2"]
    cmd = [MPIRUN, "-q", "--allow-run-as-root", "--oversubscribe", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
           "-n", "2", bntrain, "--data", str(digits), "--epochs", "100000", "--save", str(save)] + args
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(save, proc)
        time.sleep(0.3)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("bntrain: note:")]
    assert len(lines) == 1 and "checkpoint saved" in lines[0], err
    stopped = int(lines[0].split(" at epoch ")[1].split(",")[0])
    epochs = str(stopped + 1)
    # Resumed in one process, the run ends where an uninterrupted one-process run ends.
    rest = run([bntrain, "--resume", str(save), "--epochs", epochs, "--workers", "1"])
    whole = run([bntrain, "--data", str(digits), "--epochs", epochs, "--workers", "1"] + args)
    summary = lambda s: [t for t in s.splitlines()[-1].split() if "seconds" not in t and not t.startswith("saved")]
    assert summary(rest.stdout) == summary(whole.stdout)


def test_two_hosts_in_network_namespaces(bntrain, digits, tmp_path):
    """Rank 1 runs in a network namespace of its own, reached over a veth pair: mpirun starts it
    through an ssh stand-in that enters the namespace, and the ranks talk TCP over the pair."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for network namespaces")
    ns, veth, net = f"bnmpi{os.getpid()}", f"bnv{os.getpid() % 100000}", f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
    agent = tmp_path / "ns-ssh"
    agent.write_text(f"""#!/usr/bin/env bash
# mpirun's remote agent: `ns-ssh [options] HOST COMMAND...`; HOST {net}.2 is the namespace.
while [ $# -gt 0 ]; do case "$1" in -o|-l|-p|-i) shift 2 ;; -*) shift ;; *) host=$1; shift; break ;; esac; done
echo "$host" >> {tmp_path / "agent.log"}
if [ "$host" = "{net}.2" ]; then exec ip netns exec {ns} bash -c "$*"; else exec bash -c "$*"; fi
""")
    agent.chmod(0o755)
    setup = [["ip", "netns", "add", ns], ["ip", "link", "add", veth + "a", "type", "veth", "peer", "name", veth + "b"],
             ["ip", "link", "set", veth + "b", "netns", ns], ["ip", "addr", "add", f"{net}.1/24", "dev", veth + "a"],
             ["ip", "link", "set", veth + "a", "up"], ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{net}.2/24", "dev", veth + "b"],
             ["ip", "netns", "exec", ns, "ip", "link", "set", veth + "b", "up"], ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]]
    try:
        for c in setup:
            subprocess.run(c, check=True, capture_output=True)
        args = ["--data", str(digits), "--model", "lenet-bn", "--optimizer", "adam", "--lr", "1e-3", "--epochs", "1", "--batch", "100", "--seed", "6"]
        one = run([bntrain] + args + ["--workers", "1"])
        cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "--host", f"{net}.1:1,{net}.2:1", "-n", "2",
               "--mca", "plm_rsh_agent", str(agent), "--mca", "btl", "tcp,self",
               "--mca", "btl_tcp_if_include", f"{net}.0/24", "--mca", "oob_tcp_if_include", f"{net}.0/24",
               "-x", "PATH", bntrain] + args
        started = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        took = time.time() - started
        assert r.returncode == 0, r.stderr
        assert stable(r.stdout) == stable(one.stdout)
        assert (tmp_path / "agent.log").read_text().split() == [f"{net}.2"], "rank 1 was not started in the namespace"
        print(f"two namespaces: lenet-bn, 700 images, 1 epoch: {took:.1f} s")
        # The link goes down mid-run: the exchange that waits longer than BNTRAIN_MPI_TIMEOUT
        # ends the job with one line from rank 0, and the checkpoint loads.
        save = tmp_path / "net.safetensors"
        launcher = cmd[:cmd.index(bntrain) + 1]
        long_run = launcher[:1] + ["-q", "-x", "BNTRAIN_MPI_TIMEOUT"] + launcher[1:] + ["--data", str(digits), "--epochs", "100000", "--save", str(save)]
        # Files, not pipes: a daemon left in the namespace would hold a pipe open.
        errors = tmp_path / "net.err"
        with open(errors, "w") as err_file:
            proc = subprocess.Popen(long_run, stdout=subprocess.DEVNULL, stderr=err_file, text=True,
                                    env={**os.environ, "BNTRAIN_MPI_TIMEOUT": "3"})
        try:
            wait_for(save, proc)
            assert len([p for p in rank_pids(digits) if p != proc.pid]) == 2
            subprocess.run(["ip", "link", "set", veth + "a", "down"], check=True)
            cut = time.time()
            # Both ranks end; mpirun itself may go on waiting for the daemon it cannot reach.
            while [p for p in rank_pids(digits) if p != proc.pid] and time.time() - cut < 60:
                time.sleep(0.1)
            took = time.time() - cut
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
            err = errors.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
        assert took < 30, took
        lines = [line for line in err.splitlines() if line.startswith("bntrain:") and not line.startswith("bntrain: note:")]
        assert len(lines) == 1 and "heard nothing from the other ranks for 3 s" in lines[0], err
        run([bntrain, "eval", "--model", str(save), "--data", str(digits)])
        print(f"link down: the job ended after {took:.1f} s")
    finally:
        # Any daemon left in the namespace goes with it.
        left = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in left:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", veth + "a"], capture_output=True)


def test_resume_across_process_counts(bntrain, digits, tmp_path):
    """1 epoch in one process, resumed over 3 ranks for the second: one process's 2 epochs."""
    args = ["--data", str(digits), "--model", "mlp", "--optimizer", "adam", "--lr", "1e-3", "--seed", "8"]
    whole = run([bntrain] + args + ["--epochs", "2", "--save", str(tmp_path / "whole.safetensors")])
    run([bntrain] + args + ["--epochs", "1", "--save", str(tmp_path / "part.safetensors")])
    r = mpirun(3, [bntrain, "--resume", str(tmp_path / "part.safetensors"), "--epochs", "2", "--save", str(tmp_path / "part.safetensors")])
    assert r.returncode == 0, r.stderr
    assert stable(r.stdout)[-1] == stable(whole.stdout)[-1]
    assert tensors(tmp_path / "part.safetensors") == tensors(tmp_path / "whole.safetensors")


def test_traces_divided_among_ranks_are_one_process_numbers(bntrain, fashion):
    """3,000 probe images are 3 chunks of 1,000: ranks and workers divide them."""
    args = ["--data", str(fashion), "--train-limit", "1280", "--epochs", "1", "--model", "bn-paper",
            "--trace", "last-sigmoid", "--trace-every", "10", "--trace-examples", "3000"]
    want = [l for l in run([bntrain] + args).stdout.splitlines() if l.startswith("trace ")]
    assert len(want) == 2
    for n, workers in ((2, "1"), (3, "2")):
        r = mpirun(n, [bntrain] + args + ["--workers", workers])
        assert r.returncode == 0, r.stderr
        assert [l for l in r.stdout.splitlines() if l.startswith("trace ")] == want, f"{n} ranks"
