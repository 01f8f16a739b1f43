#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus (valid and broken files) into Tests/FuzzCorpusTests/Corpus.

    python3 Scripts/fuzz-seeds.py

idx/: IDX image and label files, raw and gzipped, valid and broken (wrong magic, truncated,
trailing bytes, absurd sizes, cut gzip, bad CRC, HTML). checkpoint/: safetensors files, valid
(with and without BN) and broken (truncated, bad header length, bad JSON, wrong shapes,
overlapping offsets). Deterministic: the same files every run.
"""
import gzip
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parents[1] / "Tests" / "FuzzCorpusTests" / "Corpus"


def idx(magic, dims, data):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def gz(b):
    return gzip.compress(b, mtime=0)


def safetensors(tensors, metadata=None, mangle=None):
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, raw) in sorted(tensors.items()):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    if mangle:
        mangle(header)
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def f32(n, v=0.5):
    return ("F32", None, struct.pack("<%df" % n, *([v] * n)))


def net(inputs=4, hidden=3, classes=2, bn=True):
    t = {}
    for name, shape in [("fc1.weight", [hidden, inputs]), ("fc1.bias", [hidden]), ("fc2.weight", [classes, hidden]), ("fc2.bias", [classes])]:
        n = 1
        for d in shape:
            n *= d
        t[name] = ("F32", shape, struct.pack("<%df" % n, *([0.1] * n)))
    if bn:
        for name in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
            t[name] = ("F32", [hidden], struct.pack("<%df" % hidden, *([1.0] * hidden)))
        t["bn.num_batches_tracked"] = ("I64", [], struct.pack("<q", 5))
    return t


def main():
    images = idx(2051, [3, 2, 2], range(12))
    labels = idx(2049, [3], [0, 1, 2])
    seeds = {
        "images.idx": images, "labels.idx": labels, "images.gz": gz(images), "labels.gz": gz(labels),
        "wrong-magic.idx": idx(2049, [3, 2, 2], range(12)), "truncated.idx": images[:-3],
        "trailing.idx": labels + b"\x00", "absurd.idx": idx(2051, [60000, 10000, 10000], [0] * 8),
        "zero.idx": idx(2051, [0, 28, 28], []), "float-type.idx": struct.pack(">I", 0x0D03) + struct.pack(">III", 1, 1, 1) + b"\0\0\0\0",
        "cut.gz": gz(images)[:-10], "bad-crc.gz": gz(images)[:-8] + b"\xde\xad\xbe\xef" + gz(images)[-4:],
        "html.gz": b"<!DOCTYPE html><html><body>404</body></html>", "empty": b"",
    }
    for name, data in seeds.items():
        (ROOT / "idx" / name).write_bytes(data)

    def bad_shape(h):
        h["fc1.weight"]["shape"] = [7, 7]

    def overlap(h):
        h["fc1.bias"]["data_offsets"] = h["fc1.weight"]["data_offsets"]

    ok = safetensors(net(), {"format": "pt", "bntrain.bn_eps": "1e-05"})
    ck = {
        "net.safetensors": ok, "net-nobn.safetensors": safetensors(net(bn=False)),
        "truncated.safetensors": ok[:-7], "header-len.safetensors": struct.pack("<Q", 1 << 40) + ok[8:],
        "not-json.safetensors": struct.pack("<Q", 8) + b"{{{{{{{{",
        "bad-shape.safetensors": safetensors(net(), mangle=bad_shape),
        "overlap.safetensors": safetensors(net(), mangle=overlap),
        "f64.safetensors": safetensors({k: ("F64", s, b"".join(struct.pack("<d", x) for x in struct.unpack("<%df" % (len(r) // 4), r))) if d == "F32" else (d, s, r)
                                        for k, (d, s, r) in net().items()}),
        "empty": b"",
    }
    for name, data in ck.items():
        (ROOT / "checkpoint" / name).write_bytes(data)
    print(f"wrote {len(seeds)} idx and {len(ck)} checkpoint seeds under {ROOT}")


if __name__ == "__main__":
    main()
