"""A helper thread that lives exactly as long as a ``with`` block (progress ticks, watchdogs)."""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def beside(loop: Callable[[threading.Event], None], name: str) -> Iterator[threading.Event]:
    """Run ``loop(done)`` on a daemon thread during the block; ``done`` is set and the thread joined at its end."""
    done = threading.Event()
    thread = threading.Thread(target=loop, args=(done,), name=name, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        done.set()
        thread.join()
