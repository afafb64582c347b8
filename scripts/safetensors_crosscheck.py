"""Cross-checks TwoBP's safetensors code against the reference Python package.

    python3 safetensors_crosscheck.py write DIR    # reference files for Swift to read
    python3 safetensors_crosscheck.py verify DIR   # check the files Swift wrote

The XCTest SafeTensorsCrossCheckTests runs both around its own reads and writes.
The expected values are formulas shared with that test.
"""
import json
import os
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file


def ramp(shape, start, step):
    n = int(np.prod(shape)) if shape else 1
    return (start + step * np.arange(n, dtype=np.float64)).astype(np.float32).reshape(shape)


# What Swift writes (see SafeTensorsCrossCheckTests.swiftTensors and .swiftBuffers).
SWIFT_TENSORS = {
    "model.layers.0.self_attn.q_proj.weight": ramp([4, 3], 0.0, 0.25),
    "model.norm.weight": ramp([3], 1.0, 0.25),
    "lm_head.weight": ramp([5, 3], -2.0, 0.5),
}
SWIFT_BUFFERS = {
    "bn1.running_var": ramp([2], 1.0, 0.5),
    "bn1.num_batches_tracked": np.array(2**40 + 7, dtype=np.int64),
}


def write(folder):
    os.makedirs(folder, exist_ok=True)
    tensors = {
        "a": ramp([3, 4], -3.0, 0.5),
        "h": np.array([1.0, -2.0, 0.5, 65504.0, 2.0**-24], dtype=np.float16),
        "d": (np.arange(4, dtype=np.float64) / 10).reshape(2, 2),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "counter": np.array(-3, dtype=np.int64),
    }
    save_file(tensors, os.path.join(folder, "python.safetensors"), metadata={"format": "pt", "writer": "python"})
    # A Hugging Face style sharded model.
    sharded = os.path.join(folder, "python-sharded")
    os.makedirs(sharded, exist_ok=True)
    shards = [{"x.weight": ramp([2, 2], 0.0, 1.0)}, {"y.weight": ramp([3], 10.0, -1.0), "z.bias": ramp([1], 7.0, 0.0)}]
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(sharded, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    with open(os.path.join(sharded, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 4 * 8}, "weight_map": weight_map}, f, indent=2)
    print(f"wrote reference files into {folder}")


def verify(folder):
    failures = []

    def check(name, got, want):
        if got.shape != want.shape or got.dtype != want.dtype or not np.array_equal(got, want):
            failures.append(f"{name}: got {got.dtype}{list(got.shape)} {got.ravel()[:6]}, want {want.dtype}{list(want.shape)} {want.ravel()[:6]}")

    path = os.path.join(folder, "swift.safetensors")
    loaded = load_file(path)
    if set(loaded) != set(SWIFT_TENSORS) | set(SWIFT_BUFFERS):
        failures.append(f"swift.safetensors names {sorted(loaded)}")
    for name, want in {**SWIFT_TENSORS, **SWIFT_BUFFERS}.items():
        if name in loaded:
            check(name, loaded[name], want)
    with safe_open(path, framework="numpy") as f:
        if f.metadata() != {"format": "pt"}:
            failures.append(f"metadata {f.metadata()}")

    sharded = os.path.join(folder, "swift-sharded")
    with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
        index = json.load(f)
    if index["metadata"]["total_size"] != sum(t.nbytes for t in SWIFT_TENSORS.values()):
        failures.append(f"total_size {index['metadata']['total_size']}")
    if set(index["weight_map"]) != set(SWIFT_TENSORS):
        failures.append(f"weight_map names {sorted(index['weight_map'])}")
    for name, file in index["weight_map"].items():
        check(f"sharded {name}", load_file(os.path.join(sharded, file))[name], SWIFT_TENSORS[name])

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"Python safetensors {__import__('safetensors').__version__} reads Swift's files: OK")


if __name__ == "__main__":
    {"write": write, "verify": verify}[sys.argv[1]](sys.argv[2])
