"""How a legacy update or delete of a mapped group (or of one of its pairs) becomes SDRS calls (pure).

Old clients manage groups, not only re-protect them; the Terraform provider runs, for a group:
- update: Stop -> PUT (name, description, replication_model, add/remove_replication_ids) -> poll until
  `available` (pending `updating`/`creating`) -> Sync;
- delete: Stop -> GET -> PUT remove_replication_ids = all pairs -> poll until `available` -> DELETE ->
  poll until GET answers 404;
- and, per pair resource: DELETE the pair -> poll until 404.

What each legacy call becomes (checked against the SDRS pages):
- `name` -> `PUT /v1/{p}/server-groups/{id}` `{"server_group": {"name"}}` (synchronous). SDRS names are at
  most 64 bytes of `A-Za-z0-9._-`; a new name outside that is refused (400) rather than changed,
  or the client would read back another name than it wrote and never stop "fixing" it. The name the
  group reads as now (e.g. a recorded legacy name SDRS would refuse) is no change: nothing is sent.
- `description` has no SDRS field: kept by the shim (state store) and shown on reads.
- `replication_model`: only `hypermetro` exists in SDRS; anything else is 400.
- `add_replication_ids`: a legacy pair cannot move into an SDRS group: 400 naming the SDRS call that
  creates a pair in the group.
- `remove_replication_ids` (legacy pair ids recorded at discovery name their SDRS pairs) ->
  `DELETE /v1/{p}/replications/{rid}` with `delete_target_volume: false`
  per pair (no disk is deleted), as jobs; the group reads `updating` until they end.
- DELETE group -> `DELETE /v1/{p}/server-groups/{id}` (a job; SDRS refuses while pairs remain); the
  group reads `deleting`, then 404.
- DELETE pair: the legacy endpoint deletes only a pair in no group, and every SDRS pair is in its
  protection group, so a pair of a mapped group is removed with the group update above; its DELETE is
  then answered 202 (nothing sent) and its GET 404, as a removed legacy pair's delete would end.

Every legacy precondition of these writes (the legacy pages' constraints, as the legacy stand-in
`shim/legacy_sim` enforces them) is checked on the group as a legacy client reads it, before any SDRS
call, with the legacy 400 and nothing sent (`check_update_allowed`, `check_group_delete_allowed`,
`refuse_pair_delete_in_group`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shim.translate.actions import TRANSLATED_ACTIONS, SdrsCall, load_json, shown_while_pending
from shim.translate.identity import renames, sdrs_pair_id, shown_pair_id
from shim.translate.legacy import LegacyError, id_key, is_legacy_id
from shim.translate.reads import legacy_time, production_zone
from shim.translate.sdrs_models import Job, ReplicationPair, ServerGroup
from shim.translate.tables import GroupMapping

# What the guard's record calls a write's jobs (beside the legacy action keys of actions).
UPDATE = "update-group"
DELETE_GROUP = "delete-group"
DELETE_PAIR = "delete-pair"
# What a group reads as while the jobs of such a write run (the legacy status table's words).
READS_WHILE_PENDING = {UPDATE: "updating", DELETE_GROUP: "deleting"}

SDRS_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
LEGACY_TEXT_MAX_BYTES = 255
UPDATE_KEYS = frozenset({"name", "description", "replication_model", "add_replication_ids", "remove_replication_ids"})
MAX_REMOVED_PAIRS = 1000


@dataclass(frozen=True)
class GroupUpdate:
    """A legacy update of a mapped group, validated: what the client asked to change."""

    name: str | None = None
    description: str | None = None
    remove: tuple[str, ...] = ()  # SDRS pair ids (a recorded legacy id already turned into its SDRS pair's)


def parse_group_update(raw: bytes, entry: GroupMapping) -> GroupUpdate:
    """`{"replication_consistency_group": {...}}` as golangsdk sends it (absent fields: no change)."""
    document = load_json(raw)
    body = document.get("replication_consistency_group") if isinstance(document, dict) else None
    if not isinstance(body, dict) or len(document) != 1:
        raise LegacyError(400, "Malformed request body: expected {\"replication_consistency_group\": {...}}.")
    if unknown := sorted(set(body) - UPDATE_KEYS):
        raise LegacyError(400, f"Malformed request body: unknown field {unknown[0][:64]!r}.")
    name, description = body.get("name"), body.get("description")
    for field, value in (("name", name), ("description", description)):
        if value is not None and (not isinstance(value, str) or len(value.encode()) > LEGACY_TEXT_MAX_BYTES):
            raise LegacyError(400, f"Invalid {field}: a string of at most {LEGACY_TEXT_MAX_BYTES} bytes.")
    model = body.get("replication_model")
    if model not in (None, "", "hypermetro"):
        raise LegacyError(400, f"Invalid replication_model {str(model)[:64]!r}: replication consistency group "
                               f"{entry.rcg_id} is served by SDRS, whose only replication model is hypermetro.")
    add = _id_list(body, "add_replication_ids")
    if add:
        raise LegacyError(400, f"Cannot add replication pairs to replication consistency group {entry.rcg_id}: it "
                               "is served by SDRS, and a legacy pair cannot move into an SDRS protection group. "
                               f"Create the pair in SDRS instead: POST /v1/{entry.project_id}/replications with "
                               f"{{\"replication\": {{\"server_group_id\": \"{entry.protection_group_id}\", "
                               "\"volume_id\": <the production disk>, \"name\": ...}}.")
    if name and (entry.identity is None or name != entry.identity.name):
        check_sdrs_name(name, entry)  # a new name: refused before anything waits (plan_update checks again)
    removed = {id_key(pair_id): pair_id for pair_id in (sdrs_pair_id(entry.identity, pair_id)
                                                         for pair_id in _id_list(body, "remove_replication_ids"))}
    return GroupUpdate(name=name or None, description=description, remove=tuple(removed.values()))


def _id_list(body: dict[str, Any], field: str) -> tuple[str, ...]:
    values = body.get(field)
    if values is None:
        return ()
    if not isinstance(values, list) or len(values) > MAX_REMOVED_PAIRS or not all(
        isinstance(value, str) and is_legacy_id(value) for value in values
    ):
        raise LegacyError(400, f"Invalid {field}: a list of replication pair ids (UUIDs).")
    return tuple(dict.fromkeys(values))  # a pair named twice is removed once


def check_sdrs_name(name: str, entry: GroupMapping) -> None:
    if SDRS_NAME.fullmatch(name) is None:
        raise LegacyError(400, f"Invalid name {name[:64]!r}: replication consistency group {entry.rcg_id} is "
                               "served by SDRS, whose group names are 1 to 64 letters, digits, '.', '_' or '-'. "
                               "Choose such a name.")


@dataclass(frozen=True)
class UpdatePlan:
    rename: SdrsCall | None
    deletes: tuple[SdrsCall, ...]  # one pair delete per pair still in SDRS
    already_removed: tuple[str, ...]  # pairs this shim removed before: nothing to do
    renamed: bool = False  # the name the group reads as changes (SDRS's name from then on)


def plan_update(
    update: GroupUpdate, entry: GroupMapping, group: ServerGroup, pairs: list[ReplicationPair],
    removed_before: frozenset[str], shown_name: str | None,
) -> UpdatePlan:
    """The SDRS calls of an update, after every check has passed (`removed_before`: id_keys of pairs
    this shim already removed from the group, so a retried update finishes instead of failing;
    `shown_name`: the name the group reads as now, which is no change)."""
    members = {id_key(pair.id): pair for pair in pairs}
    deletes: list[SdrsCall] = []
    already: list[str] = []
    for pair_id in update.remove:
        pair = members.get(id_key(pair_id))
        if pair is None:
            if id_key(pair_id) in removed_before:
                already.append(pair_id)
                continue
            raise LegacyError(400, f"Replication pair {shown_pair_id(entry.identity, pair_id)} is not in "
                                   "replication consistency group "
                                   f"{entry.rcg_id}; nothing was changed.")
        if pair.status == "deleting":
            already.append(pair.id)  # its delete is running already
            continue
        deletes.append(pair_delete(entry, pair.id))
    rename = None
    renamed = update.name is not None and renames(update.name, shown_name)
    if renamed:
        check_sdrs_name(update.name or "", entry)
    if renamed and update.name != group.name:
        rename = SdrsCall("PUT", f"/v1/{entry.project_id}/server-groups/{entry.protection_group_id}",
                          {"server_group": {"name": update.name}}, f"protection group {entry.protection_group_id}")
    return UpdatePlan(rename, tuple(deletes), tuple(already), renamed)


# The legacy group statuses a delete is accepted in (the delete page's constraint).
DELETABLE_STATUSES = frozenset({"available", "error"})
# Replication still running: the update page says the group "must be paused before the update".
RUNNING_REPLICATION = frozenset({"active", "copying"})


def check_update_allowed(entry: GroupMapping, status: str, replication_status: str) -> None:
    """The legacy update's preconditions on the group as clients read it: `status` available (user
    guide), replication paused (API reference); else the legacy 400 and nothing changes."""
    if status != "available":
        raise LegacyError(400, f"Replication consistency group {entry.rcg_id} must be available to be updated, "
                               f"not {status}; nothing was changed.")
    if replication_status in RUNNING_REPLICATION:
        raise LegacyError(400, f"Stop replication consistency group {entry.rcg_id} before updating it (its "
                               f"replication_status is {replication_status}; pause it with "
                               "os-stop-replication-consistency-group); nothing was changed.")


def check_group_delete_allowed(entry: GroupMapping, status: str, pair_count: int) -> None:
    """The legacy delete's preconditions: every pair removed first, `status` available or error."""
    if pair_count:
        raise LegacyError(400, f"Remove the {pair_count} replication pair(s) of replication consistency group "
                               f"{entry.rcg_id} before deleting it (PUT with remove_replication_ids); nothing was "
                               "deleted.")
    if status not in DELETABLE_STATUSES:
        raise LegacyError(400, f"Replication consistency group {entry.rcg_id} must be available or error to be "
                               f"deleted, not {status}; nothing was deleted.")


def refuse_pair_delete_in_group(entry: GroupMapping, pair_id: str) -> LegacyError:
    """The legacy pair delete's precondition: the pair is in no group. A mapped group's pair still is
    (named by the id its clients know it by)."""
    return LegacyError(400, f"Replication pair {shown_pair_id(entry.identity, pair_id)} belongs to replication "
                            f"consistency group {entry.rcg_id}; "
                            "remove it from the group first (PUT .../os-vendor-replication-consistency-groups/"
                            f"{entry.rcg_id} with remove_replication_ids); nothing was deleted.")


def pair_delete(entry: GroupMapping, pair_id: str) -> SdrsCall:
    """The SDRS pair delete: the DR disk is kept (`delete_target_volume: false`), no data is deleted."""
    return SdrsCall("DELETE", f"/v1/{entry.project_id}/replications/{pair_id}",
                    {"replication": {"server_group_id": entry.protection_group_id, "delete_target_volume": False}},
                    f"replication pair {pair_id}")


def group_delete(entry: GroupMapping) -> SdrsCall:
    return SdrsCall("DELETE", f"/v1/{entry.project_id}/server-groups/{entry.protection_group_id}", None,
                    f"protection group {entry.protection_group_id}")


def accepted_update(entry: GroupMapping, group: ServerGroup, name: str | None, description: str | None,
                    working: bool) -> dict[str, Any]:
    """The 202 body golangsdk needs: the wrapper key and the seven fields of a create/update answer
    (`name` and `description` as the group reads now)."""
    return {"replication_consistency_group": {
        "id": entry.rcg_id,
        "name": name,
        "description": description,
        "status": "updating" if working else "available",
        "priority_station": production_zone(group),
        "created_at": legacy_time(group.created_at),
        "updated_at": legacy_time(group.updated_at),
    }}


@dataclass(frozen=True)
class Reading:
    """How a group reads while work this shim started on it is pending (or just failed)."""

    group: ServerGroup
    status: str | None = None  # a legacy status shown instead of the status table's reading
    failure_detail: str | None = None


def reading_while_pending(group: ServerGroup, work: str, jobs: list[Job | None]) -> Reading:
    """An action shows its running status until SDRS's job leaves INIT (see `shown_while_pending`);
    an update reads `updating` while its pair deletes run, then `error` (the job's code as
    `failure_detail`) if one failed, until the next action; a group delete reads `deleting` from the
    moment it is accepted (SDRS shows `deleting` only once its job runs)."""
    translation = TRANSLATED_ACTIONS.get(work)
    if translation is not None:
        for job in jobs:
            group = shown_while_pending(group, translation, job)
        return Reading(group)
    pending = READS_WHILE_PENDING.get(work)
    if pending is None:
        return Reading(group)
    if any(job is not None and not job.finished for job in jobs):
        return Reading(group, pending)
    failed = next((job for job in jobs if job is not None and job.status == "FAIL"), None)
    if failed is not None and work == UPDATE:
        return Reading(group, "error", failed.error_code or "SDRS job failed")
    return Reading(group)
