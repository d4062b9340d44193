"""The six GLipSDP reference networks (../shared/refdata/GLipSDP) written as ordinary PyTorch.

Each class follows the architecture that SOURCE.md gives for its state dict (the keys of the
file match the module names here).  They are written the way their authors write PyTorch —
"TensorFlow-same" padding computed from ``x.shape`` inside ``forward``, ``F.pad``, residual
blocks ``relu(f(x) + x)`` — because that is what :func:`lipsdp.models.from_torch` must follow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .refdata import REFDATA, require

GLIPSDP = REFDATA / "GLipSDP"


class SameConv2d(nn.Module):
    """Conv2d with TensorFlow "same" padding computed from the input size in ``forward``:
    out = ceil(H / s), total pad = max((out − 1)·s + k − H, 0), top/left = total // 2."""

    def __init__(self, c_in, c_out, k, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=0)

    def forward(self, x):
        h, w = x.shape[-2:]
        kh, kw = self.conv.kernel_size
        sh, sw = self.conv.stride
        pad_h = max((math.ceil(h / sh) - 1) * sh + kh - h, 0)
        pad_w = max((math.ceil(w / sw) - 1) * sw + kw - w, 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return self.conv(x)


class MNIST2C2F(nn.Module):
    """mnist_2C2F_wd.pth."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 4, stride=2, padding=1)
        self.fc1 = nn.Linear(1568, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class MNISTLeNet5(nn.Module):
    """mnist_LeNet5_wd.pth."""

    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2))
        self.layer2 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2))
        self.fc = nn.Linear(400, 120)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(x))
        x = x.reshape(x.shape[0], -1)
        x = torch.relu(self.fc(x))
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


class Versatility2C2F(nn.Module):
    """versatility_2C2F.pt: 2C2F with "same"-padded convolutions."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(SameConv2d(1, 16, 4, 2), nn.ReLU(), SameConv2d(16, 32, 4, 2), nn.ReLU())
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(1568, 100), nn.ReLU(), nn.Linear(100, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class VersatilityLeNet5ReLU(nn.Module):
    """versatility_LeNet5ReLU.pt: F.pad by 2, then a Sequential."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )

    def forward(self, x):
        return self.net(F.pad(x, (2, 2, 2, 2)))


class FCBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x):
        return F.relu(self.fc2(F.relu(self.fc1(x))) + x)


class VersatilityFCR18(nn.Module):
    """versatility_FC-R18.pt: Linear(784, 64) ReLU, 8 blocks relu(fc2(relu(fc1(x))) + x), Linear(64, 10)."""

    def __init__(self, width=64, blocks=8):
        super().__init__()
        self.input_layer = nn.Linear(784, width)
        self.blocks = nn.ModuleList(FCBlock(width) for _ in range(blocks))
        self.output_layer = nn.Linear(width, 10)

    def forward(self, x):
        x = F.relu(self.input_layer(x.flatten(1)))
        for block in self.blocks:
            x = block(x)
        return self.output_layer(x)


class ConvBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = SameConv2d(channels, channels, 3)
        self.conv2 = SameConv2d(channels, channels, 3)

    def forward(self, x):
        out = F.relu(self.conv1(x))
        out = self.conv2(out)
        return F.relu(out + x)


class VersatilityCR18(nn.Module):
    """versatility_C-R18.pt: same-padded Conv2d(1,16,k7) ReLU MaxPool2d(2), 8 conv residual blocks,
    AvgPool2d(2), flatten, Linear(784, 10)."""

    def __init__(self, channels=16, blocks=8):
        super().__init__()
        self.stem = nn.Sequential(SameConv2d(1, channels, 7), nn.ReLU(), nn.MaxPool2d(2))
        self.blocks = nn.Sequential(*(ConvBlock(channels) for _ in range(blocks)))
        self.classifier = nn.Linear(channels * 7 * 7, 10)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = F.avg_pool2d(x, 2)
        return self.classifier(torch.flatten(x, 1))


#: file -> (architecture, per-sample input shape)
NETWORKS = {
    "mnist_2C2F_wd.pth": (MNIST2C2F, (1, 28, 28)),
    "mnist_LeNet5_wd.pth": (MNISTLeNet5, (1, 28, 28)),
    "versatility_2C2F.pt": (Versatility2C2F, (1, 28, 28)),
    "versatility_LeNet5ReLU.pt": (VersatilityLeNet5ReLU, (1, 28, 28)),
    "versatility_FC-R18.pt": (VersatilityFCR18, (1, 28, 28)),
    "versatility_C-R18.pt": (VersatilityCR18, (1, 28, 28)),
}


def load(name: str) -> tuple[nn.Module, tuple]:
    """The network of refdata file ``name`` with its weights (strict load, weights_only)."""
    cls, shape = NETWORKS[name]
    model = cls()
    model.load_state_dict(torch.load(require(GLIPSDP / name), weights_only=True, map_location="cpu"))
    return model.eval(), shape
