"""Model tests run on tiny tensors: one thread each (see `single_thread`)."""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(single_thread: None) -> None:
    """Every model test runs single-threaded."""
