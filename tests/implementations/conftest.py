import pytest

from tests.implementations.shared import fresh_seed, reproduce


@pytest.fixture
def seed() -> int:
    """A fresh random seed per test (printed, so a failure's captured output shows it);
    FLASHSUITE_TEST_SEED=<n> pins it to reproduce a failure."""
    s = fresh_seed()
    print(reproduce(s))
    return s
