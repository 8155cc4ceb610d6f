"""Calling std_srvs/Trigger robustly from a thread while an executor spins elsewhere.

A service can be 'available' (request topic matched) before the client's response reader is
matched, and the first reply is then lost. So a call that gets no answer in time is repeated,
a bounded number of times. Trigger services here are idempotent (mode switches)."""

from __future__ import annotations

import time


def call_trigger(client, timeout: float = 3.0, attempts: int = 4):
    """Call a Trigger client; returns the response, raises RuntimeError naming the service."""
    from std_srvs.srv import Trigger

    if not client.wait_for_service(timeout_sec=10.0):
        raise RuntimeError(f"service {client.srv_name} not available")
    for _ in range(attempts):
        fut = client.call_async(Trigger.Request())
        end = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.01)
        if fut.done() and fut.result() is not None:
            return fut.result()
        client.remove_pending_request(fut)
    raise RuntimeError(f"service {client.srv_name}: no answer after {attempts} attempts")
