"""Shared pytest fixtures: repository root on sys.path, the optional ../shared reference folder."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"


@pytest.fixture
def reference_dir() -> Path:
    """`../shared/reference`; the test is skipped when it is absent (e.g. outside this workplace)."""
    if not REFERENCE.is_dir():
        pytest.skip("../shared/reference is not available")
    return REFERENCE


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
