import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_models"
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def samples() -> Path:
    return SAMPLES
