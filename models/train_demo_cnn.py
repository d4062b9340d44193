"""Train the small digits CNN shipped as ``lipsdp/data/demo_digits_cnn.npz`` (issue 16 benchmarks).

Conv2d(1, 8, 3, stride 2, padding 1) ReLU, Flatten (8·4·4 = 128), Linear(128, 32) ReLU,
Linear(32, 10) on scikit-learn's bundled 8x8 digits (inputs pixel / 16, shape (1, 8, 8)), the
same stratified 75/25 split and training recipe as :mod:`lipsdp.models.train_demo`.  Usage::

    python -m lipsdp.models.train_demo_cnn --out lipsdp/data/demo_digits_cnn.npz

The file holds the state-dict arrays (``conv.weight``, ``conv.bias``, ``fc1.weight``, ...) and
``test_accuracy``; :func:`build` makes the module, :func:`load_demo_cnn` the module with the
shipped weights (export it with ``lipsdp.from_torch(module, input_shape=(1, 8, 8))``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SHIPPED = Path(__file__).resolve().parent.parent / "lipsdp" / "data" / "demo_digits_cnn.npz"


def build():
    import torch

    nn = torch.nn
    model = nn.Sequential()
    for name, mod in (("conv", nn.Conv2d(1, 8, 3, 2, 1)), ("r1", nn.ReLU()), ("flat", nn.Flatten()),
                      ("fc1", nn.Linear(128, 32)), ("r2", nn.ReLU()), ("fc2", nn.Linear(32, 10))):
        model.add_module(name, mod)
    return model.double()


def load_demo_cnn(path=None):
    """The CNN with the shipped weights (float64, eval mode)."""
    import torch

    path = Path(path) if path else SHIPPED
    if not path.exists():  # installed package: next to lipsdp/data
        from importlib import resources

        path = Path(str(resources.files("lipsdp") / "data" / "demo_digits_cnn.npz"))
    with np.load(path, allow_pickle=False) as d:
        state = {k: torch.from_numpy(d[k]) for k in d.files if k != "test_accuracy"}
    model = build()
    model.load_state_dict(state)
    return model.eval()


def train(seed: int = 0, epochs: int = 60):
    """(module, test accuracy), by :func:`lipsdp.models.train_demo.fit`'s recipe."""
    from .train_demo import fit

    return fit(build, seed, epochs, input_shape=(1, 8, 8))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(SHIPPED), help="output .npz path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)
    model, acc = train(args.seed, args.epochs)
    print(f"test accuracy: {acc:.4f}")
    arrays = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    arrays["test_accuracy"] = np.array(acc)
    np.savez_compressed(args.out, **arrays)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
