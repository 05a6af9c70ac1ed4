"""Who may submit compute work to a physical GPU next: the ledger behind ORION_RATIO.

Sessions on one GPU take turns. A turn (a *grant*) lasts one quantum; the worker
holding it submits its kernels, then asks to renew it. Nobody else waiting (and time
left in its bucket): it goes on at once, its queued work still running. Otherwise it
yields: the next session starts, and the yielding worker waits until the GPU has
finished its work (the drain) and reports that time too, so a turn that overran is
paid for.
Each session has a token bucket in seconds of GPU time, refilled at its rate:

    rate = share + throttle_level/100 * spare

where `share` is its ORION_RATIO and `spare` is the part of the GPU that no active
session claims (1 - the shares of the sessions that wanted the GPU lately). Two sessions
at 30 % and 70 % that both saturate the GPU therefore get 30 % and 70 %; a session
alone at 50 % gets 50 % with throttle_level 0 and the whole GPU with 100 (idle capacity
is lent). A session may start a turn while its bucket holds any time; the one with the
most time goes first; a bucket holds at most two quanta, so an idle session cannot
bank a long monopoly. Pure logic with an explicit clock: the service
(compute_scheduler.py) and the tests drive it.
"""
from __future__ import annotations

from dataclasses import dataclass

QUANTUM_S = 0.020     # one turn; drains and hand-overs cost well under 1 % of it
BURST_QUANTA = 2      # what an idle bucket can hold
ACTIVE_S = 0.5        # a session that wanted the GPU this recently claims its share
EPSILON_S = 1e-6      # a bucket this close to empty counts as refilled (float rounding)


@dataclass
class Account:
    share: float              # 0 < share <= 1
    tokens: float             # seconds of GPU time it may still use
    refilled: float           # when tokens were last brought up to date
    wanted: float             # when it last asked for a turn


class ShareLedger:
    """The turns of the sessions on one physical GPU."""

    def __init__(self, throttle_level: int, quantum_s: float = QUANTUM_S):
        if not 0 <= throttle_level <= 100:
            raise ValueError(f"throttle_level={throttle_level} is outside [0, 100]")
        self.lend = throttle_level / 100
        self.quantum = quantum_s
        self.accounts: dict[str, Account] = {}
        self.waiting: list[str] = []      # asked for a turn, in order of asking
        self.holder: str | None = None

    # ---- what the workers say ----
    def want(self, session: str, share: float, now: float) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share {share} is outside (0, 1]")
        self._refill(now)
        account = self.accounts.get(session)
        if account is None:
            account = self.accounts[session] = Account(share, self.quantum, now, now)
        account.share, account.wanted = share, now
        if session != self.holder and session not in self.waiting:
            self.waiting.append(session)

    def renew(self, session: str, used_s: float, now: float) -> bool:
        """The holder's quantum has passed, `used_s` since its turn began: True if it
        goes on with a new turn, False if it must yield (it is no longer the holder)."""
        self.done(session, used_s, now)
        account = self.accounts.get(session)
        if self.waiting or account is None or account.tokens <= -EPSILON_S:
            return False
        self.holder = session
        return True

    def done(self, session: str, used_s: float, now: float) -> None:
        """Charge `used_s` of the GPU to a session: the end of its turn, or the drain
        after it yielded; a holder's turn is over."""
        self._refill(now)
        account = self.accounts.get(session)
        if account is not None:
            account.tokens -= max(0.0, used_s)
            account.wanted = now
        if self.holder == session:
            self.holder = None

    def leave(self, session: str) -> None:
        self.accounts.pop(session, None)
        if session in self.waiting:
            self.waiting.remove(session)
        if self.holder == session:
            self.holder = None

    # ---- what the service asks ----
    def next_turn(self, now: float) -> str | None:
        """The session to grant a turn now (it becomes the holder), or None."""
        if self.holder is not None or not self.waiting:
            return None
        self._refill(now)
        ready = [s for s in self.waiting if self.accounts[s].tokens > -EPSILON_S]
        if not ready:
            return None
        chosen = max(ready, key=lambda s: self.accounts[s].tokens)
        self.waiting.remove(chosen)
        self.holder = chosen
        return chosen

    def wake_at(self, now: float) -> float | None:
        """When a waiting session's bucket will have time again (None: nothing to wait
        for, or a turn is running and its end will wake the service)."""
        if self.holder is not None or not self.waiting:
            return None
        self._refill(now)
        rates = self._rates(now)
        return now + min(max(0.0, -self.accounts[s].tokens) / rates[s] for s in self.waiting)

    # ---- buckets ----
    def _rates(self, now: float) -> dict[str, float]:
        active = [a.share for s, a in self.accounts.items()
                  if s == self.holder or s in self.waiting or now - a.wanted <= ACTIVE_S]
        spare = max(0.0, 1.0 - sum(active))
        return {s: a.share + self.lend * spare for s, a in self.accounts.items()}

    def _refill(self, now: float) -> None:
        rates = self._rates(now)
        cap = BURST_QUANTA * self.quantum
        for session, account in self.accounts.items():
            if now > account.refilled:
                account.tokens = min(cap, account.tokens +
                                     rates[session] * (now - account.refilled))
                account.refilled = now
