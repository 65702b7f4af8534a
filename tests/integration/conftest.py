"""Fixtures of the integration tests: `front`, each HTTP/1.1 front of the server in turn."""

from __future__ import annotations

import pytest

from tests.helpers.h11kit import FRONTS


@pytest.fixture(params=list(FRONTS))
def front(request: pytest.FixtureRequest) -> str:
    """A test taking `front` runs against both HTTP/1.1 fronts (h11, httptools): same answers."""
    return str(request.param)
