"""Terraform provider flows as golangsdk drives them, to replay against any legacy EVS v2 endpoint
(the legacy stand-in directly, or the shim in front of it or of the SDRS simulator).

- `DrsV2Client`: the calls of golangsdk's openstack/drs/v2 packages as they go over the wire: the
  same headers, bodies encoded as Go's encoder does (sorted keys, trailing newline, empty optional
  fields left out), each call's OkCodes enforced exactly (create/update only 202, actions only 200,
  get only 200, delete 200/202/204, list 200/202/204/300), answers decoded with the Go types check
  of golang_types.py. A status outside the OkCodes raises GoError (NotFound for 404, golangsdk's
  ErrDefault404), as golangsdk returns ErrDefault<status>.
- `wait_for_state`: terraform-plugin-sdk's StateChangeConf: Delay, then refresh at once and back off
  (doubling from `initial_interval`, at least `min_timeout`, at most `max_interval`); a target state
  ends the wait, a state neither pending nor target is an error, and so is the timeout.
- `TerraformFlows`: the create/read/update/delete of terraform-provider-flexibleengine's
  flexibleengine_drs_replication_v2 and flexibleengine_drs_replicationconsistencygroup_v2 resources,
  in their order, with their pending/target lists. A GET answered 404 reads as the state "deleted".
  (The provider also stops the DR disk's server before creating a pair; that is ECS, not EVS.)

    async with aiohttp.ClientSession() as session:
        flows = TerraformFlows(DrsV2Client(session, base_url, project_id, token), Timings(timeout=10))
        pair = await flows.create_replication(volume_ids=[production, dr], priority_station="eu-de-01")
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from golang_types import (
    assert_go_decodes_accepted_group,
    assert_go_decodes_created_pair,
    assert_go_decodes_group,
    assert_go_decodes_pair,
)

GROUPS = "os-vendor-replication-consistency-groups"
PAIRS = "os-vendor-replications"
HYPERMETRO = "hypermetro"

GET_OK = (200,)
CREATE_OK = (202,)
UPDATE_OK = (202,)
ACTION_OK = (200,)
DELETE_OK = (200, 202, 204)  # golangsdk's default for DELETE
LIST_OK = (200, 202, 204, 300)  # golangsdk's pagination

# golangsdk's ListOpts, python name -> query name; zero values are not sent.
GROUP_LIST_OPTS = {
    "marker": "marker", "limit": "limit", "sort_key": "sort_key", "sort_dir": "sort_dir", "offset": "offset",
    "changes_since": "changes-since", "name": "name", "status": "status",
    "priority_station": "priority_station", "volume_id": "volume_id",
}  # fmt: skip
PAIR_LIST_OPTS = {
    **GROUP_LIST_OPTS, "replication_consistency_group_id": "replication_consistency_group_id",
    "volume_ids": "volume_ids",
}  # fmt: skip


class GoError(Exception):
    """A status outside the call's OkCodes: golangsdk's ErrDefault<status> / ErrUnexpectedResponseCode."""

    def __init__(self, method: str, url: str, status: int, ok_codes: Sequence[int], body: bytes, request_id: str):
        super().__init__(
            f"Expected HTTP response code {list(ok_codes)} when accessing [{method} {url}], but got {status} "
            f"instead\n{body.decode(errors='replace')} (request id {request_id!r})"
        )
        self.status = status
        self.body = body
        self.request_id = request_id


class NotFound(GoError):
    """golangsdk's ErrDefault404: the only error the provider reads as "deleted"."""


class DecodeError(Exception):
    """An answer golangsdk cannot turn into its struct (not JSON, empty, a nil wrapper object)."""


class MissingInput(Exception):
    """golangsdk refuses the call before sending it ("Missing input for argument [...]")."""


class UnexpectedStateError(Exception):
    def __init__(self, state: str, target: Sequence[str]):
        super().__init__(f"unexpected state {state!r}, wanted target {', '.join(target)!r}")
        self.state = state


class WaitTimeoutError(Exception):
    def __init__(self, last_state: str, target: Sequence[str], timeout: float):
        super().__init__(
            f"timeout while waiting for state to become {', '.join(target)!r} "
            f"(last state: {last_state!r}, timeout: {timeout}s)"
        )
        self.last_state = last_state


def go_json(document: Any) -> bytes:
    """What Go's json.Encoder writes: map keys sorted, no spaces, no HTML escaping, a newline."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class DrsV2Client:
    """golangsdk's drs/v2 replications and replicationconsistencygroups calls, on one endpoint."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, project_id: str, token: str,
        *, user_agent: str = "golangsdk/2.0.0",
    ) -> None:  # fmt: skip
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.project_id = project_id
        self.token = token
        self.user_agent = user_agent

    # -- transport ----------------------------------------------------------------------------

    def url(self, *parts: str, query: dict[str, Any] | None = None) -> str:
        url = "/".join([self.base_url, "v2", self.project_id, *parts])
        sent = {name: str(value) for name, value in (query or {}).items() if value not in (None, "", 0)}
        return f"{url}?{urlencode(sorted(sent.items()))}" if sent else url  # Go's url.Values.Encode

    async def request(
        self, method: str, url: str, ok_codes: Sequence[int], body: Any = None
    ) -> tuple[int, CIMultiDict[str], bytes]:
        headers = {
            "Accept": "application/json", "User-Agent": self.user_agent, "X-Auth-Token": self.token,
            "Accept-Encoding": "gzip",
        }  # fmt: skip
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = go_json(body)
        async with self.session.request(
            method, URL(url, encoded=True), data=data, headers=headers, allow_redirects=False
        ) as response:
            raw = await response.read()
            answer_headers = response.headers.copy()
        if response.status not in ok_codes:
            error = NotFound if response.status == 404 else GoError
            raise error(method, url, response.status, ok_codes, raw, answer_headers.get("X-Request-Id", ""))
        return response.status, answer_headers, raw

    async def _object(self, method: str, url: str, ok_codes: Sequence[int], key: str, body: Any = None) -> Any:
        """A single-object call: JSON decoded whatever the Content-Type, the wrapper object required."""
        _, _, raw = await self.request(method, url, ok_codes, body)
        try:
            document = json.loads(raw)
        except ValueError as err:
            raise DecodeError(f"{method} {url}: {err} (an empty body is Go's EOF)") from err
        value = document.get(key) if isinstance(document, dict) else None
        if value is None:  # golangsdk returns a nil struct; the provider then dereferences it
            raise DecodeError(f"{method} {url}: no {key!r} object in {raw[:200]!r}")
        return value

    async def _list(self, url: str, key: str) -> list[Any]:
        _, headers, raw = await self.request("GET", url, LIST_OK)
        if not headers.get("Content-Type", "").startswith("application/json"):
            raise DecodeError(f"GET {url}: a list answer without a JSON Content-Type stays bytes in golangsdk")
        document = json.loads(raw)
        items = document.get(key) if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise DecodeError(f"GET {url}: no {key!r} list")
        return items

    # -- replication pairs --------------------------------------------------------------------

    async def create_pair(
        self, *, volume_ids: Sequence[str] | None, priority_station: str, name: str = "", description: str = "",
        replication_model: str = HYPERMETRO,
    ) -> dict[str, Any]:  # fmt: skip
        _require(VolumeIDs=volume_ids, PriorityStation=priority_station, ReplicationModel=replication_model)
        body = _omit_empty({"name": name, "description": description, "volume_ids": list(volume_ids or []),
                            "priority_station": priority_station, "replication_model": replication_model},
                           keep=("volume_ids",))
        pair = await self._object("POST", self.url(PAIRS), CREATE_OK, "replication", {"replication": body})
        assert_go_decodes_created_pair(pair)
        return pair

    async def get_pair(self, pair_id: str) -> dict[str, Any]:
        pair = await self._object("GET", self.url(PAIRS, pair_id), GET_OK, "replication")
        assert_go_decodes_pair(pair)
        return pair

    async def list_pairs(self, **opts: Any) -> list[dict[str, Any]]:
        pairs = await self._list(self.url(PAIRS, query=_list_query(opts, PAIR_LIST_OPTS)), "replications")
        for pair in pairs:
            assert_go_decodes_pair(pair)
        return pairs

    async def delete_pair(self, pair_id: str) -> None:
        await self.request("DELETE", self.url(PAIRS, pair_id), DELETE_OK)

    # -- replication consistency groups -------------------------------------------------------

    async def create_group(
        self, *, replication_ids: Sequence[str] | None, priority_station: str, name: str = "",
        description: str = "", replication_model: str = HYPERMETRO,
    ) -> dict[str, Any]:  # fmt: skip
        _require(ReplicationIDs=replication_ids, PriorityStation=priority_station, ReplicationModel=replication_model)
        body = _omit_empty({"name": name, "description": description, "replication_ids": list(replication_ids or []),
                            "priority_station": priority_station, "replication_model": replication_model},
                           keep=("replication_ids",))  # a non-nil empty list is sent
        group = await self._object("POST", self.url(GROUPS), CREATE_OK, "replication_consistency_group",
                                   {"replication_consistency_group": body})
        assert_go_decodes_accepted_group(group)
        return group

    async def get_group(self, group_id: str) -> dict[str, Any]:
        group = await self._object("GET", self.url(GROUPS, group_id), GET_OK, "replication_consistency_group")
        assert_go_decodes_group(group)
        return group

    async def list_groups(self, **opts: Any) -> list[dict[str, Any]]:
        groups = await self._list(self.url(GROUPS, query=_list_query(opts, GROUP_LIST_OPTS)),
                                  "replication_consistency_groups")
        for group in groups:
            assert_go_decodes_group(group)
        return groups

    async def update_group(
        self, group_id: str, *, name: str = "", description: str = "", replication_model: str = "",
        add_replication_ids: Sequence[str] = (), remove_replication_ids: Sequence[str] = (),
    ) -> dict[str, Any]:  # fmt: skip
        body = _omit_empty({"name": name, "description": description, "replication_model": replication_model,
                            "add_replication_ids": list(add_replication_ids),
                            "remove_replication_ids": list(remove_replication_ids)})
        group = await self._object("PUT", self.url(GROUPS, group_id), UPDATE_OK, "replication_consistency_group",
                                   {"replication_consistency_group": body})
        assert_go_decodes_accepted_group(group)
        return group

    async def delete_group(self, group_id: str) -> None:
        await self.request("DELETE", self.url(GROUPS, group_id), DELETE_OK)

    async def action(self, group_id: str, key: str, params: Any = None) -> None:
        """POST .../action `{key: params}`; only 200, body ignored."""
        await self.request("POST", self.url(GROUPS, group_id, "action"), ACTION_OK, {key: params})

    async def stop(self, group_id: str) -> None:
        await self.action(group_id, "os-stop-replication-consistency-group")

    async def sync(self, group_id: str) -> None:
        await self.action(group_id, "os-sync-replication-consistency-group")

    async def failover(self, group_id: str) -> None:
        await self.action(group_id, "os-failover-replication-consistency-group")

    async def reverse(self, group_id: str) -> None:
        await self.action(group_id, "os-reverse-replication-consistency-group")

    async def reprotect(self, group_id: str) -> None:
        await self.action(group_id, "os-reprotect-replication-consistency-group")

    async def extend(self, group_id: str, pair_id: str, new_size: int) -> None:
        """The flat body, the only one the stock golangsdk can send."""
        await self.action(group_id, "os-extend-replication-volumes", {"id": pair_id, "new_size": new_size})


def _require(**arguments: Any) -> None:
    for name, value in arguments.items():
        if value is None or value == "":  # Go: a nil slice or empty string; an empty slice is sent
            raise MissingInput(f"Missing input for argument [{name}]")


def _omit_empty(body: dict[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
    """Go's `omitempty`: empty strings and empty lists are left out."""
    return {name: value for name, value in body.items() if name in keep or value not in ("", [])}


def _list_query(opts: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    unknown = set(opts) - set(names)
    if unknown:
        raise TypeError(f"golangsdk's ListOpts has no {sorted(unknown)}")
    return {names[name]: value for name, value in opts.items()}


# -- StateChangeConf ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    """StateChangeConf's timings. PROVIDER_TIMINGS are the provider's; tests use small ones."""

    delay: float = 0.0  # before the first refresh
    initial_interval: float = 0.005  # Go: 100 ms, doubled after every refresh...
    min_timeout: float = 0.01  # ...but at least this (the provider: 3 s)...
    max_interval: float = 0.1  # ...and at most this (Go: 10 s)
    timeout: float = 10.0  # the whole wait (the provider: the resource's create/update/delete timeout)


PROVIDER_TIMINGS = Timings(delay=5, initial_interval=0.1, min_timeout=3, max_interval=10, timeout=600)

Refresh = Callable[[], Awaitable[tuple[Any, str]]]


async def wait_for_state(refresh: Refresh, *, pending: Sequence[str], target: Sequence[str], timings: Timings) -> Any:
    """terraform-plugin-sdk's WaitForState: the result of the first refresh in a target state."""
    last_state = ""

    async def poll() -> Any:
        nonlocal last_state
        await asyncio.sleep(timings.delay)
        wait = timings.initial_interval  # the first refresh comes at once, then Go doubles before each wait
        while True:
            result, state = await refresh()
            last_state = state
            if state in target:
                return result
            if pending and state not in pending:
                raise UnexpectedStateError(state, target)
            wait = min(max(wait * 2, timings.min_timeout), timings.max_interval)
            await asyncio.sleep(wait)

    try:
        return await asyncio.wait_for(poll(), timings.timeout)
    except TimeoutError:
        raise WaitTimeoutError(last_state, target, timings.timeout) from None


# -- the provider's resources ---------------------------------------------------------------------


class TerraformFlows:
    """What `terraform apply`/`destroy` of the two DRS v2 resources sends, call by call."""

    def __init__(self, client: DrsV2Client, timings: Timings | None = None) -> None:
        self.client = client
        self.timings = timings or Timings()

    def group_refresh(self, group_id: str) -> Refresh:
        async def refresh() -> tuple[Any, str]:
            try:
                group = await self.client.get_group(group_id)
            except NotFound:
                return None, "deleted"
            return group, group["status"]

        return refresh

    def pair_refresh(self, pair_id: str) -> Refresh:
        async def refresh() -> tuple[Any, str]:
            try:
                pair = await self.client.get_pair(pair_id)
            except NotFound:
                return None, "deleted"
            return pair, pair["status"]

        return refresh

    async def wait(self, refresh: Refresh, pending: Sequence[str], target: Sequence[str]) -> Any:
        return await wait_for_state(refresh, pending=pending, target=target, timings=self.timings)

    # -- flexibleengine_drs_replication_v2 ------------------------------------------------------

    async def create_replication(
        self, *, volume_ids: Sequence[str], priority_station: str, name: str = "", description: str = "",
        replication_model: str = HYPERMETRO,
    ) -> dict[str, Any] | None:  # fmt: skip
        """Create, wait (pending creating, target available), read."""
        created = await self.client.create_pair(
            volume_ids=volume_ids, priority_station=priority_station, name=name, description=description,
            replication_model=replication_model,
        )  # fmt: skip
        await self.wait(self.pair_refresh(created["id"]), ["creating"], ["available"])
        return await self.read_replication(created["id"])

    async def read_replication(self, pair_id: str) -> dict[str, Any] | None:
        """GET; None when it is gone (the provider's CheckDeleted drops it from the state)."""
        try:
            return await self.client.get_pair(pair_id)
        except NotFound:
            return None

    async def delete_replication(self, pair_id: str) -> None:
        """DELETE, then wait (pending deleting/available) until GET answers 404."""
        await self.client.delete_pair(pair_id)
        await self.wait(self.pair_refresh(pair_id), ["deleting", "available"], ["deleted"])

    # -- flexibleengine_drs_replicationconsistencygroup_v2 --------------------------------------

    async def create_group(
        self, *, replication_ids: Sequence[str], priority_station: str, name: str = "", description: str = "",
        replication_model: str = HYPERMETRO,
    ) -> dict[str, Any] | None:  # fmt: skip
        """Create, wait (pending creating, target available), Sync, read."""
        created = await self.client.create_group(
            replication_ids=replication_ids, priority_station=priority_station, name=name,
            description=description, replication_model=replication_model,
        )  # fmt: skip
        await self.wait(self.group_refresh(created["id"]), ["creating"], ["available"])
        await self.client.sync(created["id"])
        return await self.read_group(created["id"])

    async def read_group(self, group_id: str) -> dict[str, Any] | None:
        try:
            return await self.client.get_group(group_id)
        except NotFound:
            return None

    async def update_group(
        self, group_id: str, *, name: str | None = None, description: str | None = None,
        replication_model: str | None = None, replication_ids: Sequence[str] | None = None,
    ) -> dict[str, Any] | None:  # fmt: skip
        """Stop; the changed arguments (None: unchanged) as a PUT, the pair ids as the differences to
        what a GET shows; wait (pending updating/creating, target available); Sync; read."""
        await self.client.stop(group_id)
        add: list[str] = []
        remove: list[str] = []
        if replication_ids is not None:
            current = (await self.client.get_group(group_id))["replication_ids"]
            add = [pair_id for pair_id in replication_ids if pair_id not in current]
            remove = [pair_id for pair_id in current if pair_id not in replication_ids]
        await self.client.update_group(
            group_id, name=name or "", description=description or "", replication_model=replication_model or "",
            add_replication_ids=add, remove_replication_ids=remove,
        )  # fmt: skip
        await self.wait(self.group_refresh(group_id), ["updating", "creating"], ["available"])
        await self.client.sync(group_id)
        return await self.read_group(group_id)

    async def delete_group(self, group_id: str) -> None:
        """Stop; GET; PUT removing every pair and wait (pending updating, target available); DELETE;
        wait (pending deleting/available) until GET answers 404."""
        await self.client.stop(group_id)
        group = await self.read_group(group_id)
        if group is None:
            return
        if group["replication_ids"]:
            await self.client.update_group(group_id, remove_replication_ids=group["replication_ids"])
            await self.wait(self.group_refresh(group_id), ["updating"], ["available"])
        await self.client.delete_group(group_id)
        await self.wait(self.group_refresh(group_id), ["deleting", "available"], ["deleted"])
