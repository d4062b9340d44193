"""ONNX import: lipsdp.io_onnx.load_onnx against lipsdp.from_torch on the module the ONNX file was
exported from (torch.onnx.export, dynamo=False).  Prints the wall time of each route and the
largest difference between their affine matrices.

    .venv/bin/python benchmarks/onnx_import.py

Results: benchmarks/results-onnx.md.
"""

import time
import warnings

import numpy as np
import torch

import lipsdp
from lipsdp.io_onnx import load_onnx

nn = torch.nn


def models():
    torch.manual_seed(0)
    yield "MLP 784-100-100-10", nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100),
                                              nn.ReLU(), nn.Linear(100, 10)), (1, 28, 28)
    yield "CNN 1x28x28 conv16(4,s2,p1)-relu-conv32(4,s2,p1)-relu-fc100-relu-fc10", nn.Sequential(
        nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10)), (1, 28, 28)


def main():
    warnings.simplefilter("ignore")
    for name, module, shape in models():
        module.eval()
        torch.onnx.export(module, (torch.randn((1,) + shape),), "/tmp/lipsdp-bench.onnx", dynamo=False)
        t = time.perf_counter()
        a = load_onnx("/tmp/lipsdp-bench.onnx")
        t_onnx = time.perf_counter() - t
        t = time.perf_counter()
        b = lipsdp.from_torch(module, input_shape=shape)
        t_torch = time.perf_counter() - t
        diff = max(np.abs(x.weight - y.weight).max() for x, y in zip(a.affines, b.affines))
        print(f"{name}: load_onnx {t_onnx:.3f} s, from_torch {t_torch:.3f} s, "
              f"max |W_onnx - W_torch| = {diff:.1e}, dims {a.dims}")


if __name__ == "__main__":
    main()
