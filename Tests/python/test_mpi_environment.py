"""A launcher's environment without a usable MPI, and bad MPI settings: one line, exit 64.
These need no mpirun: bntrain sees the variables a launcher sets and fails before training."""
import os
import subprocess


def bad(bntrain, tiny, **env):
    r = subprocess.run([bntrain, "--data", str(tiny), "--epochs", "1"], capture_output=True, text=True,
                       env={**os.environ, "OMPI_COMM_WORLD_SIZE": "2", **env}, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 64 and len(lines) == 1 and lines[0].startswith("bntrain: error: "), (r.returncode, r.stderr)
    assert r.stdout == ""
    return lines[0]


def test_a_missing_libmpi_is_one_line(bntrain, tiny):
    line = bad(bntrain, tiny, BNTRAIN_LIBMPI="/nonexistent/libmpi.so.40")
    assert "BNTRAIN_LIBMPI '/nonexistent/libmpi.so.40' could not be loaded" in line and "Scripts/setup" in line


def test_a_bad_timeout_is_one_line(bntrain, tiny):
    for value in ("soon", "-1", "86401", ""):
        line = bad(bntrain, tiny, BNTRAIN_MPI_TIMEOUT=value)
        assert f"BNTRAIN_MPI_TIMEOUT '{value}'" in line and "0 to 86400" in line
