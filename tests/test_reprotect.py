"""The reprotect translation end to end: legacy client -> shim -> SDRS simulator, over loopback."""

from __future__ import annotations

import asyncio

import pytest

from conftest import (
    GO_HEADERS,
    GROUP,
    OTHER_PROJECT,
    PROJECT,
    RCG,
    REPROTECT_BODY,
    TOKEN,
    UNMAPPED_RCG,
    action_url,
    call,
)
from shim.simulator import Fault


async def test_reprotect_answers_200_with_empty_body_and_starts_one_sdrs_reprotect(simulator, make_shim):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert reply.status == 200
    assert reply.body == b""
    assert reply.headers["X-Request-Id"].startswith("req-")
    assert reply.headers["X-Openstack-Request-Id"] == reply.headers["X-Request-Id"]
    assert sim.action_calls == [(PROJECT, GROUP, "start-server-group")]
    methods_paths = [(method, path) for method, path, _ in sim.requests]
    assert methods_paths == [
        ("GET", f"/v1/{PROJECT}/server-groups/{GROUP}"),
        ("POST", f"/v1/{PROJECT}/server-groups/{GROUP}/action"),
    ]
    for _, _, headers in sim.requests:
        assert headers["X-Auth-Token"] == TOKEN
        assert headers["X-Request-Id"] == reply.headers["X-Request-Id"]
        assert "Host" not in headers or headers["Host"].startswith("127.0.0.1:")
        assert "golangsdk" not in headers.get("User-Agent", "")


async def test_the_sdrs_action_body_is_start_server_group_and_the_group_ends_protected(simulator, make_shim):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)).status == 200

    group_url = f"{sdrs_url}/v1/{PROJECT}/server-groups/{GROUP}"
    for _ in range(100):  # the simulator's job runs 0.25 s in all
        group = (await call("GET", group_url, headers={"X-Auth-Token": TOKEN})).json()["server_group"]
        if group["status"] == "protected":
            break
        assert group["status"] in ("failed-over", "reprotecting")
        await asyncio.sleep(0.02)
    assert group["status"] == "protected"


async def test_client_request_id_is_kept_and_forwarded(simulator, make_shim):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    headers = {**GO_HEADERS, "X-Openstack-Request-Id": "req-client-chosen-id"}

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=headers)

    assert reply.status == 200
    assert reply.headers["X-Openstack-Request-Id"] == "req-client-chosen-id"
    assert reply.headers["X-Request-Id"] == "req-client-chosen-id"
    assert all(h["X-Request-Id"] == "req-client-chosen-id" for _, _, h in sim.requests)


@pytest.mark.parametrize("body", [
    b'{"os-reprotect-replication-consistency-group": null}',
    b'{"os-reprotect-replication-consistency-group": {}}',
    b'  {"os-reprotect-replication-consistency-group":null}\r\n\n',
])
async def test_reprotect_accepts_null_or_empty_object_with_any_whitespace(simulator, make_shim, body):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    assert (await call("POST", action_url(shim), body=body, headers=GO_HEADERS)).status == 200
    assert len(sim.action_calls) == 1


async def test_error_reprotecting_group_can_be_reprotected_again(simulator, make_shim):
    sim, sdrs_url = simulator
    sim.add_protection_group(PROJECT, "7d0f3a52-1c49-4c3a-9d7e-0b8e2f6a4c10", status="error-reprotecting")
    shim = await make_shim(sdrs=sdrs_url, mapping=[{
        "project_id": PROJECT, "replication_consistency_group_id": RCG,
        "protection_group_id": "7d0f3a52-1c49-4c3a-9d7e-0b8e2f6a4c10"}])

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert reply.status == 200
    assert sim.action_calls == [(PROJECT, "7d0f3a52-1c49-4c3a-9d7e-0b8e2f6a4c10", "start-server-group")]


@pytest.mark.parametrize("status", ["available", "protected", "error-starting", "reprotecting", "failing-over"])
async def test_wrong_status_is_refused_with_400_and_no_action_is_sent(simulator, make_shim, status):
    sim, sdrs_url = simulator
    group_id = "5c9e2d4b-8a61-4f1e-b7c3-2d9a0e6f1b24"
    sim.add_protection_group(PROJECT, group_id, status=status)
    shim = await make_shim(sdrs=sdrs_url, mapping=[{
        "project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": group_id}])

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert reply.status == 400
    name, inner = reply.fault()
    assert name == "badRequest"
    assert "status must be failovered" in inner["message"]
    assert f"'{status}'" in inner["message"]
    assert sim.action_calls == []


async def test_unmapped_group_is_404_and_sdrs_is_not_contacted(simulator, make_shim):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)

    reply = await call("POST", action_url(shim, rcg=UNMAPPED_RCG), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert reply.status == 404
    assert reply.fault()[0] == "itemNotFound"
    assert reply.fault()[1]["code"] == "EVS.5404"
    assert sim.requests == []


async def test_mapping_belongs_to_its_project(simulator, make_shim):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)

    reply = await call("POST", action_url(shim, project=OTHER_PROJECT), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert reply.status == 404
    assert sim.requests == []


@pytest.mark.parametrize("rcg", [RCG.upper(), RCG.replace("-", ""), RCG.replace("-", "").upper()])
async def test_ids_compare_without_regard_to_case_or_dashes(simulator, make_shim, rcg):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    url = action_url(shim, project=PROJECT.upper(), rcg=rcg)
    assert (await call("POST", url, body=REPROTECT_BODY, headers=GO_HEADERS)).status == 200
    assert sim.action_calls == [(PROJECT, GROUP, "start-server-group")]  # the mapping's own spelling


async def test_no_token_is_401(simulator, make_shim):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    headers = {k: v for k, v in GO_HEADERS.items() if k != "X-Auth-Token"}

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=headers)

    assert reply.status == 401
    assert reply.fault()[0] == "unauthorized"
    assert "X-Auth-Token" in reply.fault()[1]["message"]
    assert sim.requests == []


async def test_aksk_signed_request_is_401_saying_why_and_what_to_use(simulator, make_shim):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    headers = {k: v for k, v in GO_HEADERS.items() if k != "X-Auth-Token"}
    headers.update({
        "X-Sdk-Date": "20261127T071230Z",
        "Authorization": "SDK-HMAC-SHA256 Access=AKEXAMPLE, SignedHeaders=host;x-sdk-date, Signature=abc123",
    })

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=headers)

    assert reply.status == 401
    message = reply.fault()[1]["message"]
    assert "signed" in message and "X-Auth-Token" in message
    assert sim.requests == []


async def test_authorization_header_is_never_forwarded_to_sdrs(simulator, make_shim):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    headers = {**GO_HEADERS, "Authorization": "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature=s",
               "Cookie": "session=abc", "Connection": "keep-alive, X-Hop", "X-Hop": "1"}

    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=headers)).status == 200
    for _, _, sent in sim.requests:
        assert "Authorization" not in sent
        assert "Cookie" not in sent
        assert "X-Hop" not in sent


async def test_concurrent_duplicate_reprotect_sends_one_action_and_answers_409(simulator, make_shim):
    sim, sdrs_url = simulator
    # Slow down the first group read so that both requests are in flight together.
    sim.inject(Fault(method="GET", path_suffix=f"/server-groups/{GROUP}", status=None, delay=0.3))
    shim = await make_shim(sdrs=sdrs_url)

    first, second = await asyncio.gather(
        call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS),
        call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS),
    )

    assert sorted([first.status, second.status]) == [200, 409]
    loser = first if first.status == 409 else second
    assert loser.fault()[0] == "conflictingRequest"
    assert sim.action_calls == [(PROJECT, GROUP, "start-server-group")]


async def test_repeat_while_the_first_job_is_init_is_409_and_sends_no_second_action(simulator, make_shim):
    """SDRS itself would accept it: the group stays failed-over until the job leaves INIT."""
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)).status == 200
    assert sim.group(PROJECT, GROUP).status == "failed-over"  # job still INIT

    again = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert again.status == 409
    assert "INIT" in again.fault()[1]["message"]
    assert len(sim.action_calls) == 1


async def test_repeat_while_the_first_job_runs_is_refused(simulator, make_shim):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)).status == 200
    await asyncio.sleep(0.1)  # INIT lasts 0.05 s, RUNNING 0.2 s
    assert sim.group(PROJECT, GROUP).status == "reprotecting"

    again = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert again.status == 409
    assert "RUNNING" in again.fault()[1]["message"]
    assert len(sim.action_calls) == 1


async def test_repeat_after_the_job_ended_is_refused_by_the_status_guard(simulator, make_shim):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)).status == 200
    await asyncio.sleep(0.4)
    assert sim.group(PROJECT, GROUP).status == "protected"

    again = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert again.status == 400
    assert "'protected'" in again.fault()[1]["message"]
    assert len(sim.action_calls) == 1


async def test_reprotect_after_a_failed_job_is_allowed_again(simulator, make_shim):
    sim, sdrs_url = simulator
    sim.fail_next_job(PROJECT, GROUP, error_code="SDRS.1032", fail_reason="DR site server not stopped")
    shim = await make_shim(sdrs=sdrs_url)
    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)).status == 200
    await asyncio.sleep(0.4)
    assert sim.group(PROJECT, GROUP).status == "error-reprotecting"

    again = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert again.status == 200
    assert len(sim.action_calls) == 2


async def test_success_answer_is_exactly_what_golangsdk_accepts(simulator, make_shim):
    """Actions need exactly 200; the body is ignored by the client but must not be an error document."""
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)
    assert (reply.status, reply.body) == (200, b"")
    assert "Set-Cookie" not in reply.headers


async def test_a_job_sdrs_no_longer_knows_does_not_block_the_next_action(simulator, make_shim):
    """SDRS forgets old jobs (404 SDRS.0408): the remembered job is then no obstacle, not a 500."""
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)).status == 200
    sim.inject(Fault(method="GET", path_contains="/jobs/", status=404,
                     body={"error": {"code": "SDRS.0408", "message": "Null job"}}))  # the job read
    await asyncio.sleep(0.4)  # the first job has ended: the group is protected

    again = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert again.status == 400  # the status guard speaks, not a 500 from the forgotten job
    assert "'protected'" in again.fault()[1]["message"]
    assert len(sim.action_calls) == 1
