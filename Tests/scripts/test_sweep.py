"""Scripts/sweep (grid expansion, skip-finished, summary, multi-host path) and Scripts/plot."""
import csv
import fcntl
import importlib.machinery
import importlib.util
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import time

import pytest

from conftest import REPO

SWEEP = REPO / "Scripts" / "sweep"
PLOT = REPO / "Scripts" / "plot"


def load_sweep_module():
    loader = importlib.machinery.SourceFileLoader("sweep", str(SWEEP))
    spec = importlib.util.spec_from_loader("sweep", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


sweep = load_sweep_module()


def test_grid_expansion_and_run_names():
    opts, flags, axes = sweep.parse(["--out", "o", "--lr", "0.003,0.01,0.03", "--batch", "32,64,128",
                                     "--batchnorm", "on,off", "--seeds", "3", "--epochs", "20", "--quiet"])
    runs = sweep.expand(axes)
    assert len(runs) == 3 * 3 * 2 * 3
    first = runs[0]
    assert sweep.run_id(first, axes) == "lr=0.003_batch=32_batchnorm=on_seed=1"
    assert sweep.bntrain_args(first) == ["--lr", "0.003", "--batch", "32", "--epochs", "20", "--quiet", "--seed", "1"]
    off = next(r for r in runs if ("--batchnorm", "off") in r)
    assert "--no-batchnorm" in sweep.bntrain_args(off)
    assert len({sweep.run_id(r, axes) for r in runs}) == len(runs)
    assert opts["--jobs"] == str(os.cpu_count())


@pytest.mark.parametrize("argv, message", [
    (["--lr", "0.1"], "--out DIR is required"),
    (["--out", "o", "--metrics", "x.csv"], "set by the sweep"),
    (["--out", "o", "--batchnorm", "maybe"], "on, off"),
    (["--out", "o", "--seeds", "0"], "positive"),
    (["--out", "o", "--seeds", "2", "--seed", "1,2"], "not both"),
    (["--out", "o", "stray"], "unexpected argument"),
])
def test_bad_grids_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.parse(argv)
    assert e.value.code == 64
    assert message in capsys.readouterr().err


def run_sweep(out, data, *extra, env=None):
    return subprocess.run([str(SWEEP), "--out", str(out), "--data", str(data), "--lr", "0.03,0.1", "--batchnorm", "on,off",
                           "--seeds", "2", "--epochs", "2", "--hidden", "8", "--batch", "16", "--jobs", "2", *extra],
                          capture_output=True, text=True, timeout=600, env=env)


def test_sweep_runs_summarises_and_skips_finished(tmp_path, tiny, bntrain):
    out = tmp_path / "sweep"
    r = run_sweep(out, tiny)
    assert r.returncode == 0, r.stderr
    assert "8 to run" in r.stderr
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 8
    for name in runs:
        d = out / "runs" / name
        log = [json.loads(l) for l in (d / "stdout").read_text().splitlines()]
        assert [x["kind"] for x in log] == ["config", "epoch", "epoch", "summary"]
        assert [json.loads(l)["epoch"] for l in (d / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [k for k in rows[0]][:3] == ["lr", "batchnorm", "seeds"]
    assert len(rows) == 4 and all(r["seeds"] == "2" for r in rows)
    means = [float(r["test_acc_mean"]) for r in rows]
    assert means == sorted(means, reverse=True)
    # Mean and spread recomputed from the runs' own summaries.
    row = rows[-1]
    accs = []
    for seed in (1, 2):
        log = (out / "runs" / f"lr={row['lr']}_batchnorm={row['batchnorm']}_seed={seed}" / "stdout").read_text().splitlines()
        accs.append(json.loads(log[-1])["final_test_acc"])
    assert float(row["test_acc_mean"]) == pytest.approx(statistics.fmean(accs), abs=1e-4)
    assert float(row["test_acc_std"]) == pytest.approx(statistics.stdev(accs), abs=1e-4)

    # Again: nothing to do. Then lose one run's log (as an interrupted job would): only it reruns.
    joblog = (out / "joblog.txt").read_text()
    again = run_sweep(out, tiny)
    assert again.returncode == 0 and "8 already finished, 0 to run" in again.stderr
    assert (out / "joblog.txt").read_text() == joblog
    (out / "runs" / runs[3] / "stdout").write_text('{"kind":"config"}\n')
    third = run_sweep(out, tiny)
    assert third.returncode == 0 and "7 already finished, 1 to run" in third.stderr, third.stderr


def test_a_second_sweep_in_the_same_folder_is_refused(tmp_path, tiny, bntrain):
    """While a sweep holds DIR/.sweep.lock, another one in DIR exits 64 naming it and touches
    nothing; once the lock is released the folder is usable again."""
    out = tmp_path / "sweep"
    out.mkdir()
    with open(out / ".sweep.lock", "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write("4242\n")
        holder.flush()
        r = run_sweep(out, tiny)
        assert r.returncode == 64, r.stderr
        assert "another sweep (pid 4242) is running in" in r.stderr and "--out" in r.stderr
        assert not (out / "runs").exists() and not (out / "summary.csv").exists()
    r = run_sweep(out, tiny)
    assert r.returncode == 0, r.stderr
    assert (out / ".sweep.lock").read_text().strip().isdigit()


def test_sweep_over_models_with_and_without_batchnorm(tmp_path, tiny, bntrain):
    """Models are a grid axis like any flag (specs contain no commas); the summary lists each."""
    out = tmp_path / "models"
    cmd = [str(SWEEP), "--out", str(out), "--bntrain", bntrain, "--data", str(tiny), "--model",
           "dfn2,bn-paper,fc16-ln-tanh-dropout0.1-fc", "--batchnorm", "on,off", "--epochs", "1", "--batch", "20", "--lr", "0.1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert sorted((row["model"], row["batchnorm"]) for row in rows) == sorted(
        (m, b) for m in ("dfn2", "bn-paper", "fc16-ln-tanh-dropout0.1-fc") for b in ("on", "off"))
    config = json.loads((out / "runs" / "model=bn-paper_batchnorm=off" / "stdout").read_text().splitlines()[0])
    assert config["spec"] == "fc100-sigmoid-fc100-sigmoid-fc100-sigmoid-fc"


def test_sweep_continues_unfinished_runs_from_their_checkpoints(tmp_path, tiny, bntrain):
    """An unfinished run (here: one epoch of two done, as a sweep interrupted between epochs
    leaves it) continues from runs/ID/checkpoint.safetensors and ends exactly as in an
    uninterrupted sweep: the same epoch records (timing aside) in its metrics.jsonl."""
    ref = tmp_path / "ref"
    assert run_sweep(ref, tiny).returncode == 0
    out = tmp_path / "cont"
    dry = run_sweep(out, tiny, "--dry-run")
    rid, *cmd = shlex.split(dry.stdout.splitlines()[0])
    assert "--resume" not in cmd and "--save" in cmd and "--metrics" in cmd
    cmd[cmd.index("--epochs") + 1] = "1"
    (out / "runs" / rid).mkdir(parents=True)
    r = subprocess.run([bntrain] + cmd[1:], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    second = run_sweep(out, tiny)
    assert second.returncode == 0, second.stderr
    assert "8 to run (1 continuing from their checkpoints)" in second.stderr, second.stderr

    def epochs(folder):
        lines = (folder / "runs" / rid / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(l).items() if k not in ("seconds", "test_seconds")} for l in lines]
    assert [e["epoch"] for e in epochs(out)] == [1, 2]
    assert epochs(out) == epochs(ref)
    summary = lambda folder: [{k: v for k, v in row.items() if k != "seconds_per_epoch_mean"}
                              for row in csv.DictReader((folder / "summary.csv").open())]
    assert summary(out) == summary(ref)
    assert (out / "runs" / rid / "checkpoint.safetensors").exists()


def test_sweep_over_several_hosts_through_ssh(tmp_path, tiny, bntrain):
    """GNU parallel's --sshloginfile path, with an ssh stand-in that runs the 'remote'
    command on this machine (Tests/scripts/fake-ssh) and logs which host it was sent to."""
    hosts = tmp_path / "hosts"
    hosts.write_text("1/hostA\n1/hostB\n")
    ssh_log = tmp_path / "ssh.log"
    env = dict(os.environ, BNTRAIN_SWEEP_SSH=str(REPO / "Tests" / "scripts" / "fake-ssh"), FAKE_SSH_LOG=str(ssh_log))
    r = run_sweep(tmp_path / "remote", tiny, "--sshloginfile", str(hosts), env=env)
    assert r.returncode == 0, r.stderr
    used = ssh_log.read_text().split()
    assert set(used) == {"hostA", "hostB"}, used
    assert len(list(csv.DictReader((tmp_path / "remote" / "summary.csv").open()))) == 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def loopback_sshd(tmp_path):
    """A real OpenSSH server on 127.0.0.1 (a free port, throw-away keys, key login only) and
    an ssh command for it: two 'hosts' (127.0.0.1 and localhost) are two real ssh logins to
    this machine. Scripts/test installs openssh-server; the test is skipped only where sshd
    cannot run (not installed, or not root and no /run/sshd)."""
    sshd, keygen = shutil.which("sshd") or "/usr/sbin/sshd", shutil.which("ssh-keygen")
    if not (os.path.exists(sshd) and keygen and shutil.which("ssh")):
        pytest.skip("openssh-server/openssh-client not installed (Scripts/test installs them)")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    elif not os.path.isdir("/run/sshd"):
        pytest.skip("sshd needs /run/sshd, which only root can create")
    d = tmp_path / "sshd"
    d.mkdir()
    for key in ("hostkey", "userkey"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "userkey.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'hostkey'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\nPidFile none\n")
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "sshd.log", "w"))
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("sshd exited: " + (d / "sshd.log").read_text())
                time.sleep(0.05)
        ssh = d / "ssh"
        ssh.write_text(f"#!/bin/sh\nexec ssh -p {port} -i {d / 'userkey'} -o BatchMode=yes -o StrictHostKeyChecking=no "
                       f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \"$@\"\n")
        ssh.chmod(0o755)
        yield ssh, d / "sshd.log"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_sweep_over_two_real_ssh_logins(tmp_path, tiny, bntrain, loopback_sshd):
    """The multi-host path end to end through a real sshd: GNU parallel sends the runs to two
    ssh logins (127.0.0.1 and localhost), both run jobs, and the summary is complete."""
    ssh, log = loopback_sshd
    hosts = tmp_path / "hosts"
    hosts.write_text("1/127.0.0.1\n1/localhost\n")
    env = dict(os.environ, BNTRAIN_SWEEP_SSH=str(ssh))
    r = run_sweep(tmp_path / "ssh", tiny, "--sshloginfile", str(hosts), env=env)
    assert r.returncode == 0, r.stderr + log.read_text()
    joblog = list(csv.DictReader((tmp_path / "ssh" / "joblog.txt").open(), delimiter="\t"))
    assert {row["Host"] for row in joblog} == {"127.0.0.1", "localhost"}, joblog
    assert all(row["Exitval"] == "0" for row in joblog)
    assert "Accepted publickey" in log.read_text()
    assert len(list(csv.DictReader((tmp_path / "ssh" / "summary.csv").open()))) == 4


def test_plot_draws_a_sweep_and_metrics_files(tmp_path, tiny, bntrain):
    out = tmp_path / "sweep"
    assert run_sweep(out, tiny).returncode == 0
    png = tmp_path / "curves.png"
    r = subprocess.run([str(PLOT), "--out", str(png), str(out), "--facet", "batchnorm"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2 line(s)" not in r.stderr and "4 line(s) from 8 run(s)" in r.stderr
    metrics = tmp_path / "m.csv"
    assert subprocess.run([bntrain, "--data", str(tiny), "--epochs", "3", "--hidden", "8", "--metrics", str(metrics), "--quiet"],
                          capture_output=True).returncode == 0
    r = subprocess.run([str(PLOT), "--out", str(tmp_path / "one.png"), str(metrics)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (tmp_path / "one.png").exists(), r.stderr


def test_bn_paper_experiment_quick(tmp_path, bntrain):
    """The Figure 1 experiment end to end on a small scale: both nets through the sweep, both
    figures drawn, the table printed with accuracies and the traced unit's drift."""
    r = subprocess.run([str(REPO / "Scripts" / "experiments" / "bn-paper"), "--quick", "--out", str(tmp_path / "runs"),
                        "--docs", str(tmp_path / "docs")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "dataset fashion-mnist" in r.stderr or "dataset mnist" in r.stderr
    for png in ("bn-paper-accuracy.png", "bn-paper-trace.png"):
        assert (tmp_path / "docs" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [l for l in r.stdout.splitlines() if l.startswith("| with") or l.startswith("| without")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(0 < float(c) <= 1 for c in cells[1:4]), row
        assert all(len(c.split(" / ")) == 2 for c in cells[4:]), row


def test_groupnorm_experiment_quick(tmp_path, bntrain):
    """GroupNorm's Figure 1 end to end on a small scale: BN and GN nets at two batch sizes,
    the figure drawn, the table printed with an error per net and batch; a bad --batches is
    one line."""
    script = REPO / "Scripts" / "experiments" / "groupnorm"
    r = subprocess.run([str(script), "--quick", "--out", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "docs" / "groupnorm-batch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [l for l in r.stdout.splitlines() if l.startswith("| 16 ") or l.startswith("| 4 ")]
    assert len(rows) == 2, r.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(0 < float(c.split(" ")[0]) < 100 for c in cells[1:3]), row
    bad = subprocess.run([str(script), "--batches", "8,zero"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--batches" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
