"""Train the small demo network shipped as ``lipsdp/data/demo_digits.npz``.

A ReLU MLP 64-32-32-10 on scikit-learn's bundled 8x8 digits (``load_digits``: no download),
inputs scaled to [0, 1] (pixel / 16), a stratified 75/25 split, Adam, fixed seeds; a few
seconds on a CPU.  Usage::

    python -m lipsdp.models.train_demo --out lipsdp/data/demo_digits.npz

The file holds ``W0, W1, W2`` (torch orientation (out, in)), ``b0, b1, b2``, and metadata
``activation`` ("relu"), ``description``, ``test_accuracy`` -- the .npz format that
:func:`lipsdp.io.load` reads.  The network expects inputs ``x = pixels / 16``.
"""

from __future__ import annotations

import argparse

import numpy as np


def fit(build, seed: int = 0, epochs: int = 60, input_shape=(64,)):
    """The shared recipe: digits / 16, stratified 75/25 split, ``build()`` (after seeding torch),
    Adam (lr 3e-3, weight decay 1e-4), batches of 64.  Returns (trained module in eval mode,
    test accuracy)."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # tiny model: threads only add overhead (and keep runs reproducible)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    Xtr = torch.tensor(Xtr, dtype=torch.float64).reshape(-1, *input_shape)
    Xte = torch.tensor(Xte, dtype=torch.float64).reshape(-1, *input_shape)
    ytr, yte = torch.tensor(ytr), torch.tensor(yte)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(Xtr), generator=gen)
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(Xtr[idx]), ytr[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(Xte).argmax(1) == yte).double().mean())
    return model, acc


def train(seed: int = 0, epochs: int = 60):
    """Return (weights, biases, test_accuracy) of the trained MLP (float64 numpy)."""
    import torch

    def build():
        return torch.nn.Sequential(
            torch.nn.Linear(64, 32), torch.nn.ReLU(),
            torch.nn.Linear(32, 32), torch.nn.ReLU(),
            torch.nn.Linear(32, 10),
        ).double()

    model, acc = fit(build, seed, epochs)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    weights = [m.weight.detach().numpy().copy() for m in linears]
    biases = [m.bias.detach().numpy().copy() for m in linears]
    return weights, biases, acc


def save(path, weights, biases, acc, seed):
    arrays = {f"W{k}": w for k, w in enumerate(weights)}
    arrays.update({f"b{k}": b for k, b in enumerate(biases)})
    arrays["activation"] = np.array("relu")
    arrays["description"] = np.array(
        "ReLU MLP 64-32-32-10 trained on sklearn load_digits (inputs pixel/16, stratified 75/25 split, "
        f"seed {seed}) by lipsdp/models/train_demo.py"
    )
    arrays["test_accuracy"] = np.array(acc)
    np.savez_compressed(path, **arrays)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="lipsdp/data/demo_digits.npz", help="output .npz path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)
    weights, biases, acc = train(args.seed, args.epochs)
    print(f"test accuracy: {acc:.4f}")
    save(args.out, weights, biases, acc, args.seed)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
