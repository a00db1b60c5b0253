"""What sdrs mode would have done with an action the legacy endpoint served (pure): the same parse,
precondition and plan as a translated action (shim/translate/actions.py), without sending anything.

A dry run reads SDRS's current status of the group (and its pairs for a disk expansion) and says:
the SDRS calls that would have been sent, whether the status satisfies the precondition, and the
legacy answer the shim would have given. It does not replay the duplicate-action guard: in shadow
mode this shim sends no action, so nothing of its own can be pending.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from shim.translate.actions import TRANSLATED_ACTIONS, ActionRequest, check_precondition, parse_action_body, plan_calls
from shim.translate.legacy import LegacyError
from shim.translate.sdrs_models import ReplicationPair, ServerGroup
from shim.translate.tables import GroupMapping

Precondition = Literal["satisfied", "not satisfied", "already done", "not checked"]


@dataclass(frozen=True)
class DryRun:
    action: str | None  # the legacy action key, None when the body names none
    would_answer: int  # the legacy status sdrs mode would have answered
    message: str  # the message of that answer ("" for a 200)
    precondition: Precondition
    sdrs_status: str | None = None  # the SDRS group status it was judged against
    planned_calls: list[dict[str, Any]] = field(default_factory=list)  # method, path, body: never sent

    def to_document(self) -> dict[str, Any]:
        return asdict(self)


def parse_for_dry_run(body: bytes) -> ActionRequest | DryRun:
    """The action the body asks for, or the dry run of a body sdrs mode would have refused (400)."""
    try:
        return parse_action_body(body)
    except LegacyError as err:
        return DryRun(None, err.status, err.message, "not checked")


def needs_pairs(action: ActionRequest) -> bool:
    translation = TRANSLATED_ACTIONS.get(action.key)
    return translation is not None and translation.per_pair


def dry_run(action: ActionRequest, entry: GroupMapping, group: ServerGroup, pairs: list[ReplicationPair]) -> DryRun:
    """Judge `action` against the SDRS group as a translated action would, sending nothing."""
    translation = TRANSLATED_ACTIONS.get(action.key)
    if translation is None:
        return DryRun(action.key, 400, f"The action {action.key!r} has no SDRS equivalent.", "not checked",
                      group.status)
    if group.status in translation.already_done:
        return DryRun(action.key, 200, "", "already done", group.status)
    try:
        check_precondition(translation, entry.rcg_id, group)
    except LegacyError as err:
        return DryRun(action.key, err.status, err.message, "not satisfied", group.status)
    try:
        plan = plan_calls(translation, action, entry.project_id, entry.rcg_id, group, pairs)
    except LegacyError as err:  # a disk expansion naming an unknown pair or a size that does not grow
        return DryRun(action.key, err.status, err.message, "satisfied", group.status)
    calls = [{"method": call.method, "path": call.path, "body": call.body} for call in plan]
    return DryRun(action.key, 200, "", "satisfied", group.status, calls)
