"""Runnable companion of docs/choosing-a-rule-and-a-reference.md.

1. Rescale and RevealCancel differ on min(i1, i2) = i1 - relu(i1 - i2).
2. The reference changes the answer: relu(x1 + x2 - 1) at (1, 1) against (0, 0) and (1, 0).

Run:  python examples/choosing_rule_and_reference.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deltalift import DeepLift


class Min(nn.Module):
    """min(i1, i2) written as i1 - relu(i1 - i2), with i1 - i2 a dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.difference = nn.Linear(2, 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.difference.weight.copy_(torch.tensor([[1.0, -1.0]], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] - F.relu(self.difference(x))


class BothNeeded(nn.Module):
    """relu(x1 + x2 - 1): the output is on only when both inputs are."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x.sum(1, keepdim=True) - 1)


def rules_example() -> dict[str, list[float]]:
    model = Min().eval()
    x = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    return {rule: DeepLift(model, rule=rule).attribute(x).flatten().tolist() for rule in ("rescale", "reveal_cancel")}


def reference_example() -> dict[str, list[float]]:
    model = BothNeeded().eval()
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    references = {
        "(0, 0)": torch.zeros(1, 2, dtype=torch.float64),
        "(1, 0)": torch.tensor([[1.0, 0.0]], dtype=torch.float64),
    }
    return {name: DeepLift(model).attribute(x, baselines=ref).flatten().tolist() for name, ref in references.items()}


def main() -> None:
    print("min(i1, i2) at (3, 1), reference (0, 0):")
    for rule, values in rules_example().items():
        print(f"  {rule:<14} {[round(v, 3) for v in values]}")
    print("\nrelu(x1 + x2 - 1) at (1, 1) against two references:")
    for name, values in reference_example().items():
        print(f"  reference {name:<7} {[round(v, 3) for v in values]}")


if __name__ == "__main__":
    main()
