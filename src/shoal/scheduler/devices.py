"""GPU devices as the scheduler counts them (pure; no I/O).

Besides the total amount of the "GPU" resource, the scheduler knows how much
of each device is free, so that a lease or an actor gets device indices, as
Ray does: whole devices for amounts of 1 or more, or a share of one device
for a fraction (the fullest device with room, so that fractions pack
together and whole devices stay free).
"""

from __future__ import annotations

UNIT = 10_000  #: the scheduler stores resource amounts in 1/UNIT

Grant = list  #: [(device index, units)] held by one lease or actor


class GpuDevices:
    """Free units per device; `total_units` may end in a partial device."""

    def __init__(self, total_units: int):
        self.free = [UNIT] * (total_units // UNIT) + ([total_units % UNIT] if total_units % UNIT else [])
        self.total_units = total_units

    def __bool__(self) -> bool:
        return bool(self.free)

    def choose(self, units: int) -> list[int] | None:
        """The devices a request of `units` would get now, or None."""
        free = self.free
        if units >= UNIT:
            whole = [i for i, f in enumerate(free) if f == UNIT]
            need = -(-units // UNIT)
            return whole[:need] if len(whole) >= need else None
        fits = [i for i, f in enumerate(free) if f >= units]
        return [min(fits, key=lambda i: free[i])] if fits else None

    def take(self, units: int) -> Grant:
        """Take `units` (callers check choose() first); [] for none."""
        if not units or not self.free:
            return []
        choice = self.choose(units)
        if choice is None:
            raise AssertionError(f"no GPU device has {units / UNIT:g} free")
        grant = []
        for i in choice:
            share = min(units, UNIT)
            self.free[i] -= share
            grant.append((i, share))
        return grant

    def give(self, grant: Grant) -> None:
        for i, share in grant:
            self.free[i] += share

    def check(self, held: list[Grant]) -> None:
        """Assert that free plus `held` make up every device."""
        units = sum(self.free) + sum(u for g in held for _, u in g)
        assert units == self.total_units, (units, self.free)
        assert all(0 <= f <= UNIT for f in self.free), self.free
