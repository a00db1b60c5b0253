"""The SDRS simulator driven by the real Huawei Cloud SDK (AK/SK signed requests over loopback).

The SDK is synchronous (requests): its calls run in a thread while the simulator serves from the
test's event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdksdrs.v1 import (
    CreateReplicationRequest,
    CreateReplicationRequestBody,
    CreateReplicationRequestParams,
    DeleteProtectionGroupRequest,
    DeleteReplicationRequest,
    DeleteReplicationRequestBody,
    DeleteReplicationRequestParams,
    ListReplicationsRequest,
    SdrsClient,
    ShowJobStatusRequest,
    ShowProtectionGroupRequest,
    ShowReplicationRequest,
    StartProtectionGroupRequest,
    StartProtectionGroupRequestBody,
    UpdateProtectionGroupNameRequest,
    UpdateProtectionGroupNameRequestBody,
    UpdateProtectionGroupNameRequestParams,
)

from shim.simulator import SdrsSimulator, SimulatorSettings, seed_demo_group
from shim.simulator.server import DEMO_GROUP_ID, DEMO_PROJECT_ID

AK, SK = "SIMULATORACCESSKEY01", "simulator-secret-key-0123456789abcdef"
UNKNOWN_GROUP = "11111111-2222-3333-4444-555555555555"
T = TypeVar("T")


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[SdrsSimulator, str]]:
    # Tokens are restricted to one nobody sends: only a valid signature gets in.
    settings = SimulatorSettings(
        job_init_seconds=0.15, job_run_seconds=0.3, tokens={"no-client-has-this"}, credentials={AK: SK}
    )
    sim = SdrsSimulator(settings)
    seed_demo_group(sim)
    runner = web.AppRunner(sim.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield sim, f"http://{host}:{port}"
    await runner.cleanup()


def sdk_client(endpoint_url: str, ak: str = AK, sk: str = SK) -> SdrsClient:
    config = HttpConfig.get_default_config()
    config.ignore_ssl_verification = True
    config.timeout = (2, 5)
    return (
        SdrsClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(ak, sk, DEMO_PROJECT_ID))
        .with_endpoint(endpoint_url)
        .build()
    )


async def in_thread(call: Callable[[], T]) -> T:
    return await asyncio.to_thread(call)


async def test_show_protection_group_through_sdk_models(endpoint: tuple[SdrsSimulator, str]) -> None:
    sim, url = endpoint
    client = sdk_client(url)
    response = await in_thread(
        lambda: client.show_protection_group(ShowProtectionGroupRequest(server_group_id=DEMO_GROUP_ID))
    )
    group = response.server_group
    assert (group.id, group.name, group.status) == (DEMO_GROUP_ID, "pg-demo", "failed-over")
    assert group.priority_station == "target"
    assert (group.source_availability_zone, group.target_availability_zone) == ("eu-de-01", "eu-de-02")
    assert group.replication_num == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", group.created_at)
    _, _, headers = sim.requests[-1]
    assert headers["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=")


async def test_reprotect_job_progresses_init_running_success(endpoint: tuple[SdrsSimulator, str]) -> None:
    sim, url = endpoint
    client = sdk_client(url)
    body = StartProtectionGroupRequestBody(start_server_group={})
    started = await in_thread(
        lambda: client.start_protection_group(
            StartProtectionGroupRequest(server_group_id=DEMO_GROUP_ID, body=body)
        )
    )
    assert re.fullmatch(r"[0-9a-f]{32}", started.job_id)
    assert sim.action_calls == [(DEMO_PROJECT_ID, DEMO_GROUP_ID, "start-server-group")]

    seen: list[str] = []
    job: Any = None
    for _ in range(200):
        job = await in_thread(lambda: client.show_job_status(ShowJobStatusRequest(job_id=started.job_id)))
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        if job.status in ("SUCCESS", "FAIL"):
            break
        await asyncio.sleep(0.02)
    assert seen == ["INIT", "RUNNING", "SUCCESS"]
    assert job.job_type == "reprotectProtectionGroupNoCG"
    assert job.entities.server_group_id == DEMO_GROUP_ID
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", job.end_time)
    assert job.error_code is None

    group = await in_thread(
        lambda: client.show_protection_group(ShowProtectionGroupRequest(server_group_id=DEMO_GROUP_ID))
    )
    assert (group.server_group.status, group.server_group.priority_station) == ("protected", "target")


async def test_list_replications_by_group(endpoint: tuple[SdrsSimulator, str]) -> None:
    _, url = endpoint
    client = sdk_client(url)
    response = await in_thread(
        lambda: client.list_replications(
            ListReplicationsRequest(server_group_id=DEMO_GROUP_ID, limit=100, offset=0)
        )
    )
    assert response.count == 2
    assert len(response.replications) == 2
    for pair in response.replications:
        assert isinstance(pair.volume_ids, str)
        production, dr = pair.volume_ids.split(",")
        assert production != dr
        assert (pair.fault_level, pair.priority_station, pair.server_group_id) == (
            "0",
            "target",
            DEMO_GROUP_ID,
        )
        assert (pair.status, pair.replication_status) == ("failed-over", "active-stopped")
        assert pair.record_metadata.volume_size == 10


async def test_signed_query_with_characters_that_need_encoding(endpoint: tuple[SdrsSimulator, str]) -> None:
    _, url = endpoint
    client = sdk_client(url)
    for name, count in [("pg-demo", 2), ("demo rep/ü~+&=", 0)]:
        request = ListReplicationsRequest(name=name)
        response = await in_thread(lambda: client.list_replications(request))  # noqa: B023
        assert response.count == count, name


async def test_unknown_group_raises_client_request_exception(endpoint: tuple[SdrsSimulator, str]) -> None:
    _, url = endpoint
    client = sdk_client(url)
    with pytest.raises(ClientRequestException) as caught:
        await in_thread(
            lambda: client.show_protection_group(ShowProtectionGroupRequest(server_group_id=UNKNOWN_GROUP))
        )
    error = caught.value
    assert (error.status_code, error.error_code, error.error_msg) == (
        400,
        "SDRS.1013",
        "Protection group not found",
    )
    assert re.fullmatch(r"[0-9a-f]{32}", error.request_id)


@pytest.mark.parametrize(("ak", "sk"), [(AK, "not-the-secret"), ("UNKNOWNACCESSKEY", SK)])
async def test_bad_signature_is_401(endpoint: tuple[SdrsSimulator, str], ak: str, sk: str) -> None:
    sim, url = endpoint
    client = sdk_client(url, ak, sk)
    with pytest.raises(ClientRequestException) as caught:
        await in_thread(
            lambda: client.show_protection_group(ShowProtectionGroupRequest(server_group_id=DEMO_GROUP_ID))
        )
    assert (caught.value.status_code, caught.value.error_code) == (401, "APIGW.0301")
    assert caught.value.error_msg.startswith("Incorrect IAM authentication information")
    assert len(sim.requests) == 1


def signed_headers_for(
    url: str, method: str, path: str, query: list[tuple[str, str]], body: bytes, sdk_date: str | None = None
) -> dict[str, str]:
    """Sign with the SDK's own Signer, as SdrsClient does."""
    headers = {"Content-Type": "application/json"}
    if sdk_date is not None:
        headers["X-Sdk-Date"] = sdk_date
    request = SdkRequest(
        method=method, schema="http", host=urlsplit(url).netloc, resource_path=path,
        query_params=query, header_params=headers, body=body,
    )  # fmt: skip
    return dict(Signer(BasicCredentials(AK, SK, DEMO_PROJECT_ID)).sign(request).header_params)


async def test_tampered_or_stale_signed_requests_are_401(endpoint: tuple[SdrsSimulator, str]) -> None:
    sim, url = endpoint
    path = f"/v1/{DEMO_PROJECT_ID}/server-groups/{DEMO_GROUP_ID}/action"
    body = b'{"stop-server-group": {}}'
    good = signed_headers_for(url, "POST", path, [], body)
    stale_date = (datetime.now(UTC) - timedelta(minutes=20)).strftime("%Y%m%dT%H%M%SZ")
    stale = signed_headers_for(url, "POST", path, [], body, sdk_date=stale_date)
    async with aiohttp.ClientSession() as session:

        async def post(headers: dict[str, str], data: bytes) -> tuple[int, dict[str, Any]]:
            async with session.post(url + path, data=data, headers=headers) as response:
                return response.status, await response.json()

        status, document = await post(good, b'{"start-server-group": {}}')  # body differs from the signed one
        assert (status, document["error_code"]) == (401, "APIGW.0301")
        status, document = await post(stale, body)
        assert (status, document["error_code"]) == (401, "APIGW.0301")
        assert "expired" in document["error_msg"]
        status, document = await post(good, body)  # untouched: accepted (the group refuses a stop)
        assert (status, document["error"]["code"]) == (400, "SDRS.1002")
    assert sim.state.jobs == {}


async def finished_job(client: SdrsClient, job_id: str) -> Any:
    for _ in range(200):
        job = await in_thread(lambda: client.show_job_status(ShowJobStatusRequest(job_id=job_id)))
        if job.status in ("SUCCESS", "FAIL"):
            return job
        await asyncio.sleep(0.02)
    pytest.fail(f"job {job_id} never ended")


def rename_request(name: str) -> UpdateProtectionGroupNameRequest:
    params = UpdateProtectionGroupNameRequestParams(name=name)
    return UpdateProtectionGroupNameRequest(
        server_group_id=DEMO_GROUP_ID, body=UpdateProtectionGroupNameRequestBody(server_group=params)
    )


async def test_rename_through_the_sdk(endpoint: tuple[SdrsSimulator, str]) -> None:
    sim, url = endpoint
    client = sdk_client(url)
    response = await in_thread(lambda: client.update_protection_group_name(rename_request("pg-renamed_2")))
    group = response.server_group
    assert (group.id, group.name, group.status, group.replication_num) == (
        DEMO_GROUP_ID, "pg-renamed_2", "failed-over", 2,
    )  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", group.updated_at)
    assert sim.write_calls[-1][2] == {"server_group": {"name": "pg-renamed_2"}}

    with pytest.raises(ClientRequestException) as caught:  # a documented error, as the SDK reads it
        await in_thread(lambda: client.update_protection_group_name(rename_request("not allowed!")))
    assert (caught.value.status_code, caught.value.error_code, caught.value.error_msg) == (
        400, "SDRS.0202", "Invalid name",
    )  # fmt: skip


async def test_delete_pairs_then_the_group_through_the_sdk(endpoint: tuple[SdrsSimulator, str]) -> None:
    sim, url = endpoint
    client = sdk_client(url)
    first, second = sim.pair_ids(DEMO_PROJECT_ID, DEMO_GROUP_ID)
    dr_disks = [sim.state.pairs[(DEMO_PROJECT_ID, pair_id)].dr_volume_id for pair_id in (first, second)]

    def delete_pair(pair_id: str) -> Any:
        params = DeleteReplicationRequestParams(server_group_id=DEMO_GROUP_ID, delete_target_volume=False)
        body = DeleteReplicationRequestBody(replication=params)
        return client.delete_replication(DeleteReplicationRequest(replication_id=pair_id, body=body))

    deleted = await in_thread(lambda: delete_pair(first))
    job = await finished_job(client, deleted.job_id)
    assert (job.status, job.job_type) == ("SUCCESS", "deleteReplicationPairNoCG")
    assert (job.entities.server_group_id, job.entities.replication_pair_id) == (DEMO_GROUP_ID, first)
    with pytest.raises(ClientRequestException) as caught:
        await in_thread(lambda: client.show_replication(ShowReplicationRequest(replication_id=first)))
    assert (caught.value.status_code, caught.value.error_code) == (400, "SDRS.1608")

    with pytest.raises(ClientRequestException) as caught:
        await in_thread(
            lambda: client.delete_protection_group(DeleteProtectionGroupRequest(server_group_id=DEMO_GROUP_ID))
        )
    assert (caught.value.status_code, caught.value.error_code, caught.value.error_msg) == (
        400, "SDRS.1010", "Protection group deletion not allowed due to a replication pair",
    )  # fmt: skip

    await finished_job(client, (await in_thread(lambda: delete_pair(second))).job_id)
    deleted = await in_thread(
        lambda: client.delete_protection_group(DeleteProtectionGroupRequest(server_group_id=DEMO_GROUP_ID))
    )
    job = await finished_job(client, deleted.job_id)
    assert (job.status, job.job_type, job.entities.server_group_id) == (
        "SUCCESS", "deleteProtectionGroupNoCG", DEMO_GROUP_ID,
    )  # fmt: skip
    with pytest.raises(ClientRequestException) as caught:
        await in_thread(
            lambda: client.show_protection_group(ShowProtectionGroupRequest(server_group_id=DEMO_GROUP_ID))
        )
    assert caught.value.error_code == "SDRS.1013"
    assert set(dr_disks) <= sim.volumes
    assert [(method, body) for method, _, body in sim.write_calls] == [
        ("DELETE", {"replication": {"server_group_id": DEMO_GROUP_ID, "delete_target_volume": False}}),
        ("DELETE", None),
        ("DELETE", {"replication": {"server_group_id": DEMO_GROUP_ID, "delete_target_volume": False}}),
        ("DELETE", None),
    ]


async def test_create_a_pair_through_the_sdk(endpoint: tuple[SdrsSimulator, str]) -> None:
    sim, url = endpoint
    client = sdk_client(url)
    group_id, volume_id = "5a0c7b1e-3d2f-4e6a-8b9c-0d1e2f3a4b5c", "b6f71149-7b9c-4f36-8ff0-1c4809a6f2c2"
    sim.add_protection_group(DEMO_PROJECT_ID, group_id, status="protected", pair_count=0)
    sim.add_volume(volume_id)
    params = CreateReplicationRequestParams(
        server_group_id=group_id, volume_id=volume_id, name="rep-db", description="data disk"
    )
    request = CreateReplicationRequest(body=CreateReplicationRequestBody(replication=params))
    created = await in_thread(lambda: client.create_replication(request))
    job = await finished_job(client, created.job_id)
    assert (job.status, job.job_type) == ("SUCCESS", "createReplicationPairNoCG")
    pair = (
        await in_thread(
            lambda: client.show_replication(ShowReplicationRequest(replication_id=job.entities.replication_pair_id))
        )
    ).replication
    assert (pair.name, pair.description, pair.server_group_id, pair.status) == (
        "rep-db", "data disk", group_id, "protected",
    )  # fmt: skip
    assert pair.volume_ids.split(",")[0] == volume_id
