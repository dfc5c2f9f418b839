"""The reference table alone."""

from __future__ import annotations

import pytest

from shoal.scheduler.refs import DRIVER, ReferenceTable

pytestmark = pytest.mark.timeout(30)

A, B, C = b"a" * 20, b"b" * 20, b"c" * 20


def collected(t: ReferenceTable) -> set:
    out = set()
    while t.candidates:
        for oid in t.take_candidates():
            if t.collect(oid):
                out.add(oid)
    return out


def test_holders_count_once_per_process():
    t = ReferenceTable()
    t.add_holder(DRIVER, A)
    t.add_holder(DRIVER, A)
    t.add_holder(1, A)
    t.check()
    t.remove_holder(DRIVER, A)
    assert collected(t) == set()
    t.remove_holder(1, A)
    assert collected(t) == {A}
    t.check()


def test_task_arguments_and_containers():
    t = ReferenceTable()
    t.add_holder(DRIVER, A)
    t.hold_for_task(7, [A])
    t.add_holder(DRIVER, C)
    t.add_contained(C, [B])
    t.remove_holder(DRIVER, A)
    assert collected(t) == set()  # the task still holds A
    t.release_task(7)
    assert collected(t) == {A}
    t.remove_holder(DRIVER, C)
    assert collected(t) == {C, B}  # B went with its container
    t.check()


def test_a_new_reference_cancels_a_candidate():
    t = ReferenceTable()
    t.add_holder(DRIVER, A)
    t.remove_holder(DRIVER, A)
    t.add_holder(2, A)  # a message read before the deletion was confirmed
    assert collected(t) == set()
    t.check()


def test_dead_holder_releases_everything():
    t = ReferenceTable()
    for oid in (A, B):
        t.add_holder(3, oid)
    t.add_holder(DRIVER, B)
    t.holder_gone(3)
    assert collected(t) == {A}
    assert t.holds(DRIVER, B) and not t.holds(3, B)
    t.check()
