from __future__ import annotations

from pathlib import Path

import pytest

from trainer.smoke import TINY_SETS as _TINY
from trainer.smoke import write_dataset

# The smoke run's tiny model, as --set arguments.
TINY_SETS = [f"{key}={value}" for key, value in _TINY.items()]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("tiny"))
