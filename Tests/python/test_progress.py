"""The progress display appears on stderr only when stderr is a terminal, and never in stdout."""
import os
import subprocess



def run_with_tty_stderr(bntrain, *args):
    master, slave = os.openpty()
    p = subprocess.Popen([bntrain, *args], stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out = p.stdout.read()
    p.wait()
    os.close(master)
    return p.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def test_progress_on_a_terminal_only(bntrain, fashion):
    code, out, err = run_with_tty_stderr(bntrain, "--data", str(fashion), "--epochs", "2", "--train-limit", "20000")
    assert code == 0
    assert "\r" in err and "img/s" in err and "ETA" in err, err
    assert "\r" not in out and "img/s" not in out
    code, out, err = run_with_tty_stderr(bntrain, "--data", str(fashion), "--epochs", "2", "--train-limit", "20000", "--quiet")
    assert code == 0 and "img/s" not in err
    redirected = subprocess.run([bntrain, "--data", str(fashion), "--epochs", "1", "--train-limit", "20000"], capture_output=True, text=True)
    assert "img/s" not in redirected.stderr and "\r" not in redirected.stderr
