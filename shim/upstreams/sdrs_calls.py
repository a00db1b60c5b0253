"""SDRS reads and writes for one legacy request: the caller's token and request id, the error table.

Thin: builds SDRS paths from validated ids only, sends through the pooled `SdrsClient`, and reads
each answer with `parse_answer` (documented shape, or the legacy error the table assigns). A POST is
never sent twice.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel

from shim.translate.sdrs_answers import legacy_error_for_transport, parse_answer, sdrs_error_code
from shim.translate.sdrs_models import (
    JOB_NOT_FOUND_CODES,
    PAIR_NOT_FOUND_CODES,
    Job,
    ReplicationAnswer,
    ReplicationPair,
    ReplicationsAnswer,
    SdrsAnswer,
    SdrsTimeout,
    SdrsTransportError,
    ServerGroup,
    ServerGroupAnswer,
    ServerGroupsAnswer,
)
from shim.translate.signing import KeyPair
from shim.translate.tables import SdrsErrorTable
from shim.upstreams.sdrs_client import SdrsClient

Model = TypeVar("Model", bound=BaseModel)
PAGE_SIZE = 1000  # SDRS's largest page


class SdrsCalls:
    def __init__(
        self, client: SdrsClient, headers: dict[str, str], errors: SdrsErrorTable, audit: dict[str, Any],
        key: KeyPair | None = None,
    ) -> None:
        self._client = client
        self._headers = headers
        self._key = key  # the caller's verified AK/SK pair: every SDRS request is signed with it
        self.errors = errors
        self._audit = audit  # the request's audit record: the last SDRS status and error code

    async def exchange(self, method: str, path: str, body: object | None = None) -> SdrsAnswer:
        """One exchange; a transport failure is raised as such (the caller decides what it means).
        Not retried here: aiohttp itself repeats a GET once when a kept-alive connection drops before
        the answer (RFC 9112 9.3.1), and never a POST."""
        try:
            answer = await self._client.request(method, path, self._headers, body, key=self._key)
        except SdrsTransportError as err:
            self._audit.update(sdrs_status="timeout" if isinstance(err, SdrsTimeout) else "unreachable",
                               sdrs_code=None, sdrs_error=str(err)[:300])
            raise
        self._audit.update(sdrs_status=answer.status,
                           sdrs_code=sdrs_error_code(answer) if answer.status >= 400 else None)
        return answer

    async def send(self, method: str, path: str, doing: str, body: object | None = None) -> SdrsAnswer:
        """One exchange; a transport failure becomes the legacy error for it (503/504)."""
        try:
            return await self.exchange(method, path, body)
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
        found: list[ServerGroup] = []
        while True:
            query = urlencode({"limit": PAGE_SIZE, "offset": len(found)})
            page = await self.read(f"/v1/{project_id}/server-groups?{query}", ServerGroupsAnswer,
                                   "list the protection groups")
            found += page.server_groups
            if not page.server_groups or len(page.server_groups) < PAGE_SIZE:
                return found

    async def pairs(self, project_id: str, group_id: str | None = None) -> list[ReplicationPair]:
        found: list[ReplicationPair] = []
        while True:
            query = {"limit": PAGE_SIZE, "offset": len(found)}
            if group_id is not None:
                query["server_group_id"] = group_id  # type: ignore[assignment]
            page = await self.read(f"/v1/{project_id}/replications?{urlencode(query)}", ReplicationsAnswer,
                                   "list the replication pairs")
            found += page.replications
            if not page.replications or len(page.replications) < PAGE_SIZE:
                return found

    async def pair(self, project_id: str, pair_id: str) -> ReplicationPair | None:
        answer = await self.read_or_none(f"/v1/{project_id}/replications/{pair_id}", ReplicationAnswer,
                                         "read the replication pair", PAIR_NOT_FOUND_CODES)
        return None if answer is None else answer.replication

    async def job(self, project_id: str, job_id: str) -> Job | None:
        return await self.read_or_none(f"/v1/{project_id}/jobs/{job_id}", Job, "read the SDRS job", JOB_NOT_FOUND_CODES)

    async def post(self, path: str, body: object, doing: str) -> SdrsAnswer:
        """One action POST, sent exactly once; transport failures become legacy errors."""
        return await self.send("POST", path, doing, body)
