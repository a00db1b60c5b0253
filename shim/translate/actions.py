"""How a legacy RCG action is translated into SDRS calls, as pure functions (no I/O here).

    POST /v2/{project_id}/os-vendor-replication-consistency-groups/{rcg_id}/action
    {"os-reprotect-replication-consistency-group": null}

1. `parse_action_body`: the legacy body -> `ActionRequest` (or a legacy 400 saying what is wrong).
2. `TRANSLATED_ACTIONS[key]`: the SDRS action that does the same thing, and the SDRS group statuses
   in which it does *that*. The legacy precondition is checked against SDRS's status before anything
   is sent: SDRS's `start-server-group` re-protects a `failed-over`/`error-reprotecting` group but
   *enables protection* on an `available` one, so a reprotect must never reach SDRS for an available
   group, nor a sync for a failed-over one.
3. `plan_calls(translation, request, group, pairs)`: the SDRS action POSTs to send (one per group
   action; one `extend-replication` per pair for a disk expansion).
4. Each POST's `{"job_id": ...}` means the legacy 200 with an empty body, at once (`completion:
   accepted`) or once the job has visibly started (`confirmed`; see `job_outcome`). A disk expansion
   answers 200 only when its jobs have succeeded: the legacy API promised a synchronous expansion.
Legacy action keys not in TRANSLATED_ACTIONS go through to the legacy endpoint unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from shim.translate.identity import GroupIdentity, sdrs_pair_id
from shim.translate.legacy import LegacyError, is_legacy_id
from shim.translate.reads import other_station
from shim.translate.sdrs_answers import sdrs_error_code
from shim.translate.sdrs_models import Job, ReplicationPair, SdrsAnswer, ServerGroup
from shim.translate.tables import SdrsErrorTable

REPROTECT = "os-reprotect-replication-consistency-group"
SYNC = "os-sync-replication-consistency-group"
STOP = "os-stop-replication-consistency-group"
FAILOVER = "os-failover-replication-consistency-group"
REVERSE = "os-reverse-replication-consistency-group"
EXTEND = "os-extend-replication-volumes"
LEGACY_ACTION_KEYS = frozenset({REPROTECT, SYNC, STOP, FAILOVER, REVERSE, EXTEND})
MAX_EXTEND_PAIRS = 100


@dataclass(frozen=True)
class ActionTranslation:
    legacy_key: str
    verb: str  # for messages: "reprotect"
    sdrs_action: str
    sdrs_statuses: frozenset[str]  # SDRS group statuses in which sdrs_action does what the key asks
    legacy_requirement: str  # the legacy precondition, as the legacy docs state it
    running_status: str  # the SDRS group status that shows the action has started
    sdrs_params: Callable[[ServerGroup], dict[str, Any]] = field(default=lambda group: {})
    per_pair: bool = False  # one SDRS call per replication pair (disk expansion)
    # SDRS group statuses in which what the key asks already holds: answered 200, nothing sent. Only
    # pause and sync: the legacy pages list no precondition for them ("None"), so a pause of a paused
    # group or a sync of a replicating one succeeds, as the legacy endpoint answered them.
    already_done: frozenset[str] = frozenset()

    @property
    def idempotent(self) -> bool:
        """Asking again while the first one runs changes nothing: answered 200, nothing sent."""
        return bool(self.already_done)


TRANSLATED_ACTIONS: dict[str, ActionTranslation] = {
    translation.legacy_key: translation
    for translation in (
        ActionTranslation(
            REPROTECT, "reprotect", "start-server-group", frozenset({"failed-over", "error-reprotecting"}),
            "status must be failovered", "reprotecting"),
        ActionTranslation(
            SYNC, "synchronize", "start-server-group", frozenset({"available", "error-starting"}),
            "status must be available and replication stopped (a failed-over group needs a reprotect)",
            "starting", already_done=frozenset({"protected", "starting", "reprotecting"})),
        ActionTranslation(
            STOP, "pause", "stop-server-group", frozenset({"protected", "error-stopping"}),
            "replication must be running (status available, replication_status active)", "stopping",
            already_done=frozenset({"available", "stopping", "failed-over"})),
        ActionTranslation(
            FAILOVER, "fail over", "failover-server-group",
            frozenset({"protected", "error-failing-over", "error-reversing"}),
            "status must be available with replication active, or error_failovering", "failing-over"),
        ActionTranslation(
            REVERSE, "switch over", "reverse-server-group", frozenset({"protected", "error-reversing"}),
            "status must be available with replication_status active", "reversing",
            sdrs_params=lambda group: {"priority_station": other_station(group)}),
        ActionTranslation(
            EXTEND, "expand the disks of", "extend-replication", frozenset({"available", "protected"}),
            "status must be available and replication_status not error", "", per_pair=True),
    )
}  # fmt: skip


@dataclass(frozen=True)
class ActionRequest:
    key: str
    value: Any


@dataclass(frozen=True)
class SdrsCall:
    method: str
    path: str
    body: dict[str, Any] | None = None
    subject: str = ""  # what the call acts on, for messages: "protection group <id>", "pair <id>"


def load_json(raw: bytes) -> Any:
    """A legacy request body as JSON, or a legacy 400 that says what is wrong with it."""
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_object_without_duplicate_keys)
    except UnicodeDecodeError:
        raise LegacyError(400, "Malformed request body: not UTF-8 text.") from None
    except RecursionError:
        raise LegacyError(400, "Malformed request body: JSON nested too deeply.") from None
    except json.JSONDecodeError as err:
        raise LegacyError(400, f"Malformed request body: not JSON ({err.msg}).") from None
    except _DuplicateKey as err:
        raise LegacyError(400, f"Malformed request body: the key {str(err)[:80]!r} appears twice.") from None
    except ValueError as err:  # e.g. an integer literal longer than Python converts
        raise LegacyError(400, f"Malformed request body: not acceptable JSON ({err}).") from None


def parse_action_body(raw: bytes) -> ActionRequest:
    """The legacy action body: one JSON object with exactly one known action key."""
    document = load_json(raw)
    if not isinstance(document, dict):
        raise LegacyError(400, "Malformed request body: expected a JSON object with one action key.")
    if len(document) != 1:
        keys = ", ".join(sorted(document))[:200] or "none"
        raise LegacyError(400, f"Malformed request body: expected exactly one action key, got {keys}.")
    ((key, value),) = document.items()
    if key not in LEGACY_ACTION_KEYS:
        raise LegacyError(400, f"Request body and URI mismatch: unknown action {key[:80]!r}.")
    translation = TRANSLATED_ACTIONS.get(key)
    if translation is not None and not translation.per_pair and value not in (None, {}):
        raise LegacyError(400, f"Malformed request body: the value of {key!r} must be null or {{}}.")
    return ActionRequest(key, value)


class _DuplicateKey(Exception):
    pass


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON allows repeated keys and json.loads keeps the last one: an ambiguous action is refused."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def requested_extensions(value: Any) -> list[tuple[str, int]]:
    """(pair id, new size in GB) from either extend body shape.

    Documented: `{"replications": [{"id": ..., "new_size": N}, ...]}`; what the stock golangsdk sends
    (its type bug): a flat `{"id": ..., "new_size": N}`, read as a one-element list.
    """
    if isinstance(value, dict) and set(value) == {"replications"}:
        entries = value["replications"]
    elif isinstance(value, dict) and set(value) == {"id", "new_size"}:
        entries = [value]
    else:
        raise LegacyError(400, f"Malformed request body: {EXTEND!r} needs {{\"replications\": "
                               "[{\"id\": ..., \"new_size\": N}]} or {\"id\": ..., \"new_size\": N}.")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_EXTEND_PAIRS:
        raise LegacyError(400, f"Malformed request body: replications must list 1 to {MAX_EXTEND_PAIRS} pairs.")
    extensions: list[tuple[str, int]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"id", "new_size"}:
            raise LegacyError(400, f"Malformed request body: replications[{index}] must be {{\"id\", \"new_size\"}}.")
        pair_id, new_size = entry["id"], entry["new_size"]
        if not isinstance(pair_id, str) or not is_legacy_id(pair_id):
            raise LegacyError(400, f"Malformed request body: replications[{index}].id must be a UUID.")
        if isinstance(new_size, bool) or not isinstance(new_size, int) or not 1 <= new_size <= 32768:
            raise LegacyError(
                400, f"Malformed request body: replications[{index}].new_size must be a whole number of GB."
            )
        if any(pair_id.lower() == seen.lower() for seen, _ in extensions):
            raise LegacyError(400, f"Malformed request body: pair {pair_id} is listed twice.")
        extensions.append((pair_id, new_size))
    return extensions


def check_precondition(translation: ActionTranslation, rcg_id: str, group: ServerGroup) -> None:
    """Refuse, before any SDRS action is sent, when SDRS would do something else (or nothing)."""
    if group.status not in translation.sdrs_statuses:
        allowed = " or ".join(sorted(translation.sdrs_statuses))
        raise LegacyError(
            400,
            f"Invalid replication consistency group status to {translation.verb}: "
            f"{translation.legacy_requirement}. Replication consistency group {rcg_id} is SDRS "
            f"protection group {group.id} with status '{group.status}' (needs {allowed}).",
        )


def plan_calls(
    translation: ActionTranslation, request: ActionRequest, project_id: str, rcg_id: str,
    group: ServerGroup, pairs: list[ReplicationPair], identity: GroupIdentity | None = None,
) -> list[SdrsCall]:
    """The SDRS action POSTs that carry out the legacy action, after every check has passed (a pair
    named by the legacy id discovery recorded in `identity` is its SDRS pair)."""
    check_precondition(translation, rcg_id, group)
    if not translation.per_pair:
        body = {translation.sdrs_action: translation.sdrs_params(group)}
        return [SdrsCall("POST", f"/v1/{project_id}/server-groups/{group.id}/action", body,
                         f"protection group {group.id}")]
    members = {pair.id.lower(): pair for pair in pairs}
    calls = []
    for pair_id, new_size in requested_extensions(request.value):
        pair = members.get(sdrs_pair_id(identity, pair_id).lower())
        if pair is None:
            raise LegacyError(404, f"Replication pair {pair_id} could not be found in replication "
                                   f"consistency group {rcg_id}.")
        if pair.replication_status == "error" or pair.status not in ("available", "protected", "error-extending"):
            raise LegacyError(400, f"Invalid replication pair status to expand pair {pair_id}: "
                                   f"{translation.legacy_requirement} (SDRS pair status '{pair.status}', "
                                   f"replication_status '{pair.replication_status}').")
        current = volume_size(pair)
        if current is not None and new_size <= current:
            raise LegacyError(400, f"Invalid new_size for pair {pair_id}: {new_size} GB must be larger "
                                   f"than the current {current} GB.")
        calls.append(SdrsCall("POST", f"/v1/{project_id}/replications/{pair.id}/action",
                              {"extend-replication": {"new_size": new_size}}, f"replication pair {pair.id}"))
    return calls


def volume_size(pair: ReplicationPair) -> int | None:
    metadata = pair.record_metadata
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    size = metadata.get("volume_size") if isinstance(metadata, dict) else None
    return int(size) if isinstance(size, int) or (isinstance(size, str) and size.isdigit()) else None


def refuse_while_job_pending(job: Job, verb: str, rcg_id: str) -> None:
    """SDRS would accept a second action while the first job is still INIT: this shim does not."""
    if not job.finished:
        raise LegacyError(
            409,
            f"Cannot {verb} replication consistency group {rcg_id} now: the previous "
            f"action's SDRS job {job.job_id} ({job.job_type or 'unknown type'}) is still {job.status}.",
            refusal="job_running",
        )


def shown_while_pending(group: ServerGroup, translation: ActionTranslation, job: Job | None) -> ServerGroup:
    """The group as a legacy client should read it while an action this shim started is pending.

    Until SDRS's job leaves INIT the group keeps its old status, so a client that just got its 200
    for a reprotect would read `failovered` again; it reads the action as running instead.
    """
    if job is None or job.finished or translation.per_pair or group.status not in translation.sdrs_statuses:
        return group
    return group.model_copy(update={"status": translation.running_status})


# SDRS answers after which the action may have been started all the same (a gateway gave up waiting).
OUTCOME_UNKNOWN_STATUSES = frozenset({502, 504})


def outcome_is_unknown(answer: SdrsAnswer | None, table: SdrsErrorTable) -> bool:
    """Whether SDRS may have started an action although the shim got no job id for it: no answer
    (the POST left but nothing came back), a success of the wrong shape, a gateway that gave up
    waiting (502/504), or a 500 without a documented SDRS code (a crashed backend says nothing about
    what it had done). A 503 means the request was not taken on."""
    if answer is None or answer.status < 400 or answer.status in OUTCOME_UNKNOWN_STATUSES:
        return True
    return answer.status == 500 and sdrs_error_code(answer) not in table.codes


Outcome = Literal["done", "wait"]


def job_outcome(
    job: Job, group: ServerGroup | None, translation: ActionTranslation, table: SdrsErrorTable,
    rcg_id: str,
) -> Outcome:
    """Has a confirmed action taken effect? `done`, `wait`, or a legacy error for a failed job.

    A group action is confirmed once its job has left INIT and the group shows the action's running
    status (or the job already succeeded); a disk expansion only once its job succeeded.
    """
    if job.status == "FAIL":
        code = job.error_code or None
        status = table.legacy_status_of_failed_job(code)
        raise LegacyError(
            status,
            f"SDRS could not {translation.verb} replication consistency group {rcg_id}: job {job.job_id} "
            f"failed with {code or 'no error code'}: {job.fail_reason or 'no reason given'}.",
            sdrs_code=code,
        )
    if job.status == "SUCCESS":
        return "done"
    if translation.per_pair or job.status == "INIT":
        return "wait"
    return "done" if group is not None and group.status == translation.running_status else "wait"


def not_confirmed(
    translation: ActionTranslation, rcg_id: str, job_ids: list[str], seconds: float, why: str | None = None
) -> LegacyError:
    """SDRS accepted the action but the shim could not see it take effect: 504, and say it may run."""
    reason = f"watching it failed ({why})" if why else f"it was not confirmed within {seconds:g} s"
    return LegacyError(
        504,
        f"SDRS accepted the request to {translation.verb} replication consistency group {rcg_id} "
        f"(job {', '.join(job_ids)}) but {reason}; it may still run. Read the group's status before "
        "you retry.",
    )
