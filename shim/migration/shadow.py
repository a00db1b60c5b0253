"""Shadow mode at run time: observe the legacy answer of a call about a `shadow` group while it is
relayed, then, off the client's path, compare it with what SDRS would have answered (reads) or judge
what sdrs mode would have done (actions, a dry run: nothing is sent to SDRS but GETs).

The client's answer is the legacy endpoint's, streamed as passthrough streams it: the observation
keeps a bounded copy of the bytes as they go by (`Observation`), and the work starts once the answer
is complete. It is bounded: at most one comparison per group per `shadow.interval_seconds` (per
process), at most `shadow.max_concurrent` tasks (one more is dropped and counted), answers up to
`shadow.max_answer_bytes`. Every outcome is recorded three ways: the `shim_shadow_*` metrics, one
`shim.shadow` log line, and the group's record in the state store (shim/migration/records.py). A
failure here (SDRS down, the store down, a bug) is logged and counted, never seen by a client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from prometheus_client import CollectorRegistry

from shim.config import Settings
from shim.mappings import Mappings
from shim.migration.compare import COMPARED_FIELDS, differences, legacy_facts, sdrs_facts, shadow_groups_in
from shim.migration.dry_run import DryRun, dry_run, needs_pairs, parse_for_dry_run
from shim.migration.metrics import ShadowMetrics
from shim.migration.records import Comparison, shadow_key, with_comparison, with_dry_run
from shim.state.store import StateStore, StoreUnavailable
from shim.translate.actions import ActionRequest
from shim.translate.legacy import PAIR_COLLECTION, RCG_COLLECTION, LegacyError, id_key
from shim.translate.tables import GroupMapping, StatusTable
from shim.upstreams.sdrs_calls import SdrsCalls

log = logging.getLogger("shim.shadow")

# (path, query) -> (HTTP status, decoded JSON or None): a GET to the legacy endpoint made with the
# credentials of the client whose call is shadowed.
LegacyReader = Callable[[str, dict[str, str]], Awaitable[tuple[int, Any]]]
READ_ROUTES = {"rcg": "GET group", "rcgs": "GET groups", "pair": "GET pair", "pairs": "GET pairs"}
ACTION_ROUTE = "rcg-action"


@dataclass
class Observation:
    """A `RelayObserver`: bounded copies of the request body and the answer, and the answer's status
    once it is complete. Appending is all it does while the bytes stream."""

    cap: int  # bytes kept of each direction; past it the copy is dropped and marked too large
    request_cap: int
    request_body: bytearray = field(default_factory=bytearray)
    answer: bytearray = field(default_factory=bytearray)
    request_too_large: bool = False
    answer_too_large: bool = False
    status: int | None = None

    def request_chunk(self, chunk: bytes) -> None:
        if not self.request_too_large:
            self.request_too_large = not _kept_within(self.request_body, chunk, self.request_cap)

    def answer_chunk(self, chunk: bytes) -> None:
        if not self.answer_too_large and self.status is None:
            self.answer_too_large = not _kept_within(self.answer, chunk, self.cap)

    def answer_complete(self, status: int) -> None:
        if self.status is None:
            self.status = status


def _kept_within(copy: bytearray, chunk: bytes, cap: int) -> bool:
    """Append `chunk` to `copy` while it stays within `cap` bytes; past it, drop the copy (False)."""
    if len(copy) + len(chunk) > cap:
        copy.clear()
        return False
    copy += chunk
    return True


@dataclass(frozen=True)
class ShadowWatch:
    """One legacy call being observed: what it is about and what was seen of it."""

    kind: Literal["read", "action"]
    route: str
    entries: Mapping[str, GroupMapping]  # id_key(RCG) -> the shadow entries the answer may show
    observation: Observation


class ShadowRunner:
    """Decides which calls to observe, runs the work after the answer and keeps its tasks, so that
    shutdown cancels and awaits them."""

    def __init__(self, settings: Callable[[], Settings], mappings: Callable[[], Mappings], store: StateStore,
                 registry: CollectorRegistry) -> None:
        self._settings = settings
        self._mappings = mappings
        self._store = store
        self.metrics = ShadowMetrics(registry)
        self._last_started: dict[str, float] = {}  # shadow_key -> monotonic time of its last comparison
        self._tasks: set[asyncio.Task[None]] = set()
        self._writing: dict[str, asyncio.Lock] = {}  # shadow_key -> one read-modify-write at a time here

    # -- on the client's path: cheap decisions only ---------------------------------------------

    def watch(self, mappings: Mappings, route: str | None, method: str, project_id: str, rcg_id: str | None
              ) -> ShadowWatch | None:
        """A watch for this legacy call when it is about shadow groups and there is room for the work."""
        shadow = mappings.shadow_by_project.get(id_key(project_id))
        if not shadow or route is None:
            return None
        settings = self._settings()
        if route == ACTION_ROUTE and method == "POST":
            entry = shadow.get(id_key(rcg_id or ""))
            if entry is None:
                return None
            kind: Literal["read", "action"] = "action"
            entries: Mapping[str, GroupMapping] = {id_key(entry.rcg_id): entry}
        elif route in READ_ROUTES and method == "GET":
            entries = shadow
            if route == "rcg":
                entry = shadow.get(id_key(rcg_id or ""))
                if entry is None:
                    return None
                entries = {id_key(entry.rcg_id): entry}
            if not any(self._due(entry) for entry in entries.values()):
                self.metrics.skipped.labels("rate_limited").inc()
                return None
            kind = "read"
        else:
            return None
        if len(self._tasks) >= settings.shadow.max_concurrent:
            self.metrics.skipped.labels("busy").inc()
            return None
        cap = settings.shadow.max_answer_bytes
        return ShadowWatch(kind, route, entries, Observation(cap, settings.limits.action_body_bytes))

    def start(self, watch: ShadowWatch, calls: SdrsCalls, legacy: LegacyReader, request_id: str | None) -> None:
        """After the answer is complete: schedule the comparison or dry run (nothing is awaited here)."""
        if watch.observation.status is None:
            return  # the answer was cut off or never relayed: nothing to compare
        if len(self._tasks) >= self._settings().shadow.max_concurrent:
            self.metrics.skipped.labels("busy").inc()
            return
        work: Coroutine[Any, Any, None] = (
            self._dry_run(watch, calls, request_id) if watch.kind == "action"
            else self._compare_answer(watch, calls, legacy, request_id)
        )
        task = asyncio.get_running_loop().create_task(self._guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def skip(self, reason: str) -> None:
        self.metrics.skipped.labels(reason).inc()

    async def close(self) -> None:
        """Cancel the work still running and wait for it (no task outlives the app)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def running(self) -> int:
        return len(self._tasks)

    def _due(self, entry: GroupMapping) -> bool:
        last = self._last_started.get(shadow_key(entry.project_id, entry.protection_group_id))
        return last is None or time.monotonic() - last >= self._settings().shadow.interval_seconds

    def _claim(self, entry: GroupMapping) -> bool:
        """Due, and from now on not due for `interval_seconds` (no await in between: one check)."""
        if not self._due(entry):
            return False
        self._last_started[shadow_key(entry.project_id, entry.protection_group_id)] = time.monotonic()
        return True

    # -- off the client's path ----------------------------------------------------------------

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:  # never "Task exception was never retrieved"; never the client's problem
            log.exception("shadow work failed")

    async def _compare_answer(self, watch: ShadowWatch, calls: SdrsCalls, legacy: LegacyReader,
                              request_id: str | None) -> None:
        observation = watch.observation
        if observation.answer_too_large:
            return self.skip("too_large")
        if observation.status != 200:
            return self.skip("legacy_status")
        document = decoded_json(bytes(observation.answer), observation.cap)
        if document is None:
            return self.skip("unreadable")
        for key, group_document in shadow_groups_in(watch.route, document, watch.entries).items():
            entry = watch.entries[key]
            if not self._claim(entry):
                self.skip("rate_limited")
                continue
            comparison = await compare_group(entry, group_document, calls, legacy, self._mappings().statuses,
                                             READ_ROUTES[watch.route], request_id)
            await self._record_comparison(entry, comparison)

    async def _record_comparison(self, entry: GroupMapping, comparison: Comparison) -> None:
        self.metrics.comparisons.labels(comparison.result).inc()
        if comparison.result != "error":
            for name in COMPARED_FIELDS:
                self.metrics.fields.labels(name, "mismatch" if name in comparison.differences else "match").inc()
        level = logging.INFO if comparison.result == "match" else logging.WARNING
        log.log(level, "shadow comparison: %s", comparison.result, extra={
            **_ids(entry), "result": comparison.result, "trigger": comparison.trigger,
            "differences": comparison.differences, "error": comparison.error, "request_id": comparison.request_id})
        await self._update(entry, lambda document: with_comparison(document, comparison))

    async def _dry_run(self, watch: ShadowWatch, calls: SdrsCalls, request_id: str | None) -> None:
        (entry,) = watch.entries.values()
        observation = watch.observation
        failed = False
        if observation.request_too_large:
            limit = observation.request_cap
            judged = DryRun(None, 400, f"Malformed request body: larger than {limit} bytes.", "not checked")
        else:
            parsed = parse_for_dry_run(bytes(observation.request_body))
            judged, failed = (parsed, False) if isinstance(parsed, DryRun) else await _judge(parsed, entry, calls)
        outcome: Literal["agree", "disagree", "error"] = (
            "error" if failed else "agree" if judged.would_answer == observation.status else "disagree")
        self.metrics.dry_runs.labels(outcome).inc()
        record = {**judged.to_document(), "at": time.time(), "legacy_status": observation.status,
                  "request_id": request_id}
        log.log(logging.INFO if outcome == "agree" else logging.WARNING, "shadow dry run: %s", outcome, extra={
            **_ids(entry), "outcome": outcome, "action": judged.action, "legacy_status": observation.status,
            "would_answer": judged.would_answer, "reason": judged.message, "precondition": judged.precondition,
            "sdrs_status": judged.sdrs_status, "planned_calls": judged.planned_calls, "request_id": request_id})
        await self._update(entry, lambda document: with_dry_run(document, outcome, record))

    async def _update(self, entry: GroupMapping, change: Callable[[dict[str, Any] | None], dict[str, Any]]) -> None:
        """Read-modify-write the group's shadow record; a store failure is logged, never raised."""
        key = shadow_key(entry.project_id, entry.protection_group_id)
        try:
            async with self._writing.setdefault(key, asyncio.Lock()):
                document = await self._store.get(key)
                await self._store.put(key, {**change(document), "rcg_id": entry.rcg_id,
                                            "protection_group_id": entry.protection_group_id})
        except StoreUnavailable as err:
            log.warning("state store unavailable: the shadow result is in the log and metrics only",
                        extra={**_ids(entry), "error": str(err)[:300]})


async def _judge(action: ActionRequest, entry: GroupMapping, calls: SdrsCalls) -> tuple[DryRun, bool]:
    """Read the SDRS group (and its pairs for a disk expansion) and judge the action against it; True
    when SDRS could not be read (unreachable, 5xx). SDRS's own refusal of the read (the group is
    unknown: 404) is what sdrs mode would have answered, so it is a judgement, not a failure."""
    try:
        group = await calls.group(entry.project_id, entry.protection_group_id)
        pairs = await calls.pairs(entry.project_id, entry.protection_group_id) if needs_pairs(action) else []
    except LegacyError as err:
        return DryRun(action.key, err.status, err.message, "not checked"), err.status >= 500
    return dry_run(action, entry, group, pairs), False


async def compare_group(
    entry: GroupMapping, group_document: Mapping[str, Any] | None, calls: SdrsCalls, legacy: LegacyReader,
    statuses: StatusTable, trigger: str, request_id: str | None,
) -> Comparison:
    """One comparison: the legacy group (as the client was shown it, else read) and its pairs, beside
    SDRS's group and pairs as sdrs mode would show them. Reads only."""
    project_id, rcg_id, group_id = entry.project_id, entry.rcg_id, entry.protection_group_id
    try:
        # SDRS first: while it is down, the legacy endpoint is not asked for anything more.
        sdrs_group, sdrs_pairs = await asyncio.gather(calls.group(project_id, group_id),
                                                      calls.pairs(project_id, group_id))
        legacy_reads = [legacy(f"/v2/{project_id}/{PAIR_COLLECTION}", {"replication_consistency_group_id": rcg_id})]
        if group_document is None:
            legacy_reads.append(legacy(f"/v2/{project_id}/{RCG_COLLECTION}/{rcg_id}", {}))
        (pairs_status, pairs_document), *group_read = await asyncio.gather(*legacy_reads)
        if group_read:
            status, document = group_read[0]
            group_document = _legacy_item(status, document, "replication_consistency_group", "group")
        legacy_pairs = _legacy_item(pairs_status, pairs_document, "replications", "group's pair list")
        if not isinstance(legacy_pairs, list):
            raise LegacyError(502, "the legacy endpoint's pair list has no 'replications' list")
        legacy_side = legacy_facts(cast(Mapping[str, Any], group_document), legacy_pairs)  # read above if None
        sdrs_side = sdrs_facts(rcg_id, sdrs_group, sdrs_pairs, statuses, legacy_side["production_volumes"])
    except LegacyError as err:
        return Comparison(time.time(), "error", trigger, error=err.message[:500], request_id=request_id)
    found = differences(legacy_side, sdrs_side)
    return Comparison(time.time(), "mismatch" if found else "match", trigger, found, request_id=request_id)


def _legacy_item(status: int, document: Any, key: str, what: str) -> Any:
    if status != 200 or not isinstance(document, dict) or key not in document:
        raise LegacyError(502, f"the legacy endpoint answered the {what} read with HTTP {status}")
    return document[key]


def decoded_json(body: bytes, cap: int) -> Any:
    """The answer as JSON, or None. The passthrough relays compressed answers as they are (gzip, zlib),
    so those are inflated here, up to `cap` bytes."""
    if body[:2] == b"\x1f\x8b" or body[:1] == b"\x78":
        inflater = zlib.decompressobj(wbits=47)  # 32 + 15: a gzip or zlib header, detected
        try:
            body = inflater.decompress(body, cap + 1)
        except zlib.error:
            return None
        if len(body) > cap:
            return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _ids(entry: GroupMapping) -> dict[str, str]:
    return {"project_id": entry.project_id, "rcg_id": entry.rcg_id, "protection_group_id": entry.protection_group_id}
