"""Placeholder until the CUDA kernel lands: reports the extension as unavailable."""
from __future__ import annotations


def available() -> bool:
    return False
