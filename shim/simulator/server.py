"""aiohttp shell of the SDRS v1 simulator: routing, auth, request recording and fault injection.

All SDRS behaviour lives in state.py (status machine) and api.py (wire shapes); this module only
moves bytes. Middleware order, outermost first: record the request, stamp X-Request-Id, apply an
injected fault, then gateway checks (unknown API, auth) and SDRS error rendering.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import socket
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from shim.simulator import api
from shim.simulator.errors import UNKNOWN_JOB_HTTP_STATUS, SdrsError
from shim.simulator.faults import Fault, FaultQueue
from shim.simulator.settings import SimulatorSettings
from shim.simulator.state import UNSET, Clock, ProtectionGroup, ReplicationPair, SdrsState, is_resource_id
from shim.translate.signing import KeyPair, SignatureRejected, SignedRequest, is_signed, payload_hash_of_body, verify

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEMO_PROJECT_ID = "0970dd7a1300f5672ff2c003c60ae115"
DEMO_GROUP_ID = "40df180b-9fe2-471a-8c64-1b758dc84189"

_ACTION_PATH = re.compile(r"/v1/([^/]+)/server-groups/([^/]+)/action")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_UNAUTHENTICATED_PATHS = frozenset({"/", "/v1", "/v1/"})  # version discovery
_REQUEST_ID = web.RequestKey("request_id", str)
_CLOSING = web.AppKey("closing", asyncio.Event)  # set on shutdown: releases hanging handlers
_HANG_POLL_SECONDS = 0.02


class SdrsSimulator:
    """In-memory SDRS v1 (the subset the shim uses) behind a real aiohttp application."""

    def __init__(
        self,
        settings: SimulatorSettings | None = None,
        now: Clock = time.monotonic,
        *,
        wall_epoch: float | None = None,
    ) -> None:
        self.settings = settings if settings is not None else SimulatorSettings()
        self.now = now
        # Timestamps shown to clients are wall_epoch + now(): real UTC for a real clock, and
        # deterministic when a test injects both.
        self.wall_epoch = time.time() - now() if wall_epoch is None else wall_epoch
        self.state = SdrsState(self.settings, now, new_job_id=lambda: uuid.uuid4().hex)
        self.faults = FaultQueue()
        self.requests: list[tuple[str, str, CIMultiDict[str]]] = []
        self.action_calls: list[tuple[str, str, str]] = []
        # Every write that reached the simulator, authorised or not: (method, path, JSON body or
        # None when the body is not a JSON object, e.g. absent).
        self.write_calls: list[tuple[str, str, dict[str, Any] | None]] = []

    # -- seeding and test controls ----------------------------------------------------------------

    def add_protection_group(
        self,
        project_id: str,
        group_id: str,
        status: str = "available",
        name: str | None = None,
        source_availability_zone: str = "eu-de-01",
        target_availability_zone: str = "eu-de-02",
        priority_station: str = "source",
        pair_count: int = 1,
        *,
        description: str | None = None,
        volume_size: int = 10,
    ) -> ProtectionGroup:
        """Create a group with `pair_count` replication pairs; the returned object is live state."""
        return self.state.add_group(
            project_id, group_id, status=status, name=name or f"pg-{group_id[:8]}",
            source_availability_zone=source_availability_zone,
            target_availability_zone=target_availability_zone,
            priority_station=priority_station, pair_count=pair_count,
            description=description, volume_size=volume_size,
        )  # fmt: skip

    def group(self, project_id: str, group_id: str) -> ProtectionGroup:
        """The group as of now (statuses derived from the clock); KeyError when unknown."""
        try:
            return self.state.group(project_id, group_id)
        except SdrsError as err:
            raise KeyError(f"no protection group {group_id} in project {project_id}") from err

    def fail_next_job(
        self, project_id: str, group_id: str, error_code: str | None = None, fail_reason: str | None = None
    ) -> None:
        """The next job on that group (or one of its pairs) ends FAIL; error_code defaults per job type."""
        self.state.fail_next_job(project_id, group_id, error_code, fail_reason)

    def pair_ids(self, project_id: str, group_id: str) -> list[str]:
        """The ids of the group's replication pairs as of now, in creation order."""
        return [pair.id for pair in self.group(project_id, group_id).pairs]

    def set_pair_state(
        self,
        project_id: str,
        pair_id: str,
        *,
        status: str = UNSET,
        replication_status: str | None = UNSET,
        progress: int = UNSET,
        fault_level: str = UNSET,
    ) -> ReplicationPair:
        """Give one pair its own state (e.g. `error` while the others are fine, `fault`, a null
        replication_status). `fault_level` stays until changed; the other values show until a job
        on the pair or its group starts or ends, then the pair follows its jobs again."""
        return self.state.set_pair_state(
            project_id, pair_id, status=status, replication_status=replication_status,
            progress=progress, fault_level=fault_level,
        )  # fmt: skip

    def attach_pair(
        self, project_id: str, pair_id: str, protected_instance_id: str, device: str = "/dev/vdb"
    ) -> None:
        """Show the pair attached to a protected instance (such a pair cannot be deleted)."""
        self.state.attach_pair(project_id, pair_id, protected_instance_id, device)

    def add_volume(self, volume_id: str) -> None:
        """An EVS disk that exists, to create a replication pair from."""
        self.state.add_volume(volume_id)

    @property
    def volumes(self) -> set[str]:
        """The EVS disks that exist: every pair's production and DR disk and those added; a pair
        deleted with `delete_target_volume: true` takes its DR disk with it."""
        return self.state.volumes

    def inject(self, fault: Fault) -> None:
        self.faults.add(fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._record, self._stamp_request_id, self._apply_fault, self._gateway]
        )
        app[_CLOSING] = asyncio.Event()
        app.on_shutdown.append(_release_hanging)
        app.router.add_get("/", self._versions)
        app.router.add_get("/v1", self._version)
        app.router.add_get("/v1/", self._version)
        prefix = "/v1/{project_id}"
        app.router.add_get(prefix + "/server-groups", self._list_groups)
        app.router.add_get(prefix + "/server-groups/{group_id}", self._show_group)
        app.router.add_put(prefix + "/server-groups/{group_id}", self._rename_group)
        app.router.add_delete(prefix + "/server-groups/{group_id}", self._delete_group)
        app.router.add_post(prefix + "/server-groups/{group_id}/action", self._group_action)
        app.router.add_get(prefix + "/jobs/{job_id}", self._show_job)
        app.router.add_get(prefix + "/replications", self._list_pairs)
        app.router.add_post(prefix + "/replications", self._create_pair)
        app.router.add_get(prefix + "/replications/{replication_id}", self._show_pair)
        app.router.add_delete(prefix + "/replications/{replication_id}", self._delete_pair)
        app.router.add_post(prefix + "/replications/{replication_id}/action", self._pair_action)
        return app

    # -- middlewares ------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.method, request.path_qs, CIMultiDict(request.headers)))
        action = _ACTION_PATH.fullmatch(request.path)
        if request.method == "POST" and action is not None:
            self.action_calls.append((action[1], action[2], _action_key(body)))
        if request.method in _WRITE_METHODS:
            self.write_calls.append((request.method, request.path, _json_object(body)))
        return await handler(request)

    @web.middleware
    async def _stamp_request_id(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[_REQUEST_ID] = uuid.uuid4().hex
        response = await handler(request)
        if not response.prepared:
            response.headers["X-Request-Id"] = request[_REQUEST_ID]
        return response

    @web.middleware
    async def _apply_fault(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = self.faults.take(request.method, request.path)
        if fault is None:
            return await handler(request)
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.reset:
            return _reset_connection(request)
        if fault.hang:
            return await _hang(request)
        if fault.truncate:
            answer = _fault_response(fault) if fault.status is not None else await handler(request)
            return await _send_truncated(request, answer)
        if fault.status is None:
            return await handler(request)
        return _fault_response(fault)

    @web.middleware
    async def _gateway(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = request[_REQUEST_ID]
        if request.match_info.http_exception is not None:
            # What the Huawei API gateway answers for a path/method it does not publish.
            return _gateway_error(
                404,
                "APIGW.0101",
                "The API does not exist or has not been published in the environment",
                request_id,
            )
        if request.path not in _UNAUTHENTICATED_PATHS:
            reason = self._auth_failure(request, await request.read())
            if reason is not None:
                return _gateway_error(
                    401, "APIGW.0301", f"Incorrect IAM authentication information: {reason}", request_id
                )
        try:
            return await handler(request)
        except SdrsError as err:
            return _json(err.http_status, err.body())

    def _auth_failure(self, request: web.Request, body: bytes) -> str | None:
        """None when the request carries a valid token or AK/SK signature, else why not."""
        token = request.headers.get("X-Auth-Token", "")
        if token and (self.settings.tokens is None or token in self.settings.tokens):
            return None
        if is_signed(request.headers.get("Authorization")):
            keys = {access: KeyPair(access, secret) for access, secret in self.settings.credentials.items()}
            try:
                signed = SignedRequest(request.method, request.rel_url.raw_path, request.rel_url.raw_query_string,
                                       request.headers, payload_hash_of_body(request.headers, body))
                verify(signed, keys, time.time())
            except SignatureRejected as err:
                return str(err)
            return None
        return "decrypt token fail" if token else "x-auth-token not found"

    # -- handlers ---------------------------------------------------------------------------------

    async def _versions(self, request: web.Request) -> web.Response:
        return _json(200, {"versions": [api.version_document(_base_url(request))]})

    async def _version(self, request: web.Request) -> web.Response:
        return _json(200, {"version": api.version_document(_base_url(request))})

    async def _show_group(self, request: web.Request) -> web.Response:
        group = self.state.group(request.match_info["project_id"], request.match_info["group_id"])
        return _json(200, {"server_group": api.render_group(group, self.wall_epoch)})

    async def _list_groups(self, request: web.Request) -> web.Response:
        limit, offset = api.parse_paging(request.query)
        status, name, zone = (_filter(request, key) for key in ("status", "name", "availability_zone"))
        groups = [
            group
            for group in self.state.list_groups(request.match_info["project_id"])
            if status in (None, group.status)
            and api.fuzzy_match(name, group.name)
            and zone in (None, group.production_availability_zone)
        ]
        page = [api.render_group(group, self.wall_epoch) for group in groups[offset : offset + limit]]
        return _json(200, {"server_groups": page, "count": len(groups)})

    async def _group_action(self, request: web.Request) -> web.Response:
        project_id, group_id = request.match_info["project_id"], request.match_info["group_id"]
        if not is_resource_id(group_id):
            raise SdrsError("SDRS.0207")
        action, priority_station = api.parse_group_action(await request.read())
        job = self.state.submit_group_action(project_id, group_id, action, priority_station)
        return _json(200, {"job_id": job.job_id})

    async def _rename_group(self, request: web.Request) -> web.Response:
        project_id, group_id = request.match_info["project_id"], request.match_info["group_id"]
        if not is_resource_id(group_id):
            raise SdrsError("SDRS.0207")
        name = api.parse_group_rename(await request.read())
        group = self.state.rename_group(project_id, group_id, name)
        return _json(200, {"server_group": api.render_group(group, self.wall_epoch)})

    async def _delete_group(self, request: web.Request) -> web.Response:
        job = self.state.submit_group_delete(request.match_info["project_id"], request.match_info["group_id"])
        return _json(200, {"job_id": job.job_id})

    async def _show_job(self, request: web.Request) -> web.Response:
        job = self.state.job(request.match_info["project_id"], request.match_info["job_id"])
        if job is None:
            # Undocumented: the docs never say what an unknown job id returns. 404 + SDRS.0408
            # ("Null job", documented as 500) is this simulator's choice.
            raise SdrsError("SDRS.0408", http_status=UNKNOWN_JOB_HTTP_STATUS)
        return _json(200, api.render_job(job, self.now(), self.wall_epoch))

    async def _list_pairs(self, request: web.Request) -> web.Response:
        limit, offset = api.parse_paging(request.query)
        group_id, name, status = (_filter(request, key) for key in ("server_group_id", "name", "status"))
        if group_id is not None and not is_resource_id(group_id):
            raise SdrsError("SDRS.0207")
        pairs = [
            pair
            for pair in self.state.list_pairs(request.match_info["project_id"])
            if group_id in (None, pair.server_group_id)
            and api.fuzzy_match(name, pair.name)
            and status in (None, pair.status)
        ]
        page = [self._render_pair(pair) for pair in pairs[offset : offset + limit]]
        return _json(200, {"replications": page, "count": len(pairs)})

    async def _show_pair(self, request: web.Request) -> web.Response:
        pair = self.state.pair(request.match_info["project_id"], request.match_info["replication_id"])
        return _json(200, {"replication": self._render_pair(pair)})

    async def _pair_action(self, request: web.Request) -> web.Response:
        project_id, replication_id = request.match_info["project_id"], request.match_info["replication_id"]
        if not is_resource_id(replication_id):
            raise SdrsError("SDRS.0213")
        new_size = api.parse_extend(await request.read())
        job = self.state.submit_extend(project_id, replication_id, new_size)
        return _json(200, {"job_id": job.job_id})

    async def _create_pair(self, request: web.Request) -> web.Response:
        group_id, volume_id, name, description = api.parse_pair_create(await request.read())
        job = self.state.submit_pair_create(
            request.match_info["project_id"], group_id, volume_id, name, description
        )
        return _json(200, {"job_id": job.job_id})

    async def _delete_pair(self, request: web.Request) -> web.Response:
        project_id, replication_id = request.match_info["project_id"], request.match_info["replication_id"]
        if not is_resource_id(replication_id):
            raise SdrsError("SDRS.0213")
        group_id, delete_target_volume = api.parse_pair_delete(await request.read())
        job = self.state.submit_pair_delete(project_id, replication_id, group_id, delete_target_volume)
        return _json(200, {"job_id": job.job_id})

    def _render_pair(self, pair: ReplicationPair) -> dict[str, Any]:
        group = self.state.groups[(pair.project_id, pair.server_group_id)]
        return api.render_pair(pair, group.priority_station, self.wall_epoch)


# -- response helpers -----------------------------------------------------------------------------


def _json(status: int, document: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(document).encode(), content_type="application/json", headers=headers
    )


def _gateway_error(status: int, code: str, message: str, request_id: str) -> web.Response:
    return _json(status, {"error_code": code, "error_msg": message, "request_id": request_id})


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _filter(request: web.Request, key: str) -> str | None:
    """A query filter; empty means absent (the docs treat an empty query_type the same way)."""
    return request.query.get(key) or None


def _action_key(body: bytes) -> str:
    """The action of a recorded POST: its single top-level key, or "" when there is none."""
    document = _json_object(body)
    if document is not None and len(document) == 1:
        return str(next(iter(document)))
    return ""


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    return document if isinstance(document, dict) else None


# -- fault execution ------------------------------------------------------------------------------


def _fault_response(fault: Fault) -> web.Response:
    body = fault.body if isinstance(fault.body, bytes) else json.dumps(fault.body).encode()
    status = 200 if fault.status is None else fault.status
    response = web.Response(status=status, body=body, headers={"Content-Type": "application/json"})
    response.headers.update(fault.headers)
    return response


def _reset_connection(request: web.Request) -> web.Response:
    """Abort with SO_LINGER 0 so the peer sees a TCP RST, not an orderly close."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return _json(500, {})  # never reaches the client: the connection is gone


async def _hang(request: web.Request) -> web.Response:
    """Never answer; return once the client went away or the server shuts down."""
    closing = request.app[_CLOSING]
    while not closing.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        await asyncio.sleep(_HANG_POLL_SECONDS)
    return _json(503, {})  # only reaches a client still connected at shutdown


async def _send_truncated(request: web.Request, answer: web.StreamResponse) -> web.StreamResponse:
    """Headers promising more bytes than are sent, then close the connection."""
    body = getattr(answer, "body", None)
    body = body if isinstance(body, bytes) else b""
    response = web.StreamResponse(status=answer.status, headers=answer.headers)
    response.headers["X-Request-Id"] = request[_REQUEST_ID]
    response.content_length = len(body) + 64
    await response.prepare(request)
    await response.write(body)
    if request.transport is not None:
        request.transport.close()  # flushes what was written, then FIN
    return response


async def _release_hanging(app: web.Application) -> None:
    app[_CLOSING].set()


# -- running alone --------------------------------------------------------------------------------


def seed_demo_group(sim: SdrsSimulator) -> ProtectionGroup:
    """The demo's fixed protection group: failed over to the DR site, ready for a re-protect."""
    return sim.add_protection_group(
        DEMO_PROJECT_ID, DEMO_GROUP_ID, status="failed-over", name="pg-demo",
        source_availability_zone="eu-de-01", target_availability_zone="eu-de-02",
        priority_station="target", pair_count=2,
    )  # fmt: skip


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(
    host: str, port: int, settings: SimulatorSettings, seed_demo: bool, *, allow_non_loopback: bool = False
) -> None:
    """Run a simulator on host:port until cancelled.

    It accepts any token by default, so it refuses non-loopback addresses unless told otherwise.
    """
    if not allow_non_loopback and not is_loopback(host):
        raise ValueError(f"the SDRS simulator only listens on loopback addresses, not {host!r}")
    sim = SdrsSimulator(settings)
    if seed_demo:
        seed_demo_group(sim)
    await serve_until_cancelled(sim.app(), host, port, log, "SDRS simulator")


async def serve_until_cancelled(app: web.Application, host: str, port: int, logger: logging.Logger,
                                what: str) -> None:
    """A stand-in's app on host:port, each address it listens on logged, until cancelled."""
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        for address in runner.addresses:
            address_host, address_port = address[:2]
            shown = f"[{address_host}]" if ":" in address_host else address_host
            logger.info("%s listening on http://%s:%s", what, shown, address_port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
