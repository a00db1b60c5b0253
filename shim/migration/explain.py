"""`shim explain` (pure): which side would own a legacy call and why, which SDRS calls the shim would
make, and what the legacy answer would look like. Nothing is sent: where the answer depends on SDRS's
state (the group's status, whose pair an id is), the explanation says on what.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from yarl import URL

from shim.translate.actions import EXTEND, REVERSE, TRANSLATED_ACTIONS, parse_action_body, requested_extensions
from shim.translate.identity import PairIdentity
from shim.translate.legacy import LegacyError, canonical_id, canonical_project_id
from shim.translate.ownership import require_legacy_ids
from shim.translate.paths import REFUSED_SPELLING, disguises_a_translated_url, names_a_translated_url
from shim.translate.tables import GroupMapping, Mappings
from shim.translate.url_space import MANAGEMENT_PATHS, TRANSLATED_ROUTES

_ROUTES = [(name, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"))
           for name, path in TRANSLATED_ROUTES.items()]
SDRS, LEGACY, SHIM = "SDRS (translated by the shim)", "the legacy endpoint (relayed unchanged)", "the shim itself"


@dataclass
class Explanation:
    method: str
    path: str
    owner: str = LEGACY
    why: list[str] = field(default_factory=list)
    sdrs_calls: list[str] = field(default_factory=list)
    answer: str = "whatever the legacy endpoint answers, byte for byte"
    shadow: str | None = None

    def render(self) -> str:
        lines = [f"{self.method} {self.path}", f"Owner:   {self.owner}"]
        lines += [f"Why:     {self.why[0]}"] + [f"         {line}" for line in self.why[1:]] if self.why else []
        if self.sdrs_calls:
            lines.append("SDRS calls the shim would make:")
            lines += [f"  {call}" for call in self.sdrs_calls]
        else:
            lines.append("SDRS calls the shim would make: none")
        lines.append(f"Answer:  {self.answer}")
        if self.shadow:
            lines.append(f"Shadow:  {self.shadow}")
        lines.append("(nothing was sent: this is an explanation)")
        return "\n".join(lines) + "\n"


def explain(mappings: Mappings, method: str, url: str, body: bytes | None = None) -> Explanation:
    target = URL(url)
    method = method.upper()
    raw_path = target.raw_path or "/"
    shown = raw_path + (f"?{target.raw_query_string}" if target.raw_query_string else "")
    result = Explanation(method, shown)
    if raw_path in MANAGEMENT_PATHS:
        result.owner, result.answer = SHIM, "the shim's own management endpoint (GET only)"
        if method not in ("GET", "HEAD"):
            result.answer = "405 badMethod (Allow: GET, HEAD): the shim's own management endpoint is GET only"
        result.why = ["a management path: never passed through"]
        return result
    if disguises_a_translated_url(raw_path):
        return _refused(result, LegacyError(400, REFUSED_SPELLING))
    route, params = _route(target.path)
    if route is None or not names_a_translated_url(raw_path):
        result.why = ["not a replication consistency group or replication pair URL"]
        return result
    try:
        require_legacy_ids(params["project_id"], params.get("rcg_id") or params.get("replication_id"))
    except LegacyError as err:
        return _refused(result, err)
    project_id = canonical_project_id(params["project_id"])
    if route in ("rcg", "rcg-action"):
        return _about_group(result, mappings, route, project_id, params["rcg_id"], body)
    return _about_pairs_or_lists(result, mappings, route, project_id, params.get("replication_id"))


def _route(path: str) -> tuple[str | None, dict[str, str]]:
    for name, pattern in _ROUTES:
        match = pattern.match(path)
        if match:
            return name, match.groupdict()
    return None, {}


def _refused(result: Explanation, err: LegacyError) -> Explanation:
    result.owner, result.why = SHIM, ["refused before either side sees it"]
    result.answer = _answer_of(err)
    return result


def _answer_of(err: LegacyError) -> str:
    return f"{err.status} {err.message}"


def _entry_reason(mappings: Mappings, entry: GroupMapping) -> str:
    index = list(mappings.groups.values()).index(entry)
    source = {"entry": "its own `mode`", "project": "its project's default (`projects:`)",
              "default": "the default (no mode given)"}[entry.mode_source]
    return (f"consistency-groups.yaml consistency_groups[{index}] maps it to protection group "
            f"{entry.protection_group_id}; mode {entry.mode}, from {source}")


def _text(value: str | None) -> str:
    """A recorded name or description as the legacy JSON would show it (null, or quoted)."""
    return "null" if value is None else repr(value)


def _identity_lines(entry: GroupMapping) -> list[str]:
    """What old clients keep seeing of the group (translate/identity.py), from the entry's `legacy:`."""
    identity = entry.identity
    if identity is None:
        return ["no legacy identity recorded (no `legacy:`): it reads with SDRS's name, description and pair ids"]
    lines = [f"it reads as {_text(identity.name)} (the recorded legacy name, until renamed through the shim), "
             f"description {_text(identity.description)} (until one is written through the shim)"]
    lines += [f"pair {pair.legacy_id} = SDRS {pair.sdrs_id}" + (f" (disk {pair.volume_id})" if pair.volume_id else "")
              for pair in identity.pairs]
    return lines


def _group_reads(entry: GroupMapping) -> list[str]:
    project, group = entry.project_id, entry.protection_group_id
    return [f"GET /v1/{project}/server-groups/{group}", f"GET /v1/{project}/replications?server_group_id={group}"]


def _about_group(result: Explanation, mappings: Mappings, route: str, project_id: str, rcg_id: str,
                 body: bytes | None) -> Explanation:
    entry = mappings.entry(project_id, rcg_id)
    what = f"replication consistency group {canonical_id(rcg_id)}"
    if entry is None:
        if mappings.fully_migrated(project_id):
            result.owner, result.answer = SHIM, "404 itemNotFound: SDRS does not hold it"
            result.why = [f"{what} is not in the mapping file, and project {project_id} is fully migrated "
                          "(its default mode is sdrs: the legacy RCG API is off)"]
        else:
            result.why = [f"{what} is not in the mapping file"]
        return result
    result.why = [_entry_reason(mappings, entry)]
    if entry.mode == "legacy":
        result.why.append("mode legacy: every call about the group goes to the legacy endpoint; SDRS is never asked")
        return result
    if entry.mode == "shadow":
        result.why.append("mode shadow: the legacy endpoint serves the group; the shim compares off the client's path")
        if route == "rcg" and result.method == "GET":
            result.shadow = ("afterwards (at most once per shadow.interval_seconds) the shim reads "
                             + ", ".join(_group_reads(entry)) + " and the group's legacy pairs, and compares "
                             "status, replication_status, priority_station, replication_model, fault_level, "
                             "pair_count and production_volumes")
        elif route == "rcg-action" and result.method == "POST":
            sdrs = _action(Explanation(result.method, result.path), entry, body)
            reads = [call for call in sdrs.sdrs_calls if call.startswith("GET")]
            writes = [call for call in sdrs.sdrs_calls if not call.startswith("GET")]
            would_send = "; ".join(writes) if writes else "no SDRS call (the body names no action it translates)"
            result.shadow = (("afterwards the shim records a dry run: it reads " + ", ".join(reads) + " and notes "
                              if reads else "afterwards the shim records a dry run and notes ")
                             + "what sdrs mode would have sent, " + would_send + ", and answered: " + sdrs.answer
                             + "; nothing but GETs is sent to SDRS")
        return result
    result.owner = SDRS
    result.why += _identity_lines(entry)
    if route == "rcg-action":
        return _action(result, entry, body)
    if result.method in ("GET", "HEAD"):
        result.sdrs_calls = [*_group_reads(entry), f"GET /v1/{entry.project_id}/jobs/<job id> for each job of an "
                             "action this shim started that may still run"]
        result.answer = ('200 {"replication_consistency_group": {...}} in the exact legacy shape (statuses from '
                         "mappings/statuses.yaml, priority_station as the production AZ)")
    elif result.method in ("PUT", "DELETE"):
        result.answer = ("202 carried out through SDRS (README, Updates and deletes of a mapped group); 400 "
                         "badRequest, nothing sent, when a legacy precondition fails (update: status available "
                         "and replication paused; delete: no pairs left, status available or error)")
    else:
        result.answer = "405 badMethod (Allow: GET, HEAD, PUT, DELETE)"
    return result


def _action(result: Explanation, entry: GroupMapping, body: bytes | None) -> Explanation:
    project, group = entry.project_id, entry.protection_group_id
    if result.method != "POST":
        result.answer = "405 badMethod (Allow: POST)"
        return result
    try:
        action = parse_action_body(body or b"")
    except LegacyError as err:
        result.answer = _answer_of(err)
        return result
    translation = TRANSLATED_ACTIONS.get(action.key)
    if translation is None:
        result.answer = f"400 the action {action.key!r} has no SDRS equivalent"
        return result
    result.sdrs_calls = [f"GET /v1/{project}/server-groups/{group} (and the jobs of the previous action)"]
    statuses = " or ".join(sorted(translation.sdrs_statuses))
    if translation.per_pair:
        result.sdrs_calls.append(f"GET /v1/{project}/replications?server_group_id={group}")
        try:
            extensions = requested_extensions(action.value)
        except LegacyError as err:
            result.answer = _answer_of(err)
            return result
        result.sdrs_calls += [f"POST /v1/{project}/replications/{pair_id}/action "
                              f"{json.dumps({'extend-replication': {'new_size': size}})}"
                              for pair_id, size in extensions]
    else:
        params = ('{"priority_station": "<the SDRS site that is not production now>"}'
                  if action.key == REVERSE else json.dumps(translation.sdrs_params(None)))  # type: ignore[arg-type]
        result.sdrs_calls.append(f'POST /v1/{project}/server-groups/{group}/action {{"{translation.sdrs_action}": '
                                 f"{params}}}")
    result.sdrs_calls[-1] += f"  (only when the SDRS group is {statuses})"
    done = (f"; 200 with nothing sent when it is already {' or '.join(sorted(translation.already_done))}"
            if translation.already_done else "")
    wait = " once the disks have grown" if action.key == EXTEND else ""
    result.answer = (f"200 with an empty body{wait}{done}; 400 badRequest ({translation.legacy_requirement}) in "
                     "any other SDRS status; 409 while another action on the group runs")
    return result


def _about_pairs_or_lists(result: Explanation, mappings: Mappings, route: str, project_id: str,
                          pair_id: str | None = None) -> Explanation:
    recorded = mappings.legacy_pair(project_id, pair_id) if pair_id is not None else None
    if recorded is not None:
        return _legacy_pair(result, mappings, *recorded)
    served = mappings.groups_of_project(project_id)
    shadowed = [entry for entry in mappings.entries_of_project(project_id).values() if entry.mode == "shadow"]
    migrated = mappings.fully_migrated(project_id)
    listing = route in ("rcgs", "pairs")
    if migrated:
        result.why = [f"project {project_id} is fully migrated (its default mode is sdrs: the legacy RCG API is off)"]
    elif served:
        result.why = [f"project {project_id} has {len(served)} group(s) in mode sdrs"]
    else:
        result.why = [f"project {project_id} has no group in mode sdrs"]
    if shadowed and not migrated and result.method == "GET":
        result.shadow = (f"the answer shows {len(shadowed)} shadow group(s) of the project; each one it shows is "
                         "compared afterwards (at most once per shadow.interval_seconds)")
    if not served and not migrated:
        return result
    if listing and result.method in ("GET", "HEAD"):
        result.owner = SDRS if migrated else f"both: {LEGACY} for its own groups, SDRS for the mapped ones"
        result.sdrs_calls = [f"GET /v1/{project_id}/server-groups", f"GET /v1/{project_id}/replications"]
        result.answer = ("200 the SDRS groups only (no legacy call)" if migrated else
                         "200 the legacy endpoint's list (its copies of mapped groups hidden) merged with SDRS's, "
                         "filtered, sorted and paged by the shim")
    elif listing and result.method == "POST":
        if migrated:
            result.owner, result.answer = SHIM, "400 badRequest: create groups and pairs in SDRS"
        else:
            result.sdrs_calls = [f"GET /v1/{project_id}/replications"]
            result.answer = ("400 when the body names a pair or disk of a mapped group (or one the shim removed), "
                             "else relayed as sent to the legacy endpoint")
    elif migrated:
        result.owner = "SDRS when the id is a pair of a mapped group, else the shim itself"
        result.sdrs_calls = [f"GET /v1/{project_id}/replications",
                             f"GET /v1/{project_id}/server-groups/<the pair's protection group>"]
        result.answer = "200 the SDRS pair in the legacy shape, else 404 itemNotFound"
    elif result.method in ("GET", "HEAD", "DELETE"):
        result.owner = f"SDRS when the id is a pair of a mapped group, else {LEGACY}"
        result.sdrs_calls = [f"GET /v1/{project_id}/replications (whose pair it is)"]
        result.answer = ("200 the SDRS pair in the legacy shape (DELETE: 400, remove it from its group first) for a "
                         "mapped group's pair, else the "
                         "legacy endpoint's answer")
    return result


def _legacy_pair(result: Explanation, mappings: Mappings, entry: GroupMapping, pair: PairIdentity) -> Explanation:
    """A legacy pair id discovery recorded for a group SDRS serves: its SDRS pair answers, always."""
    result.owner = SDRS
    result.why = [f"legacy pair {pair.legacy_id} of replication consistency group {entry.rcg_id} is SDRS pair "
                  f"{pair.sdrs_id}" + (f" (on disk {pair.volume_id})" if pair.volume_id else ""),
                  _entry_reason(mappings, entry), "its `legacy.pairs` record the pair: the legacy endpoint never "
                  "hears of it"]
    project = entry.project_id
    if result.method in ("GET", "HEAD"):
        result.sdrs_calls = [f"GET /v1/{project}/replications (finds {pair.sdrs_id})",
                             f"GET /v1/{project}/server-groups/{entry.protection_group_id}"]
        result.answer = (f"200 the SDRS pair in the legacy shape, with id {pair.legacy_id} and the recorded name "
                         f"{_text(pair.name)} and description {_text(pair.description)}; 404 once SDRS no longer "
                         "holds it")
    elif result.method == "DELETE":
        result.sdrs_calls = [f"GET /v1/{project}/replications (finds {pair.sdrs_id})",
                             f'DELETE /v1/{project}/replications/{pair.sdrs_id} {{"replication": {{"server_group_id": '
                             f'"{entry.protection_group_id}", "delete_target_volume": false}}}}']
        result.answer = "202 (a pair the shim removed already: 202 at once); 404 once SDRS no longer holds it"
    else:
        result.answer = "405 badMethod (Allow: GET, HEAD, DELETE)"
    return result
