"""SDRS reads and writes for one legacy request: the caller's token and request id, the error table.

Thin: builds SDRS paths from validated ids only, sends through the pooled `SdrsClient`, and reads
each answer with `parse_answer` (documented shape, or the legacy error the table assigns). A POST is
never sent twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel

from shim.context import ClientGone
from shim.translate.legacy import LegacyError
from shim.translate.sdrs_answers import legacy_error_for_transport, parse_answer, sdrs_error_code
from shim.translate.sdrs_models import (
    JOB_NOT_FOUND_CODES,
    PAIR_NOT_FOUND_CODES,
    Job,
    ReplicationAnswer,
    ReplicationPair,
    ReplicationsAnswer,
    SdrsAnswer,
    SdrsTransportError,
    ServerGroup,
    ServerGroupAnswer,
    ServerGroupsAnswer,
)
from shim.translate.signing import KeyPair
from shim.translate.tables import SdrsErrorTable
from shim.upstreams.sdrs_client import SdrsClient

log = logging.getLogger("shim.sdrs")
Model = TypeVar("Model", bound=BaseModel)
Item = TypeVar("Item", ServerGroup, ReplicationPair)
PAGE_SIZE = 1000  # SDRS's largest page


@dataclass(frozen=True)
class ListBounds:
    """How far one SDRS list may go, whatever SDRS answers: at most `max_items` items (so at most
    max_items / PAGE_SIZE + 1 pages), `seconds` for all pages together, and only while the client
    that asked is still connected."""

    max_items: int = 10000
    seconds: float = 30.0
    client_connected: Callable[[], bool] = lambda: True

    @property
    def max_pages(self) -> int:
        return self.max_items // PAGE_SIZE + 1


class SdrsCalls:
    def __init__(
        self, client: SdrsClient, headers: dict[str, str], errors: SdrsErrorTable, audit: dict[str, Any],
        list_bounds: ListBounds | None = None, *, key: KeyPair | None = None,
        client_signed: tuple[str, ...] | None = None,
    ) -> None:
        self._client = client
        self._headers = headers
        self._key = key  # the caller's verified AK/SK pair: every SDRS request is signed with it...
        self._client_signed = client_signed  # ...over the header names the caller signed (None: the shim's own)
        self.errors = errors
        self._audit = audit  # the request's audit record: the last SDRS status and error code
        self._list_bounds = list_bounds or ListBounds()

    async def exchange(self, method: str, path: str, body: object | None = None, doing: str = "") -> SdrsAnswer:
        """One exchange; a transport failure is raised as such (the caller decides what it means).
        Not retried here: the client repeats a GET once when a kept-alive connection drops before
        the answer (RFC 9112 9.3.1), and never anything else."""
        try:
            answer = await self._client.request(method, path, self._headers, body, key=self._key,
                                               client_signed=self._client_signed)
        except SdrsTransportError as err:
            self._audit.update(sdrs_status=err.label, sdrs_code=None, sdrs_error=str(err)[:300])
            log.warning("SDRS %s while trying to %s (%s)", err.label.replace("_", " "), doing, str(err)[:300],
                        extra={"request_id": self._headers.get("X-Request-Id"), "sdrs_status": err.label})
            raise
        if answer.status >= 500:
            log.warning("SDRS answered HTTP %d while trying to %s", answer.status, doing,
                        extra={"request_id": self._headers.get("X-Request-Id"), "sdrs_status": answer.status})
        self._audit.update(sdrs_status=answer.status,
                           sdrs_code=sdrs_error_code(answer) if answer.status >= 400 else None)
        return answer

    async def send(self, method: str, path: str, doing: str, body: object | None = None) -> SdrsAnswer:
        """One exchange; a transport failure becomes the legacy error for it (503/504)."""
        try:
            return await self.exchange(method, path, body, doing)
        except SdrsTransportError as err:
            raise legacy_error_for_transport(err, doing) from None

    async def read(self, path: str, model: type[Model], doing: str) -> Model:
        return parse_answer(await self.send("GET", path, doing), model, self.errors, doing)

    async def read_or_none(self, path: str, model: type[Model], doing: str, gone: frozenset[str]) -> Model | None:
        """Like `read`, but None when SDRS itself says the resource does not exist (one of the `gone`
        codes). Any other error, a gateway 404 without a code included, is an error: it says nothing
        about the resource (a wrong endpoint, a broken gateway)."""
        answer = await self.send("GET", path, doing)
        if answer.status >= 400 and sdrs_error_code(answer) in gone:
            return None
        return parse_answer(answer, model, self.errors, doing)

    async def group(self, project_id: str, group_id: str) -> ServerGroup:
        path = f"/v1/{project_id}/server-groups/{group_id}"
        return (await self.read(path, ServerGroupAnswer, "read the protection group")).server_group

    async def groups(self, project_id: str) -> list[ServerGroup]:
        async def page(offset: int) -> list[ServerGroup]:
            query = urlencode({"limit": PAGE_SIZE, "offset": offset})
            return (await self.read(f"/v1/{project_id}/server-groups?{query}", ServerGroupsAnswer,
                                    "list the protection groups")).server_groups

        return await self._all_pages(page, "protection groups")

    async def pairs(self, project_id: str, group_id: str | None = None) -> list[ReplicationPair]:
        async def page(offset: int) -> list[ReplicationPair]:
            query: dict[str, str | int] = {"limit": PAGE_SIZE, "offset": offset}
            if group_id is not None:
                query["server_group_id"] = group_id
            return (await self.read(f"/v1/{project_id}/replications?{urlencode(query)}", ReplicationsAnswer,
                                    "list the replication pairs")).replications

        return await self._all_pages(page, "replication pairs")

    async def _all_pages(self, read_page: Callable[[int], Awaitable[list[Item]]], what: str) -> list[Item]:
        """Every page of one SDRS list, within `ListBounds`: a list SDRS cannot finish inside them
        is a legacy error (502 too long or not advancing, 504 too slow), never a truncated list."""
        bounds = self._list_bounds
        found: list[Item] = []
        seen: set[str] = set()
        try:
            async with asyncio.timeout(bounds.seconds):
                for _ in range(bounds.max_pages):
                    if not bounds.client_connected():
                        raise ClientGone(f"the client went away while the shim listed SDRS {what}")
                    page = await read_page(len(found))
                    new = list({item.id: item for item in page if item.id not in seen}.values())
                    if page and not new:  # an SDRS that ignores `offset` sends the first page forever
                        raise LegacyError(502, f"SDRS sent the same page of {what} again (offset {len(found)} "
                                               "ignored); the list cannot be completed.")
                    found += new
                    seen.update(item.id for item in new)
                    if len(found) > bounds.max_items:
                        raise LegacyError(502, f"SDRS lists more than {bounds.max_items} {what}, more than the "
                                               "migration proxy reads (limits.sdrs_list_items).")
                    if len(page) < PAGE_SIZE:
                        return found
        except TimeoutError:
            self._audit.update(sdrs_status="timeout", sdrs_code=None)
            raise LegacyError(504, f"SDRS did not list all {what} in time ({bounds.seconds:g} s, "
                                   "timeouts.sdrs_list).") from None
        raise LegacyError(502, f"SDRS kept sending full pages of {what} past {bounds.max_pages} pages.")

    async def pair(self, project_id: str, pair_id: str) -> ReplicationPair | None:
        answer = await self.read_or_none(f"/v1/{project_id}/replications/{pair_id}", ReplicationAnswer,
                                         "read the replication pair", PAIR_NOT_FOUND_CODES)
        return None if answer is None else answer.replication

    async def job(self, project_id: str, job_id: str) -> Job | None:
        return await self.read_or_none(f"/v1/{project_id}/jobs/{job_id}", Job, "read the SDRS job", JOB_NOT_FOUND_CODES)

    async def post(self, path: str, body: object, doing: str) -> SdrsAnswer:
        """One action POST, sent exactly once; transport failures become legacy errors."""
        return await self.send("POST", path, doing, body)
