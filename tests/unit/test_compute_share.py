"""The compute-share ledger, driven by a simulated GPU: sessions that saturate it get
their ORION_RATIO, idle capacity is lent as throttle_level says, overruns are paid."""
from __future__ import annotations

import pytest

from orion_server.compute_share import QUANTUM_S, ShareLedger


def simulate(ledger: ShareLedger, shares: dict[str, float], seconds: float,
             drain_s: float = 0.0005, busy: set[str] | None = None) -> dict[str, float]:
    """Sessions that always have work (those in `busy`, default all) run as workers do:
    a turn of one quantum, then renew; on a refusal they drain (the next session starts
    meanwhile), report the drain and ask again. GPU time per session / elapsed."""
    busy = set(shares) if busy is None else busy
    now, used = 0.0, {s: 0.0 for s in shares}
    for session in busy:
        ledger.want(session, shares[session], now)
    session = None
    while now < seconds:
        if session is None:
            session = ledger.next_turn(now)
            if session is None:
                now = ledger.wake_at(now)
                assert now is not None
                continue
        now += ledger.quantum
        used[session] += ledger.quantum
        if not ledger.renew(session, ledger.quantum, now):
            ledger.done(session, drain_s, now + drain_s)   # its drain overlaps the next
            used[session] += drain_s
            ledger.want(session, shares[session], now + drain_s)
            session = None
    return {s: u / now for s, u in used.items()}


def test_a_renewal_goes_on_only_while_nobody_waits():
    ledger = ShareLedger(throttle_level=100)
    ledger.want("a", 0.5, 0.0)
    assert ledger.next_turn(0.0) == "a"
    assert ledger.renew("a", QUANTUM_S, QUANTUM_S)            # alone: goes on
    ledger.want("b", 0.5, QUANTUM_S)
    assert not ledger.renew("a", QUANTUM_S, 2 * QUANTUM_S)    # b waits: a yields
    assert ledger.next_turn(2 * QUANTUM_S) == "b"


@pytest.mark.parametrize("shares", [{"a": 0.3, "b": 0.7}, {"a": 0.25, "b": 0.25, "c": 0.25,
                                                           "d": 0.25},
                                    {"a": 0.1, "b": 0.9}])
def test_saturating_sessions_get_their_shares(shares):
    got = simulate(ShareLedger(throttle_level=100), shares, seconds=10)
    for session, share in shares.items():
        assert got[session] == pytest.approx(share, abs=0.01)


@pytest.mark.parametrize("level,expected", [(0, 0.5), (50, 0.75), (100, 1.0)])
def test_a_session_alone_borrows_what_throttle_level_allows(level, expected):
    got = simulate(ShareLedger(throttle_level=level), {"a": 0.5}, seconds=10)
    assert got["a"] == pytest.approx(expected, abs=0.01)


def test_a_quiet_neighbours_share_is_lent_only_while_it_is_quiet():
    ledger = ShareLedger(throttle_level=100)
    got = simulate(ledger, {"a": 0.3, "b": 0.7}, seconds=5, busy={"a"})
    assert got["a"] == pytest.approx(1.0, abs=0.01)
    strict = simulate(ShareLedger(throttle_level=0), {"a": 0.3, "b": 0.7}, seconds=5,
                      busy={"a"})
    assert strict["a"] == pytest.approx(0.3, abs=0.01)


def test_an_overrun_is_paid_back_before_the_next_turn():
    ledger = ShareLedger(throttle_level=0)
    ledger.want("a", 0.5, 0.0)
    assert ledger.next_turn(0.0) == "a"
    ledger.done("a", 1.0, 1.0)          # one turn that took a whole second
    ledger.want("a", 0.5, 1.0)
    assert ledger.next_turn(1.0) is None
    # a full bucket (two quanta) paid part of it; the rest refills at 0.5 s per second
    debt = 1.0 - 2 * QUANTUM_S
    assert ledger.wake_at(1.0) == pytest.approx(1.0 + debt / 0.5, abs=0.001)


def test_one_turn_at_a_time_and_leaving_hands_it_back():
    ledger = ShareLedger(throttle_level=100)
    ledger.want("a", 0.5, 0.0)
    ledger.want("b", 0.5, 0.0)
    first = ledger.next_turn(0.0)
    assert first in ("a", "b") and ledger.next_turn(0.0) is None
    ledger.leave(first)
    assert ledger.next_turn(0.001) == ({"a", "b"} - {first}).pop()


@pytest.mark.parametrize("bad", [0, -0.1, 1.5])
def test_bad_shares_and_levels_are_refused(bad):
    with pytest.raises(ValueError):
        ShareLedger(throttle_level=100).want("a", bad, 0.0)
    with pytest.raises(ValueError):
        ShareLedger(throttle_level=101)
