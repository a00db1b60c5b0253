"""Pure legacy EVS v2 replication state: replication pairs, consistency groups and their status machine.

No I/O and no background tasks. A timed change (a pair or group being created, updated or deleted, a
failover, a switchover, or data being copied after a sync or reprotect) records when it started and
when it ends; every read first applies the changes that have ended by the injected clock, so
statuses move on between two reads as on the real service. Stop and extend take effect at once (the
docs promise that the extend answer comes when the disks have grown).

Preconditions are the docs' (docs/evs/api-ref/apis_recommended); those no page states are marked
*inferred* where they are checked.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from shim.legacy_sim.errors import bad_request, not_found
from shim.legacy_sim.settings import LegacySimSettings

Clock = Callable[[], float]
WallClock = Callable[[float], datetime]  # a clock reading -> the naive UTC time clients are shown

GROUP_STATUSES = frozenset({
    "creating", "available", "error", "deleting", "updating", "reversing", "error_reversing",
    "failovering", "failovered", "error_failovering", "error_deleting",
})  # fmt: skip
PAIR_STATUSES = frozenset({"creating", "available", "error", "deleting", "error_deleting"})
# Worst first: a group shows the worst replication status among its pairs.
REPLICATION_STATUSES = ("error", "inactive", "copying", "active-stopped", "active")
FAULT_LEVELS = ("0", "2", "5")  # no fault; production disk not writable (failover advised); link broken
BROKEN_LINK = "5"
BUSY_GROUP_STATUSES = frozenset({"creating", "updating", "deleting", "reversing", "failovering"})
DELETABLE_STATUSES = frozenset({"available", "error"})
REPLICATION_MODEL = "hypermetro"  # the only one the API supports

DEFAULT_FAILURE_DETAIL = "37000212"  # "internal processing failure": valid for pairs and groups
PRODUCTION_DISK_IN_USE = "37100053"
DR_DISK_IN_USE = "37100054"

STOP = "os-stop-replication-consistency-group"
SYNC = "os-sync-replication-consistency-group"
FAILOVER = "os-failover-replication-consistency-group"
REVERSE = "os-reverse-replication-consistency-group"
REPROTECT = "os-reprotect-replication-consistency-group"
EXTEND = "os-extend-replication-volumes"
ACTIONS = (STOP, SYNC, FAILOVER, REVERSE, REPROTECT, EXTEND)

# The group statuses each action is accepted in. Stop and sync list no precondition, so they are
# refused only while another change runs (inferred), and sync also after a failover, where reprotect
# is the documented way back (inferred). A failed failover or switchover may be followed by a
# failover (inferred, as SDRS allows).
ACTION_STATUSES: dict[str, frozenset[str]] = {
    STOP: GROUP_STATUSES - BUSY_GROUP_STATUSES,
    SYNC: frozenset({"available"}),
    FAILOVER: frozenset({"available", "error_failovering", "error_reversing"}),
    REVERSE: frozenset({"available"}),  # and replication_status active
    REPROTECT: frozenset({"failovered"}),
    EXTEND: frozenset({"available"}),  # and replication_status not error
}

ChangeKind = Literal["create", "update", "delete", "copy", "failover", "reverse"]
_ID_NAMESPACE = uuid.UUID("0b7e4f6a-2d1c-4c5e-9a8b-3f2e1d0c9b8a")  # stable ids across runs


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(parts)))


@dataclass(frozen=True)
class Change:
    """A timed change of a pair or group; `failure_detail` set means it ends in failure."""

    kind: ChangeKind
    started_at: float
    ends_at: float
    failure_detail: str | None = None
    add_ids: tuple[str, ...] = ()  # update: pairs joining the group when it ends
    remove_ids: tuple[str, ...] = ()  # update: pairs leaving it
    status_after_failure: str = "available"  # copy: a failed reprotect leaves the group failovered

    def progress(self, now: float) -> int:
        """Copy progress in percent; 100 only once the change has been applied."""
        if self.ends_at <= self.started_at:
            return 99
        return max(0, min(99, int(100 * (now - self.started_at) / (self.ends_at - self.started_at))))


@dataclass
class Pair:
    project_id: str
    id: str
    name: str | None
    description: str | None
    volume_ids: tuple[str, str]  # production disk, DR disk
    priority_station: str  # the AZ of the current production disk
    dr_station: str
    created_at: datetime
    updated_at: datetime | None = None
    status: str = "available"
    replication_status: str = "inactive"
    progress: int | None = None  # percent; None until the pair was first synchronised
    failure_detail: str | None = None
    fault_level: str = "0"
    volume_size: int = 10  # GB
    volume_type: str = "SATA"
    multiattach: bool = False
    replication_model: str = REPLICATION_MODEL
    group_id: str | None = None  # set when a group's create or update that adds the pair has ended
    change: Change | None = None
    pending_failure: str | None = None  # consumed by the pair's next timed change


@dataclass
class Group:
    project_id: str
    id: str
    name: str | None
    description: str | None
    priority_station: str
    dr_station: str
    created_at: datetime
    updated_at: datetime | None = None
    status: str = "available"
    replication_ids: list[str] = field(default_factory=list)  # members, from the create on
    failure_detail: str | None = None
    replication_model: str = REPLICATION_MODEL
    change: Change | None = None
    pending_failure: str | None = None  # consumed by the group's next timed change
    # Derived from the members on every refresh (an empty group keeps its last replication status):
    replication_status: str = "inactive"
    fault_level: str = "0"


@dataclass(frozen=True)
class PairRequest:
    volume_ids: tuple[str, str]
    priority_station: str
    name: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class GroupRequest:
    replication_ids: tuple[str, ...]
    priority_station: str
    name: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class GroupUpdate:
    name: str | None = None
    description: str | None = None
    add_ids: tuple[str, ...] = ()
    remove_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Extension:
    pair_id: str
    new_size: int


def _worst(statuses: Sequence[str]) -> str:
    return min(statuses, key=REPLICATION_STATUSES.index)


def _key(resource_id: str) -> str:
    """Ids match whatever their case (the database compares them case-insensitively)."""
    return resource_id.lower()


class LegacyState:
    """All pairs and groups of all projects."""

    def __init__(self, settings: LegacySimSettings, now: Clock, wall: WallClock) -> None:
        self.settings = settings
        self.now = now
        self.wall = wall
        self.groups: dict[tuple[str, str], Group] = {}
        self.pairs: dict[tuple[str, str], Pair] = {}
        self._create_failures: dict[tuple[str, str], str] = {}  # (project, "pair"|"group") -> detail
        self._serial = itertools.count(1)

    def _new_id(self, project_id: str, kind: str) -> str:
        return stable_id(project_id, kind, str(next(self._serial)))

    def _wall_now(self) -> datetime:
        return self.wall(self.now())

    # -- seeding ------------------------------------------------------------------------------

    def add_pair(
        self,
        project_id: str,
        *,
        pair_id: str | None = None,
        name: str | None = None,
        description: str | None = None,
        volume_ids: tuple[str, str] | None = None,
        priority_station: str = "eu-de-01",
        status: str = "available",
        replication_status: str = "inactive",
        progress: int | None = None,
        fault_level: str = "0",
        failure_detail: str | None = None,
        volume_size: int = 10,
        volume_type: str = "SATA",
        created_at: datetime | None = None,
        group_id: str | None = None,
    ) -> Pair:
        if status not in PAIR_STATUSES:
            raise ValueError(f"unknown replication pair status {status!r}")
        if replication_status not in REPLICATION_STATUSES:
            raise ValueError(f"unknown replication status {replication_status!r}")
        if fault_level not in FAULT_LEVELS:
            raise ValueError(f"fault_level must be one of {FAULT_LEVELS}")
        dr_station = self.settings.peer_zone(priority_station)
        if dr_station is None:
            raise ValueError(f"{priority_station!r} is not in the settings' az_pairs")
        pair_id = _key(pair_id) if pair_id is not None else self._new_id(project_id, "pair")
        if (project_id, pair_id) in self.pairs:
            raise ValueError(f"replication pair {pair_id} already exists in project {project_id}")
        volume_ids = volume_ids or (stable_id(pair_id, "production"), stable_id(pair_id, "dr"))
        if len(set(volume_ids)) != 2:
            raise ValueError("a replication pair has two different disks")
        created = created_at or self._wall_now()
        pair = Pair(
            project_id=project_id, id=pair_id, name=name, description=description,
            volume_ids=volume_ids, priority_station=priority_station, dr_station=dr_station,
            created_at=created, status=status, replication_status=replication_status,
            progress=progress, failure_detail=failure_detail, fault_level=fault_level,
            volume_size=volume_size, volume_type=volume_type, group_id=group_id,
        )  # fmt: skip
        self.pairs[(project_id, pair_id)] = pair
        return pair

    def add_group(
        self,
        project_id: str,
        *,
        group_id: str | None = None,
        name: str | None = None,
        description: str | None = None,
        priority_station: str = "eu-de-01",
        pair_count: int = 1,
        pair_ids: Sequence[str] | None = None,
        status: str = "available",
        replication_status: str = "active",
        failure_detail: str | None = None,
        volume_size: int = 10,
        created_at: datetime | None = None,
        updated_at: datetime | None = None,
    ) -> Group:
        """A group with new member pairs (`pair_ids`, else `pair_count` generated ones) that replicate
        as `replication_status` says."""
        if status not in GROUP_STATUSES:
            raise ValueError(f"unknown replication consistency group status {status!r}")
        if replication_status not in REPLICATION_STATUSES:
            raise ValueError(f"unknown replication status {replication_status!r}")
        dr_station = self.settings.peer_zone(priority_station)
        if dr_station is None:
            raise ValueError(f"{priority_station!r} is not in the settings' az_pairs")
        group_id = _key(group_id) if group_id is not None else self._new_id(project_id, "group")
        if (project_id, group_id) in self.groups:
            raise ValueError(f"replication consistency group {group_id} already exists in project {project_id}")
        created = created_at or self._wall_now()
        group = Group(
            project_id=project_id, id=group_id, name=name, description=description,
            priority_station=priority_station, dr_station=dr_station, created_at=created,
            updated_at=updated_at, status=status, failure_detail=failure_detail,
            replication_status=replication_status,
        )  # fmt: skip
        synchronised = replication_status in ("active", "active-stopped")
        for index, pair_id in enumerate(pair_ids if pair_ids is not None else [None] * pair_count):
            pair = self.add_pair(
                project_id, pair_id=pair_id, name=f"{name or 'rcg'}-replication-{index + 1}",
                priority_station=priority_station, replication_status=replication_status,
                progress=100 if synchronised else None, volume_size=volume_size, created_at=created,
                group_id=group_id,
            )  # fmt: skip
            group.replication_ids.append(pair.id)
        self.groups[(project_id, group_id)] = group
        self._derive(group)
        return group

    def fail_next(self, project_id: str, resource_id: str, failure_detail: str | None = None) -> None:
        """The next timed change of that group or pair ends in failure with `failure_detail`."""
        key = (project_id, _key(resource_id))
        target = self.groups.get(key) or self.pairs.get(key)
        if target is None:
            raise KeyError(f"no group or pair {resource_id} in project {project_id}")
        target.pending_failure = failure_detail or DEFAULT_FAILURE_DETAIL

    def fail_next_create(
        self, project_id: str, kind: Literal["pair", "group"], failure_detail: str | None = None
    ) -> None:
        """The next pair (or group) created in the project ends in `error` with `failure_detail`."""
        self._create_failures[(project_id, kind)] = failure_detail or DEFAULT_FAILURE_DETAIL

    # -- reads --------------------------------------------------------------------------------

    def group(self, project_id: str, group_id: str) -> Group:
        self.refresh(project_id)
        group = self.groups.get((project_id, _key(group_id)))
        if group is None:
            raise not_found("Replication consistency group", group_id)
        return group

    def pair(self, project_id: str, pair_id: str) -> Pair:
        self.refresh(project_id)
        pair = self.pairs.get((project_id, _key(pair_id)))
        if pair is None:
            raise not_found("Replication pair", pair_id)
        return pair

    def list_groups(self, project_id: str) -> list[Group]:
        self.refresh(project_id)
        return [group for (project, _), group in self.groups.items() if project == project_id]

    def list_pairs(self, project_id: str) -> list[Pair]:
        self.refresh(project_id)
        return [pair for (project, _), pair in self.pairs.items() if project == project_id]

    def members(self, group: Group) -> list[Pair]:
        return [self.pairs[(group.project_id, pair_id)] for pair_id in group.replication_ids]

    # -- pair commands ------------------------------------------------------------------------

    def create_pair(self, project_id: str, request: PairRequest) -> Pair:
        self.refresh(project_id)
        dr_station = self.settings.peer_zone(request.priority_station)
        if dr_station is None:
            raise bad_request(f"priority_station {request.priority_station!r} is not an availability zone "
                              "with replication in this region.")
        production, dr = request.volume_ids
        # Disks already in a pair are an asynchronous failure (failure_detail), not an HTTP error.
        failure = self._create_failures.pop((project_id, "pair"), None) or self._disk_in_use(project_id, production, dr)
        pair = Pair(
            project_id=project_id, id=self._new_id(project_id, "pair"), name=request.name,
            description=request.description, volume_ids=request.volume_ids,
            priority_station=request.priority_station, dr_station=dr_station,
            created_at=self._wall_now(), status="creating",
        )  # fmt: skip
        pair.change = self._start("create", self.settings.transition_seconds, failure)
        self.pairs[(project_id, pair.id)] = pair
        return pair

    def delete_pair(self, project_id: str, pair_id: str) -> None:
        pair = self.pair(project_id, pair_id)
        owner = self._owner(pair)
        if owner is not None:
            raise bad_request(f"Replication pair {pair.id} belongs to replication consistency group {owner}; "
                              "remove it from the group first.")
        if pair.status not in DELETABLE_STATUSES:
            raise bad_request(f"Replication pair {pair.id} must be available or error to be deleted, "
                              f"not {pair.status}.")
        pair.status = "deleting"
        pair.updated_at = self._wall_now()
        pair.change = self._start("delete", self.settings.transition_seconds, pair.pending_failure)
        pair.pending_failure = None

    def _disk_in_use(self, project_id: str, production: str, dr: str) -> str | None:
        used = {volume for pair in self.list_pairs(project_id) for volume in pair.volume_ids}
        if production in used:
            return PRODUCTION_DISK_IN_USE
        return DR_DISK_IN_USE if dr in used else None

    def _owner(self, pair: Pair) -> str | None:
        """The group the pair belongs to or is joining (inferred: a pair is in one group at most)."""
        if pair.group_id is not None:
            return pair.group_id
        for (project, _), group in self.groups.items():
            joining = group.change.add_ids if group.change is not None else ()
            if project == pair.project_id and (pair.id in group.replication_ids or pair.id in joining):
                return group.id
        return None

    # -- group commands -----------------------------------------------------------------------

    def create_group(self, project_id: str, request: GroupRequest) -> Group:
        self.refresh(project_id)
        if not request.replication_ids:
            raise bad_request("A replication consistency group needs at least one replication pair.")
        pairs = self._joining_pairs(project_id, request.replication_ids, request.priority_station)
        group = Group(
            project_id=project_id, id=self._new_id(project_id, "group"), name=request.name,
            description=request.description, priority_station=request.priority_station,
            dr_station=pairs[0].dr_station, created_at=self._wall_now(), status="creating",
            replication_ids=[pair.id for pair in pairs],
        )  # fmt: skip
        failure = self._create_failures.pop((project_id, "group"), None)
        group.change = self._start("create", self.settings.transition_seconds, failure)
        self.groups[(project_id, group.id)] = group
        self._derive(group)
        return group

    def update_group(self, project_id: str, group_id: str, update: GroupUpdate) -> Group:
        group = self.group(project_id, group_id)
        if group.status != "available":  # the user guide's prerequisite
            raise bad_request(f"Replication consistency group {group.id} must be available to be updated, "
                              f"not {group.status}.")
        if group.replication_status in ("active", "copying"):
            raise bad_request(f"Stop replication consistency group {group.id} before updating it "
                              f"(its replication_status is {group.replication_status}).")
        remove = [self._existing_pair(project_id, pair_id).id for pair_id in update.remove_ids]
        add_requested = [_key(pair_id) for pair_id in update.add_ids]
        if set(add_requested) & set(remove):
            raise bad_request("A replication pair cannot be both added and removed.")
        strangers = [pair_id for pair_id in remove if pair_id not in group.replication_ids]
        if strangers:
            raise bad_request(f"Replication pair {strangers[0]} is not in replication consistency group {group.id}.")
        members = [pair_id for pair_id in add_requested if pair_id in group.replication_ids]
        if members:
            raise bad_request(f"Replication pair {members[0]} is already in replication consistency group {group.id}.")
        add = self._joining_pairs(project_id, update.add_ids, group.priority_station) if update.add_ids else []
        if update.name is not None:
            group.name = update.name
        if update.description is not None:
            group.description = update.description
        group.status = "updating"
        group.updated_at = self._wall_now()
        group.change = self._start(
            "update", self.settings.transition_seconds, self._take_failure(group),
            add_ids=tuple(pair.id for pair in add), remove_ids=tuple(dict.fromkeys(remove)),
        )  # fmt: skip
        return group

    def delete_group(self, project_id: str, group_id: str) -> None:
        group = self.group(project_id, group_id)
        if group.replication_ids:
            raise bad_request(f"Remove the {len(group.replication_ids)} replication pair(s) of replication "
                              f"consistency group {group.id} before deleting it.")
        if group.status not in DELETABLE_STATUSES:
            raise bad_request(f"Replication consistency group {group.id} must be available or error to be "
                              f"deleted, not {group.status}.")
        group.status = "deleting"
        group.updated_at = self._wall_now()
        group.change = self._start("delete", self.settings.transition_seconds, self._take_failure(group))

    def act(self, project_id: str, group_id: str, action: str, extensions: Sequence[Extension] = ()) -> None:
        """Carry out one of ACTIONS (the action body's key), or raise EvsError."""
        group = self.group(project_id, group_id)
        if group.status not in ACTION_STATUSES[action]:
            raise bad_request(f"{action} is not allowed while replication consistency group {group.id} "
                              f"is {group.status}.")
        members = self.members(group)
        if action != STOP and not members:
            raise bad_request(f"Replication consistency group {group.id} has no replication pairs.")
        if action == STOP:
            self._stop(group, members)
        elif action == SYNC:
            self._copy(group, members, status_after_failure="available")
        elif action == REPROTECT:
            group.status = "available"  # replication runs again, towards the restored AZ
            self._copy(group, members, status_after_failure="failovered")
        elif action == FAILOVER:
            if any(pair.fault_level == BROKEN_LINK for pair in members):
                raise bad_request(f"The replication link of replication consistency group {group.id} is "
                                  "broken (fault_level 5): a failover cannot be performed.")
            self._begin(group, "failover", "failovering")
        elif action == REVERSE:
            if group.replication_status != "active":
                raise bad_request(f"A switchover needs synchronised data (replication_status active); replication "
                                  f"consistency group {group.id} is {group.replication_status}.")
            self._begin(group, "reverse", "reversing")
        else:
            if group.replication_status == "error":
                raise bad_request(f"Disks cannot be expanded while replication consistency group {group.id} "
                                  "has replication_status error.")
            self._extend(group, extensions)
        group.updated_at = self._wall_now()
        self._derive(group)

    def _joining_pairs(self, project_id: str, pair_ids: Sequence[str], priority_station: str) -> list[Pair]:
        """The pairs a create or update adds, checked as the create page states (available) and as
        membership implies (in no other group, production disk in the group's AZ: inferred)."""
        pairs = [self._existing_pair(project_id, pair_id) for pair_id in dict.fromkeys(map(_key, pair_ids))]
        for pair in pairs:
            if pair.status != "available":
                raise bad_request(f"Replication pair {pair.id} must be available, not {pair.status}.")
            owner = self._owner(pair)
            if owner is not None:
                raise bad_request(f"Replication pair {pair.id} already belongs to replication consistency "
                                  f"group {owner}.")
            if pair.priority_station != priority_station:
                raise bad_request(f"The production disk of replication pair {pair.id} is in "
                                  f"{pair.priority_station}, not in priority_station {priority_station}.")
        return pairs

    def _existing_pair(self, project_id: str, pair_id: str) -> Pair:
        pair = self.pairs.get((project_id, _key(pair_id)))
        if pair is None:
            raise not_found("Replication pair", pair_id)
        return pair

    def _take_failure(self, target: Group | Pair) -> str | None:
        failure, target.pending_failure = target.pending_failure, None
        return failure

    def _start(
        self,
        kind: ChangeKind,
        seconds: float,
        failure: str | None,
        *,
        add_ids: tuple[str, ...] = (),
        remove_ids: tuple[str, ...] = (),
        status_after_failure: str = "available",
    ) -> Change:
        now = self.now()
        return Change(kind, now, now + seconds, failure, add_ids, remove_ids, status_after_failure)

    def _begin(self, group: Group, kind: ChangeKind, status: str) -> None:
        group.status = status
        group.change = self._start(kind, self.settings.transition_seconds, self._take_failure(group))

    def _stop(self, group: Group, members: list[Pair]) -> None:
        """Pause at once: replicas that were in sync stay consistent (active-stopped); a copy cut
        short leaves them inconsistent (inactive)."""
        if group.change is not None and group.change.kind == "copy":
            group.change = None
        for pair in members:
            if pair.replication_status == "active":
                pair.replication_status = "active-stopped"
            elif pair.replication_status == "copying":
                pair.replication_status = "inactive"
            pair.updated_at = self._wall_now()

    def _copy(self, group: Group, members: list[Pair], status_after_failure: str) -> None:
        if group.change is not None and group.change.kind == "copy":
            return  # already synchronising
        for pair in members:
            pair.replication_status = "copying"
            pair.progress = 0
            pair.updated_at = self._wall_now()
        group.change = self._start(
            "copy", self.settings.copy_seconds, self._take_failure(group), status_after_failure=status_after_failure
        )

    def _extend(self, group: Group, extensions: Sequence[Extension]) -> None:
        """Every expansion is checked before any disk grows (200 means all of them are done)."""
        if not extensions:
            raise bad_request("os-extend-replication-volumes names no replication pair.")
        seen: set[str] = set()
        for extension in extensions:
            pair = self._existing_pair(group.project_id, extension.pair_id)
            if pair.id in seen:
                raise bad_request(f"Replication pair {pair.id} is listed twice.")
            seen.add(pair.id)
            if pair.id not in group.replication_ids:
                raise bad_request(f"Replication pair {pair.id} is not in replication consistency group {group.id}.")
            if extension.new_size <= pair.volume_size:
                raise bad_request(f"new_size of replication pair {pair.id} must be larger than its "
                                  f"{pair.volume_size} GB.")
        for extension in extensions:
            pair = self._existing_pair(group.project_id, extension.pair_id)
            pair.volume_size = extension.new_size
            pair.updated_at = self._wall_now()

    # -- derivation ---------------------------------------------------------------------------

    def _objects(self, project_id: str) -> Iterator[Group | Pair]:
        yield from (group for (project, _), group in self.groups.items() if project == project_id)
        yield from (pair for (project, _), pair in self.pairs.items() if project == project_id)

    def refresh(self, project_id: str) -> None:
        """Apply the changes that have ended, in the order they ended, then derive what clients see."""
        now = self.now()
        ended = [target for target in self._objects(project_id) if target.change and target.change.ends_at <= now]
        for target in sorted(ended, key=lambda t: t.change.ends_at):  # type: ignore[union-attr]
            if isinstance(target, Group):
                self._finish_group(target)
            else:
                self._finish_pair(target)
        for group in [group for (project, _), group in self.groups.items() if project == project_id]:
            if group.change is not None and group.change.kind == "copy":
                for pair in self.members(group):
                    pair.progress = group.change.progress(now)
            self._derive(group)

    def _derive(self, group: Group) -> None:
        members = self.members(group)
        if members:
            group.replication_status = _worst([pair.replication_status for pair in members])
        group.fault_level = max((pair.fault_level for pair in members), key=int, default="0")

    def _finish_pair(self, pair: Pair) -> None:
        change, pair.change = pair.change, None
        assert change is not None
        pair.updated_at = self.wall(change.ends_at)
        if change.failure_detail is not None:
            pair.status = "error" if change.kind == "create" else "error_deleting"
            pair.failure_detail = change.failure_detail
        elif change.kind == "create":
            pair.status = "available"
        else:
            del self.pairs[(pair.project_id, pair.id)]

    def _finish_group(self, group: Group) -> None:
        change, group.change = group.change, None
        assert change is not None
        ended = self.wall(change.ends_at)
        group.updated_at = ended
        members = self.members(group)
        if change.failure_detail is not None:
            self._fail_group(group, change, members)
            return
        group.failure_detail = None
        group.status = "available"
        if change.kind == "create":
            for pair in members:
                pair.group_id = group.id
        elif change.kind == "update":
            for pair_id in change.remove_ids:
                self.pairs[(group.project_id, pair_id)].group_id = None
                group.replication_ids.remove(pair_id)
            for pair_id in change.add_ids:
                self.pairs[(group.project_id, pair_id)].group_id = group.id
                group.replication_ids.append(pair_id)
        elif change.kind == "delete":
            del self.groups[(group.project_id, group.id)]
        elif change.kind == "failover":
            group.status = "failovered"
            self._switch_stations(group, members)
            self._set_replication(members, "active-stopped", ended)
        elif change.kind == "reverse":
            self._switch_stations(group, members)
            self._set_replication(members, "active", ended, progress=100)
        else:  # copy
            self._set_replication(members, "active", ended, progress=100)

    def _fail_group(self, group: Group, change: Change, members: list[Pair]) -> None:
        group.failure_detail = change.failure_detail
        if change.kind == "create":
            group.status = "error"
            group.replication_ids = []  # the pairs are free again
        elif change.kind == "update":
            group.status = "error"  # the status table's only generic failure (inferred)
        elif change.kind == "delete":
            group.status = "error_deleting"
        else:
            group.status = {"failover": "error_failovering", "reverse": "error_reversing"}.get(
                change.kind, change.status_after_failure
            )
            self._set_replication(members, "error", self.wall(change.ends_at))

    def _switch_stations(self, group: Group, members: list[Pair]) -> None:
        group.priority_station, group.dr_station = group.dr_station, group.priority_station
        for pair in members:
            pair.priority_station, pair.dr_station = pair.dr_station, pair.priority_station

    def _set_replication(
        self, members: list[Pair], status: str, when: datetime, progress: int | None = None
    ) -> None:
        for pair in members:
            pair.replication_status = status
            pair.updated_at = when
            if progress is not None:
                pair.progress = progress

