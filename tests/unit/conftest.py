"""Fixtures shared by the unit tests."""
from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import zmq

from orion_controller.pool import Pool
from orion_controller.service import Service


@pytest.fixture
def served() -> Iterator[tuple[zmq.Context, str]]:
    """The service on an inproc:// ROUTER in a thread; yields the context and address."""
    context = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    socket.bind("inproc://controller")
    stop = threading.Event()
    thread = threading.Thread(target=Service(Pool()).serve, args=(socket, stop.is_set))
    thread.start()
    try:
        yield context, "inproc://controller"
    finally:
        stop.set()
        thread.join(5)
        socket.close(linger=0)
        context.term()
