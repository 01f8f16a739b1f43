"""Scripts/data's download path against local HTTP servers serving generated files.

Each test starts its own http.server mirrors on 127.0.0.1 (random ports), writes a checksum
list for the generated files and points Scripts/data at them through its environment
variables. No traffic leaves the machine.
"""
import gzip
import hashlib
import http.server
import os
import pathlib
import subprocess
import threading

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "Scripts" / "data"
FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


class Mirror:
    """A directory served over HTTP on loopback, counting the requests it gets."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.requests = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def idx_files():
    """Tiny valid IDX files (gzipped), keyed by the MNIST file names."""
    images = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes(range(8))
    labels = bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 0])
    return {
        FILES[0]: gzip.compress(images, mtime=0), FILES[1]: gzip.compress(labels, mtime=0),
        FILES[2]: gzip.compress(images, mtime=0), FILES[3]: gzip.compress(labels, mtime=0),
    }


@pytest.fixture
def env(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    sums = []
    for name, data in idx_files().items():
        (good / name).write_bytes(data)
        sums.append(f"{hashlib.sha256(data).hexdigest()}  mnist/{name}")
    (tmp_path / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    bad = tmp_path / "bad"  # same names, wrong contents (an HTML error page)
    bad.mkdir()
    for name in FILES:
        (bad / name).write_text("<html>Service unavailable</html>")
    mirrors = {"good": Mirror(good), "bad": Mirror(bad), "empty": Mirror(tmp_path / "nothing-here")}
    data_root = tmp_path / "Data"
    yield {"tmp": tmp_path, "root": data_root, "sums": tmp_path / "SHA256SUMS", "mirrors": mirrors}
    for m in mirrors.values():
        m.close()


def run(env, *mirror_urls, arg="mnist"):
    e = dict(os.environ,
             BNTRAIN_DATA_ROOT=str(env["root"]),
             BNTRAIN_SHA256SUMS=str(env["sums"]),
             BNTRAIN_MNIST_MIRRORS=" ".join(mirror_urls))
    return subprocess.run([str(SCRIPT), arg], env=e, capture_output=True, text=True, timeout=120)


def test_downloads_and_verifies(env):
    r = run(env, env["mirrors"]["good"].url)
    assert r.returncode == 0, r.stderr
    for name, data in idx_files().items():
        assert (env["root"] / "mnist" / name).read_bytes() == data
    assert "MNIST ready" in r.stderr


def test_falls_through_missing_and_corrupt_mirrors(env):
    m = env["mirrors"]
    r = run(env, m["empty"].url, m["bad"].url, m["good"].url)
    assert r.returncode == 0, r.stderr
    assert "failed its SHA-256 check" in r.stderr
    assert len(m["empty"].requests) == 4 and len(m["bad"].requests) == 4 and len(m["good"].requests) == 4
    # No temporary or corrupt file is left behind.
    assert sorted(p.name for p in (env["root"] / "mnist").iterdir()) == sorted(FILES)


def test_all_mirrors_failing_says_what_to_do(env):
    m = env["mirrors"]
    r = run(env, m["empty"].url, m["bad"].url)
    assert r.returncode == 1
    msg = r.stderr.strip().splitlines()[-1]
    assert "could not download train-images-idx3-ubyte.gz from any mirror" in msg
    assert "checksum mismatch" in msg and "unreachable" in msg
    assert "Scripts/data fashion-mnist" in msg and "BNTRAIN_MNIST_MIRRORS" in msg
    assert not (env["root"] / "mnist" / FILES[0]).exists(), "a bad download never takes the real name"


def test_verified_files_are_not_downloaded_again(env):
    m = env["mirrors"]["good"]
    assert run(env, m.url).returncode == 0
    m.requests.clear()
    r = run(env, m.url)
    assert r.returncode == 0 and m.requests == []
    assert "already present and verified" in r.stderr


def test_a_corrupted_local_file_is_replaced(env):
    m = env["mirrors"]["good"]
    assert run(env, m.url).returncode == 0
    (env["root"] / "mnist" / FILES[1]).write_bytes(b"garbage")
    r = run(env, m.url)
    assert r.returncode == 0, r.stderr
    assert (env["root"] / "mnist" / FILES[1]).read_bytes() == idx_files()[FILES[1]]


def test_unreachable_host_fails_fast(env):
    # A closed loopback port: connection refused at once, no hang.
    r = run(env, "http://127.0.0.1:9")
    assert r.returncode == 1 and "unreachable" in r.stderr


def test_usage(env):
    r = run(env, arg="cifar")
    assert r.returncode == 64 and "usage" in r.stderr
