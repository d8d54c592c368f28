"""The seed tutorials' hand-written model classes, as benchmark baselines.

``cnnc bench`` times these next to the compiled spec of the same network, so the table shows
what a tutorial's own class costs. They are the tutorials' code with one fix: seed 001's
``forward`` applies ``conv1`` twice, which cannot run (6 channels into a 1-channel conv); here
the second call is ``conv2``, as the tutorial's text intends.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Seed000CNN(nn.Module):
    """Seed 000: two convolutions and two fully-connected layers for CIFAR-10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=16, kernel_size=3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(in_channels=16, out_channels=32, kernel_size=3, stride=1, padding=1)
        self.fc1 = nn.Linear(32 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, 10)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = x.view(-1, 32 * 8 * 8)
        x = self.relu(self.fc1(x))
        out: torch.Tensor = self.fc2(x)
        return out


class Seed001Net(nn.Module):
    """Seed 001: LeNet on 1x32x32 (with conv2 in forward, where the tutorial repeats conv1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        out: torch.Tensor = self.fc3(x)
        return out


class Seed002Xigua(nn.Module):
    """Seed 002: the Sequential CIFAR-10 network."""

    def __init__(self) -> None:
        super().__init__()
        self.model1 = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(1024, 64),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model1(x)  # type: ignore[no-any-return]


class Seed003MLP(nn.Module):
    """Seed 003: the MLP with 5 inputs, 3 hidden units and 1 output."""

    def __init__(self, input_size: int = 5, hidden_size: int = 3, output_size: int = 1) -> None:
        super().__init__()
        self.hidden = nn.Linear(input_size, hidden_size)
        self.out = nn.Linear(hidden_size, output_size)
        self.ReLU = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.ReLU(self.hidden(x))
        return self.ReLU(self.out(hidden))  # type: ignore[no-any-return]


class Seed004CNN(nn.Module):
    """Seed 004: LeNet-5 for CIFAR-10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        out: torch.Tensor = self.fc3(x)
        return out


# Spec name -> the tutorial class it reproduces.
BASELINES: dict[str, Callable[[], nn.Module]] = {
    "lenet5": Seed004CNN,
    "seed000_cnn": Seed000CNN,
    "seed001_lenet": Seed001Net,
    "seed002_cifar": Seed002Xigua,
    "seed003_mlp": Seed003MLP,
}
