"""Identity continuity (pure): a mapped group reads with the ids, names and descriptions old clients
knew before the mapping, so their recorded state (Terraform's above all) sees no difference.

`shim discover` records, in the group's mapping entry (`legacy:`), what the legacy endpoint showed:
the group's name and description, and for each legacy pair the SDRS pair on the same production disk
with the pair's own legacy id, name and description (`PairIdentity`). The rules read from it:
- a pair with a correspondence shows its legacy id, name and description; the group's
  `replication_ids` list those legacy ids. A pair SDRS holds without one (created in SDRS after the
  mapping) shows its SDRS id, name and description;
- a legacy pair id names its SDRS pair everywhere a client may send it (`GET`/`DELETE` of the pair,
  `remove_replication_ids`, the extend action): `sdrs_pair_id`;
- the group's name is the recorded legacy name until the group is renamed through the shim, then SDRS's
  (the rename went to SDRS). The recorded name is the shim's data, never sent to SDRS, so a legacy name
  SDRS would refuse (spaces, over 64 characters) reads back unchanged; an update naming the name the
  group reads as already is no change (`renames`);
- the group's description: the one written through the shim, else the recorded one, else SDRS's.
An entry without `legacy:` (mapped by hand, or before discovery recorded it) shows SDRS's identity.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from shim.translate.legacy import id_key


@dataclass(frozen=True)
class PairIdentity:
    """One legacy pair and the SDRS pair on the same production disk (ids canonical)."""

    legacy_id: str
    sdrs_id: str
    name: str | None = None
    description: str | None = None
    volume_id: str | None = None  # the production disk that matched them


@dataclass(frozen=True)
class GroupIdentity:
    """The group as old clients knew it (the mapping entry's `legacy:`)."""

    name: str | None = None
    description: str | None = None
    pairs: tuple[PairIdentity, ...] = ()
    # id_key of each pair's SDRS id / legacy id -> the pair (built once, from `pairs`)
    _by_sdrs: dict[str, PairIdentity] = field(init=False, repr=False, compare=False)
    _by_legacy: dict[str, PairIdentity] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_sdrs", {id_key(pair.sdrs_id): pair for pair in self.pairs})
        object.__setattr__(self, "_by_legacy", {id_key(pair.legacy_id): pair for pair in self.pairs})

    def by_sdrs_id(self, sdrs_id: str) -> PairIdentity | None:
        return self._by_sdrs.get(id_key(sdrs_id))

    def by_legacy_id(self, legacy_id: str) -> PairIdentity | None:
        return self._by_legacy.get(id_key(legacy_id))


def shown_pair_id(identity: GroupIdentity | None, sdrs_id: str) -> str:
    """The id a client sees for an SDRS pair: its legacy id when it has one, else its SDRS id."""
    found = identity.by_sdrs_id(sdrs_id) if identity is not None else None
    return found.legacy_id if found is not None else sdrs_id


def shown_pair_ids(identity: GroupIdentity | None, sdrs_ids: Iterable[str]) -> list[str]:
    return [shown_pair_id(identity, sdrs_id) for sdrs_id in sdrs_ids]


def sdrs_pair_id(identity: GroupIdentity | None, pair_id: str) -> str:
    """The SDRS pair a client's pair id names: a recorded legacy id's SDRS pair, else the id itself."""
    found = identity.by_legacy_id(pair_id) if identity is not None else None
    return found.sdrs_id if found is not None else pair_id


def shown_pair_text(identity: GroupIdentity | None, sdrs_id: str, sdrs_name: str | None,
                    sdrs_description: str | None) -> tuple[str | None, str | None]:
    """(name, description) of a pair: the recorded legacy ones when it has a correspondence."""
    found = identity.by_sdrs_id(sdrs_id) if identity is not None else None
    return (found.name, found.description) if found is not None else (sdrs_name, sdrs_description)


def shown_group_name(identity: GroupIdentity | None, sdrs_name: str | None, renamed: bool) -> str | None:
    """The recorded legacy name until a rename through the shim (which went to SDRS), then SDRS's."""
    if identity is None or renamed:
        return sdrs_name
    return identity.name


def shown_group_description(identity: GroupIdentity | None, sdrs_description: str | None,
                            written: tuple[bool, str | None]) -> str | None:
    """The description written through the shim (`written`: (known, value) from the state store),
    else the recorded legacy one, else SDRS's."""
    known, value = written
    if known:
        return value
    return identity.description if identity is not None else sdrs_description


def renames(requested: str | None, shown: str | None) -> bool:
    """Whether an update's `name` changes the group: the name it reads as now is no change (a client
    sending its unchanged state back must not get a 400 for a legacy name SDRS would refuse)."""
    return requested is not None and requested != shown
