"""Small helpers shared across the project."""

from __future__ import annotations

from typing import Any

import numpy as np


def plain_data(value: Any) -> Any:
    """Convert nested dicts/lists/tuples and numpy scalars to plain Python values.

    Constructor arguments recorded this way can be saved in checkpoints that load with
    ``torch.load(weights_only=True)`` and compared for equality after a round trip.
    """
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
