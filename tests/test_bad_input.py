"""Bad input on the translated action route: a clear legacy 400/405, and SDRS never contacted."""

from __future__ import annotations

import pytest

from conftest import GO_HEADERS, PROJECT, RCG, action_url, call


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not JSON"),
        (b"not json", "not JSON"),
        (b'{"os-reprotect-replication-consistency-group": null', "not JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[]", "JSON object"),
        (b'"os-reprotect-replication-consistency-group"', "JSON object"),
        (b"null", "JSON object"),
        (b"{}", "exactly one action key"),
        (b'{"os-reprotect-replication-consistency-group": null, "extra": 1}', "exactly one action key"),
        (b'{"os-reprotect-replication-consistency-group": "now"}', "must be null or {}"),
        (b'{"os-reprotect-replication-consistency-group": 1}', "must be null or {}"),
        (b'{"os-reprotect-replication-consistency-group": []}', "must be null or {}"),
        (b'{"os-reprotect-replication-consistency-group": {"force": true}}', "must be null or {}"),
        (b'{"os-reprotect-replication-consistency-groups": null}', "unknown action"),
        (b'{"start-server-group": {}}', "unknown action"),
        (b"[" * 100_000 + b"]" * 100_000, "larger than"),
        (b"[" * 1500 + b"]" * 1500, "nested too deeply"),
        (b'{"os-reprotect-replication-consistency-group": null, "os-reprotect-replication-consistency-group": {}}',
         "appears twice"),
        (b'{"os-reprotect-replication-consistency-group": ' + b"1" * 5000 + b"}", "not acceptable JSON"),
        (b'{"os-reprotect-replication-consistency-group": null}' + b" " * 20000, "larger than"),
    ],
    ids=lambda value: value[:40].decode("latin-1") if isinstance(value, bytes) else value,
)
async def test_malformed_body_is_400_saying_what_is_wrong(simulator, make_shim, body, says):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)

    reply = await call("POST", action_url(shim), body=body, headers=GO_HEADERS)

    assert reply.status == 400, reply.body
    name, inner = reply.fault()
    assert name == "badRequest"
    assert says in inner["message"]
    assert inner["code"] == "EVS.5400"
    assert sim.requests == []


@pytest.mark.parametrize(
    ("project", "rcg"),
    [
        (PROJECT, "not-a-uuid"),
        (PROJECT, RCG + "0"),
        (PROJECT, "bd35d31b-7ab9-47fc-84c6-3d326c6fa6c%3F"),
        ("0970dd7a1300f5672ff2c003c60ae11g", RCG),
    ],
)
async def test_ids_that_are_not_uuids_are_400_and_never_reach_sdrs(simulator, make_shim, project, rcg):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    url = f"{shim}/v2/{project}/os-vendor-replication-consistency-groups/{rcg}/action"

    reply = await call("POST", url, body=b'{"os-reprotect-replication-consistency-group":null}\n',
                       headers=GO_HEADERS)

    assert reply.status == 400
    message = reply.fault()[1]["message"]
    assert "must be a UUID" in message or "canonical form" in message  # an escape in an id: not its exact route
    assert sim.requests == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_on_action_url_are_405_with_allow_post(simulator, make_shim, method):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)

    reply = await call(method, action_url(shim), headers=GO_HEADERS)

    assert reply.status == 405
    assert reply.headers["Allow"] == "POST"
    assert reply.fault()[0] == "badMethod"
    assert sim.requests == []


async def test_body_limit_is_configurable(simulator, make_shim):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url, limits={"action_body_bytes": 40})

    reply = await call("POST", action_url(shim), body=b'{"os-reprotect-replication-consistency-group":null}\n',
                       headers=GO_HEADERS)

    assert reply.status == 400
    assert "larger than 40 bytes" in reply.fault()[1]["message"]
