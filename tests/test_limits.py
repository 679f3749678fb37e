"""service/limits.py: stream slots (the server-level behaviour is in tests/test_server.py)."""
from __future__ import annotations

import pytest

from service.errors import AtCapacity
from service.limits import Admission


def test_a_kept_slot_outlives_its_handler_until_released_once():
    """WriteWatchdog keeps the slot of a call that lingers in gRPC after its handler ended, so
    max_streams still bounds live calls; its release may run twice (abort done, give-up timer)."""
    admission = Admission(max_streams=1)
    admission.ready = True
    with admission.slot() as slot:
        release = slot.keep()
    assert admission.active == 1
    with pytest.raises(AtCapacity):
        with admission.slot():
            pass
    release()
    release()
    assert admission.active == 0
    with admission.slot():
        assert admission.active == 1
    assert admission.active == 0
