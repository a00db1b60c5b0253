"""Knobs of the legacy EVS stand-in. Mutable on purpose: tests may change durations between calls."""

from __future__ import annotations

from dataclasses import dataclass

# Each availability zone and the one its replicas live in. The legacy API names only the production
# AZ (`priority_station`); a failover or switchover moves it to the other AZ of its pair.
DEFAULT_AZ_PAIRS: tuple[tuple[str, str], ...] = (
    ("eu-de-01", "eu-de-02"),  # the SDRS simulator's and the demo's zones
    ("eu-west-0a", "eu-west-0b"),
    ("az2.dc2", "az3.dc3"),  # the zones of the EVS API examples
)


@dataclass
class LegacySimSettings:
    transition_seconds: float = 0.2  # creating, updating, deleting, failovering, reversing
    copy_seconds: float = 0.2  # replication_status `copying` after a sync or reprotect
    tokens: set[str] | None = None  # None: any non-empty X-Auth-Token is valid
    az_pairs: tuple[tuple[str, str], ...] = DEFAULT_AZ_PAIRS

    def __post_init__(self) -> None:
        if self.transition_seconds < 0 or self.copy_seconds < 0:
            raise ValueError("transition durations must not be negative")
        zones = [zone for pair in self.az_pairs for zone in pair]
        if len(zones) != len(set(zones)) or any(a == b for a, b in self.az_pairs):
            raise ValueError("each availability zone must belong to exactly one pair of two different zones")

    def peer_zone(self, zone: str) -> str | None:
        """The other AZ of `zone`'s pair, None for a zone this stand-in does not know."""
        for first, second in self.az_pairs:
            if zone == first:
                return second
            if zone == second:
                return first
        return None
