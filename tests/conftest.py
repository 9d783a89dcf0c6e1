import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LOWBIT_DATA", str(ROOT.parent / "shared" / "data"))

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device present")


@pytest.fixture(params=[True, False], ids=["native", "lowbit"])
def native_paths(request):
    """Run a test with and without torch's native CPU casts, so lowbit's own path is checked too."""
    from lowbit.quantize import native_casts

    with native_casts(request.param):
        yield request.param
