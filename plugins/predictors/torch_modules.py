"""Module classes registered under ``bulkinfer.torch_modules`` for the ``torch_module`` predictor.

This module imports torch at the top: it is loaded only when a ``torch_module`` stage builds its
model (entry points are listed from package metadata, without importing). Register your own
classes the same way in your package's pyproject.toml::

    [project.entry-points."bulkinfer.torch_modules"]
    my_net = "my_package.nets:MyNet"
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """A multilayer perceptron: ``in_features -> hidden... -> out_features``, ReLU in between."""

    def __init__(self, in_features: int, out_features: int, hidden: list[int] | None = None):
        super().__init__()
        sizes = [in_features, *(hidden or []), out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[rows, in_features]`` -> ``[rows, out_features]``."""
        return self.layers(x)
