"""Discovery (pure): which SDRS protection group holds each legacy replication consistency group, from
the evidence both APIs give, their production volumes.

A legacy group's production volumes are the first disk of each of its pairs (the legacy create body
names the production disk first). A legacy group matches an SDRS group when every one of its production
volumes is a disk of that group's pairs, the SDRS group has as many pairs, and neither side is claimed
twice. Anything else is reported, never guessed:
- ambiguous: a volume listed by two legacy groups, a volume in two SDRS groups, a legacy group whose
  volumes are split over several SDRS groups, an SDRS group that two legacy groups match;
- unmatched: a legacy group without pairs, none of whose volumes SDRS holds, or whose SDRS group holds
  only some of its volumes, or more pairs than it has.
Groups the mapping file names already are kept as they are (and said so when the evidence disagrees).

A matched group's entry records the group as old clients knew it (`legacy:`, translate/identity.py):
its legacy name and description, and for each legacy pair the SDRS pair holding its production volume,
with the pair's legacy id, name and description. The pairs must correspond one to one (two legacy pairs
on the disks of one SDRS pair is ambiguous).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from shim.migration.compare import production_volume, volume_list
from shim.translate.legacy import canonical_id, id_key, is_legacy_id
from shim.translate.sdrs_models import ReplicationPair, ServerGroup
from shim.translate.tables import GroupMapping

Verdict = Literal["matched", "already mapped", "ambiguous", "unmatched"]


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    rcg_id: str
    rcg_name: str | None
    reason: str
    protection_group_id: str | None = None
    protection_group_name: str | None = None
    volumes: tuple[str, ...] = ()
    legacy: dict[str, Any] | None = None  # a match's `legacy:` block for the mapping entry


@dataclass(frozen=True)
class Discovery:
    project_id: str
    findings: list[Finding]
    unclaimed_sdrs_groups: list[tuple[str, str | None]] = field(default_factory=list)  # (id, name)

    def of(self, verdict: Verdict) -> list[Finding]:
        return [finding for finding in self.findings if finding.verdict == verdict]

    def new_entries(self) -> list[dict[str, Any]]:
        """The mapping entries to add, in mode shadow: nothing is served from SDRS before it is proven."""
        return [{"project_id": self.project_id, "replication_consistency_group_id": finding.rcg_id,
                 "protection_group_id": finding.protection_group_id or "", "mode": "shadow",
                 **({"legacy": finding.legacy} if finding.legacy is not None else {})}
                for finding in self.of("matched")]


def discover(
    project_id: str, legacy_groups: Iterable[Mapping[str, Any]], legacy_pairs: Iterable[Mapping[str, Any]],
    sdrs_groups: Iterable[ServerGroup], sdrs_pairs: Iterable[ReplicationPair], mapped: Iterable[GroupMapping],
) -> Discovery:
    evidence = _Evidence.of(legacy_groups, list(legacy_pairs), list(sdrs_groups), list(sdrs_pairs))
    findings: dict[str, Finding] = {}
    candidates: dict[str, str] = {}  # id_key(RCG) -> id_key(PG) of a clean match so far
    for rcg in evidence.legacy_names:
        verdict = _judge(rcg, evidence)
        if isinstance(verdict, str):
            legacy = _legacy_identity(rcg, verdict, evidence)
            if isinstance(legacy, str):
                findings[rcg] = evidence.finding("ambiguous", rcg, legacy)
                continue
            candidates[rcg] = verdict
            findings[rcg] = evidence.finding("matched", rcg, f"{len(evidence.volumes_of[rcg])} production volume(s) "
                                             f"in {evidence.pg_names([verdict])}", verdict, legacy=legacy)
        else:
            findings[rcg] = evidence.finding(verdict[0], rcg, verdict[1])
    for pg, rcgs in _claimed_twice(candidates).items():  # one SDRS group, two legacy groups: neither is sure
        for rcg in rcgs:
            others = " and ".join(evidence.legacy_named(other) for other in sorted(rcgs) if other != rcg)
            findings[rcg] = evidence.finding("ambiguous", rcg, f"{evidence.pg_names([pg])} also matches legacy "
                                             f"group {others}")
            del candidates[rcg]
    mapped_by_rcg = {id_key(entry.rcg_id): entry for entry in mapped if id_key(entry.project_id) == id_key(project_id)}
    mapped_groups = {id_key(entry.protection_group_id): entry for entry in mapped_by_rcg.values()}
    for rcg, entry in mapped_by_rcg.items():  # the file's word stands; say when the volumes disagree
        pointed = candidates.pop(rcg, None)
        note = (f"; its volumes point to {evidence.pg_names([pointed])} instead"
                if pointed is not None and pointed != id_key(entry.protection_group_id) else "")
        # An entry without `legacy:` (written before discovery recorded it): offer the block to add.
        offered = findings[rcg].legacy if rcg in findings and entry.identity is None and not note else None
        if offered is not None:
            note += "; it has no legacy identity recorded: add this `legacy:` block to its entry"
        findings[rcg] = evidence.finding("already mapped", rcg, f"mapped to protection group "
                                         f"{entry.protection_group_id} in mode {entry.mode}{note}",
                                         rcg_id=entry.rcg_id, protection_group_id=entry.protection_group_id,
                                         legacy=offered)
    for rcg, pg in list(candidates.items()):
        if pg in mapped_groups:
            findings[rcg] = evidence.finding("ambiguous", rcg, f"its volumes are in {evidence.pg_names([pg])}, which "
                                             f"the mapping file maps to {mapped_groups[pg].rcg_id} already")
            del candidates[rcg]
    claimed = set(candidates.values()) | set(mapped_groups)
    unclaimed = [(canonical_id(group.id), group.name) for key, group in sorted(evidence.sdrs_groups.items())
                 if key not in claimed]
    ordered = sorted(findings.values(), key=lambda finding: (finding.rcg_name or "", finding.rcg_id))
    return Discovery(project_id, ordered, unclaimed)


@dataclass(frozen=True)
class _Evidence:
    """Both sides of a project, indexed by disk."""

    legacy_names: dict[str, str | None]  # id_key(RCG) -> name, in the legacy list's order
    volumes_of: dict[str, list[str]]  # id_key(RCG) -> its production volumes
    legacy_groups_of_volume: dict[str, set[str]]  # id_key(volume) -> id_key(RCG)s listing it
    sdrs_groups: dict[str, ServerGroup]  # id_key(PG) -> group
    sdrs_groups_of_disk: dict[str, set[str]]  # id_key(disk) -> id_key(PG)s whose pairs hold it
    sdrs_pair_count: dict[str, int]  # id_key(PG) -> its pairs
    legacy_groups: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # id_key(RCG) -> its document
    legacy_members: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)  # id_key(RCG) -> its pairs
    sdrs_pairs_of_disk: dict[str, list[ReplicationPair]] = field(default_factory=dict)  # id_key(disk) -> pairs

    @classmethod
    def of(cls, legacy_groups: Iterable[Mapping[str, Any]], legacy_pairs: list[Mapping[str, Any]],
           sdrs_groups: list[ServerGroup], sdrs_pairs: list[ReplicationPair]) -> _Evidence:
        groups = [group for group in legacy_groups if isinstance(group.get("id"), str) and is_legacy_id(group["id"])]
        members = _legacy_pairs_by_group(groups, legacy_pairs)
        volumes_of = {id_key(group["id"]): _production_volumes(members[id_key(group["id"])]) for group in groups}
        legacy_groups_of_volume: dict[str, set[str]] = defaultdict(set)
        for rcg, volumes in volumes_of.items():
            for volume in volumes:
                legacy_groups_of_volume[id_key(volume)].add(rcg)
        by_id = {id_key(group.id): group for group in sdrs_groups}
        groups_of_disk: dict[str, set[str]] = defaultdict(set)
        pairs_of_disk: dict[str, list[ReplicationPair]] = defaultdict(list)
        pair_count: dict[str, int] = defaultdict(int)
        for pair in sdrs_pairs:
            if id_key(pair.server_group_id) in by_id:
                pair_count[id_key(pair.server_group_id)] += 1
                for disk in volume_list(pair.volume_ids):
                    groups_of_disk[id_key(disk)].add(id_key(pair.server_group_id))
                    pairs_of_disk[id_key(disk)].append(pair)
        names = {id_key(group["id"]): group.get("name") for group in groups}
        return cls(names, volumes_of, legacy_groups_of_volume, by_id, groups_of_disk, pair_count,
                   {id_key(group["id"]): group for group in groups}, members, pairs_of_disk)

    def pg_names(self, keys: Iterable[str]) -> str:
        return " and ".join(_named(self.sdrs_groups[key].id, self.sdrs_groups[key].name) for key in sorted(keys))

    def legacy_named(self, rcg: str) -> str:
        return _named(canonical_id(rcg), self.legacy_names.get(rcg))

    def finding(self, verdict: Verdict, rcg: str, reason: str, pg: str | None = None, *, rcg_id: str | None = None,
                protection_group_id: str | None = None, legacy: dict[str, Any] | None = None) -> Finding:
        group = self.sdrs_groups.get(pg) if pg is not None else None
        return Finding(verdict, rcg_id or canonical_id(rcg), self.legacy_names.get(rcg), reason,
                       protection_group_id or (canonical_id(group.id) if group else None),
                       group.name if group else None, tuple(self.volumes_of.get(rcg, ())), legacy)


def _text(value: Any) -> str | None:
    """A legacy name or description as recorded: a string, else null."""
    return value if isinstance(value, str) else None


def _legacy_identity(rcg: str, pg: str, evidence: _Evidence) -> dict[str, Any] | str:
    """The `legacy:` block of a matched group: its name and description, and each legacy pair with the
    SDRS pair of `pg` holding its production volume; or why the pairs do not correspond one to one."""
    pairs: list[dict[str, Any]] = []
    claimed: dict[str, str] = {}  # id_key(SDRS pair) -> the legacy pair that claimed it
    for legacy_pair in sorted(evidence.legacy_members.get(rcg, []), key=lambda pair: str(pair.get("id"))):
        volume = production_volume(legacy_pair)
        if not isinstance(legacy_pair.get("id"), str) or not is_legacy_id(legacy_pair["id"]):
            return f"one of its pairs has no usable id ({str(legacy_pair.get('id'))[:64]!r})"
        if volume is None:  # clients know the pair, but nothing says which SDRS pair it became
            return f"legacy pair {canonical_id(legacy_pair['id'])} has no volume to match by"
        holders = [pair for pair in evidence.sdrs_pairs_of_disk.get(id_key(volume), [])
                   if id_key(pair.server_group_id) == pg]
        if len(holders) != 1 or not is_legacy_id(holders[0].id):
            return f"legacy pair {canonical_id(legacy_pair['id'])}'s production volume {volume} is not on one SDRS pair"
        sdrs_pair = holders[0]
        if id_key(sdrs_pair.id) in claimed:
            return (f"legacy pairs {claimed[id_key(sdrs_pair.id)]} and {canonical_id(legacy_pair['id'])} are both on "
                    f"SDRS pair {canonical_id(sdrs_pair.id)}: the pairs do not correspond one to one")
        claimed[id_key(sdrs_pair.id)] = canonical_id(legacy_pair["id"])
        pairs.append({"id": canonical_id(legacy_pair["id"]), "sdrs_id": canonical_id(sdrs_pair.id),
                      **({"volume_id": canonical_id(volume)} if is_legacy_id(volume) else {}),
                      "name": _text(legacy_pair.get("name")), "description": _text(legacy_pair.get("description"))})
    group = evidence.legacy_groups.get(rcg, {})
    return {"name": _text(group.get("name")), "description": _text(group.get("description")), "pairs": pairs}


def _judge(rcg: str, evidence: _Evidence) -> str | tuple[Verdict, str]:
    """id_key of the SDRS group that matches the legacy group cleanly, or (verdict, reason)."""
    volumes = evidence.volumes_of[rcg]
    if not volumes:
        return "unmatched", "it has no replication pairs to match by"
    for volume in volumes:
        others = evidence.legacy_groups_of_volume[id_key(volume)] - {rcg}
        if others:
            listed = " and ".join(evidence.legacy_named(other) for other in sorted(others))
            return "ambiguous", f"volume {volume} is also a production volume of legacy group {listed}"
        holders = evidence.sdrs_groups_of_disk.get(id_key(volume), set())
        if len(holders) > 1:
            return "ambiguous", f"volume {volume} is in SDRS protection groups {evidence.pg_names(holders)}"
    holder_of = {volume: min(evidence.sdrs_groups_of_disk.get(id_key(volume)) or {""}) for volume in volumes}
    found = {holder for holder in holder_of.values() if holder}
    if not found:
        return "unmatched", f"none of its {len(volumes)} production volume(s) is in an SDRS protection group"
    if len(found) > 1:
        split = "; ".join(f"{evidence.pg_names([pg])}: {', '.join(v for v, held in holder_of.items() if held == pg)}"
                          for pg in sorted(found))
        return "ambiguous", f"its volumes are split over several SDRS protection groups ({split})"
    (pg,) = found
    missing = [volume for volume, holder in holder_of.items() if not holder]
    if missing:
        return "unmatched", (f"{evidence.pg_names([pg])} holds only some of its volumes; not in SDRS: "
                             f"{', '.join(missing)}")
    if evidence.sdrs_pair_count[pg] != len(volumes):
        return "unmatched", (f"{evidence.pg_names([pg])} has {evidence.sdrs_pair_count[pg]} pair(s), the legacy "
                             f"group {len(volumes)}")
    return pg


def _legacy_pairs_by_group(groups: list[Mapping[str, Any]], pairs: list[Mapping[str, Any]]
                           ) -> dict[str, list[Mapping[str, Any]]]:
    """A group's pairs: those naming it, and those its `replication_ids` name."""
    by_id = {id_key(pair["id"]): pair for pair in pairs if isinstance(pair.get("id"), str)}
    members: dict[str, list[Mapping[str, Any]]] = {id_key(group["id"]): [] for group in groups}
    for group in groups:
        seen: set[str] = set()
        listed = group.get("replication_ids")
        ids = listed if isinstance(listed, list) else []
        named = [by_id[id_key(pair_id)] for pair_id in ids if isinstance(pair_id, str) and id_key(pair_id) in by_id]
        naming = [pair for pair in pairs if isinstance(pair.get("replication_consistency_group_id"), str)
                  and id_key(pair["replication_consistency_group_id"]) == id_key(group["id"])]
        for pair in [*named, *naming]:
            if id_key(pair["id"]) not in seen:
                seen.add(id_key(pair["id"]))
                members[id_key(group["id"])].append(pair)
    return members


def _production_volumes(pairs: list[Mapping[str, Any]]) -> list[str]:
    return sorted({volume for pair in pairs if (volume := production_volume(pair))})


def _claimed_twice(candidates: Mapping[str, str]) -> dict[str, list[str]]:
    claims: dict[str, list[str]] = defaultdict(list)
    for rcg, pg in candidates.items():
        claims[pg].append(rcg)
    return {pg: rcgs for pg, rcgs in claims.items() if len(rcgs) > 1}


def _named(identifier: str, name: str | None) -> str:
    return f"{name!r} ({identifier})" if name else identifier


# -- the report `shim discover` prints ------------------------------------------------------------


def render_findings(discovery: Discovery) -> str:
    lines = [f"Discovery in project {discovery.project_id}:"]
    for verdict, title in (("matched", "Matched (new entries, mode shadow)"), ("already mapped", "Already mapped"),
                           ("ambiguous", "Ambiguous (not written)"), ("unmatched", "Unmatched (not written)")):
        found = discovery.of(verdict)  # type: ignore[arg-type]
        lines.append(f"{title}: {len(found)}")
        for finding in found:
            lines.append(f"  legacy {_named(finding.rcg_id, finding.rcg_name)}: {finding.reason}")
            if verdict == "already mapped" and finding.legacy is not None:
                block = yaml.safe_dump({"legacy": finding.legacy}, sort_keys=False, allow_unicode=True, width=1000)
                lines += [f"      {line}" for line in block.splitlines()]
    if discovery.unclaimed_sdrs_groups:
        lines.append(f"SDRS protection groups no legacy group matches: {len(discovery.unclaimed_sdrs_groups)}")
        lines += [f"  {_named(identifier, name)}" for identifier, name in discovery.unclaimed_sdrs_groups]
    return "\n".join(lines) + "\n"
