"""Example model factories for `modelplane package` (built locally, nothing downloaded).

modelplane package examples/models/mlp.py:tiny_mlp -o /tmp/tiny --name tiny
modelplane package examples/models/mlp.py:compute_mlp -o /tmp/big --name big
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


class MLP(nn.Module):
    """A ReLU multilayer perceptron; its forward argument name becomes the input name."""

    def __init__(self, widths: list[int], seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(width_in, width_out))
            if index < len(widths) - 2:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.layers(x)
        return result


def tiny_mlp() -> nn.Module:
    """16 -> 64 -> 4: so small that HTTP handling dominates serving time."""
    return MLP([16, 64, 4])


def compute_mlp() -> nn.Module:
    """512 -> 2048 -> 2048 -> 512, about 6.3M parameters: compute-bound."""
    return MLP([512, 2048, 2048, 512])


def example_inputs() -> dict[str, torch.Tensor]:
    """Example inputs for tiny_mlp (dimension 0 is the batch)."""
    return {"x": torch.randn(2, 16)}
