"""Small helpers shared across the project."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np


def plain_data(value: Any) -> Any:
    """Convert config containers, mappings, tuples, paths and numpy scalars to plain Python values.

    Constructor arguments and config sections recorded this way can be saved in checkpoints that load
    with ``torch.load(weights_only=True)``, written as JSON, and compared for equality after a round trip.
    OmegaConf containers are resolved first (interpolations filled in).
    """
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf  # Only when handed one: this module does not otherwise need omegaconf.

        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.", require_all: bool = False) -> OrderedDict:
    """Drop ``prefix`` from the keys of a state dict (DataParallel/DDP checkpoints say ``module.<key>``).

    With ``require_all`` the prefix is dropped only when every key carries it (otherwise the dict is returned
    unchanged, as a copy); without it, from each key that has it.
    """
    if require_all and not (state_dict and all(k.startswith(prefix) for k in state_dict)):
        return OrderedDict(state_dict)
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v) for k, v in state_dict.items())
