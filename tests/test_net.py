"""net in one process against the real FaultServer: what the end-to-end tests cannot reach from outside."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bulkdl.worker import net

MiB = 1024**2


@pytest.fixture
def pools() -> Iterator[None]:
    net.start(2)
    yield
    net.stop()
