"""SDRS answers -> legacy answers: every row of the error table, transport faults, and table coverage."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import GO_HEADERS, GROUP, PROJECT, REPROTECT_BODY, action_url, call
from shim.mappings import SDRS_ERRORS_FILE, default_mappings_dir, load_mappings
from shim.simulator import Fault
from shim.translate.legacy import LEGACY_ERROR_STATUSES

# Every code of the SDRS error appendix with the HTTP status it documents (218 codes).
APPENDIX = dict(item.split(":") for item in """
    SDRS.0001:400 SDRS.0002:400 SDRS.0003:400 SDRS.0004:400 SDRS.0005:400 SDRS.0006:500
    SDRS.0007:500 SDRS.0008:500 SDRS.0009:500 SDRS.0010:500 SDRS.0011:500 SDRS.0012:500
    SDRS.0013:500 SDRS.0014:500 SDRS.0015:500 SDRS.0016:500 SDRS.0201:400 SDRS.0202:400
    SDRS.0203:400 SDRS.0204:400 SDRS.0205:400 SDRS.0206:400 SDRS.0207:400 SDRS.0208:400
    SDRS.0209:400 SDRS.0210:400 SDRS.0211:400 SDRS.0212:400 SDRS.0213:400 SDRS.0214:400
    SDRS.0215:400 SDRS.0216:400 SDRS.0217:400 SDRS.0219:400 SDRS.0221:400 SDRS.0222:400
    SDRS.0223:400 SDRS.0224:400 SDRS.0225:400 SDRS.0226:400 SDRS.0301:400 SDRS.0302:400
    SDRS.0303:400 SDRS.0304:400 SDRS.0305:400 SDRS.0306:400 SDRS.0401:500 SDRS.0402:500
    SDRS.0403:500 SDRS.0404:500 SDRS.0405:500 SDRS.0406:500 SDRS.0407:500 SDRS.0408:500
    SDRS.1001:400 SDRS.1002:400 SDRS.1003:400 SDRS.1010:400 SDRS.1011:500 SDRS.1013:400
    SDRS.1014:500 SDRS.1015:400 SDRS.1016:500 SDRS.1017:400 SDRS.1018:400 SDRS.1019:400
    SDRS.1020:400 SDRS.1021:400 SDRS.1022:400 SDRS.1023:400 SDRS.1024:400 SDRS.1025:400
    SDRS.1026:400 SDRS.1027:400 SDRS.1028:400 SDRS.1029:400 SDRS.1030:400 SDRS.1032:400
    SDRS.1301:400 SDRS.1303:400 SDRS.1304:400 SDRS.1305:400 SDRS.1306:400 SDRS.1307:400
    SDRS.1308:400 SDRS.1309:400 SDRS.1310:400 SDRS.1311:400 SDRS.1312:400 SDRS.1313:400
    SDRS.1314:400 SDRS.1315:400 SDRS.1316:400 SDRS.1317:400 SDRS.1318:400 SDRS.1319:400
    SDRS.1320:400 SDRS.1321:400 SDRS.1322:400 SDRS.1323:400 SDRS.1324:400 SDRS.1325:400
    SDRS.1326:400 SDRS.1327:400 SDRS.1328:400 SDRS.1329:400 SDRS.1330:400 SDRS.1331:400
    SDRS.1332:400 SDRS.1333:400 SDRS.1334:400 SDRS.1335:400 SDRS.1336:400 SDRS.1337:400
    SDRS.1338:400 SDRS.1339:400 SDRS.1340:400 SDRS.1341:400 SDRS.1342:400 SDRS.1350:400
    SDRS.1351:400 SDRS.1352:400 SDRS.1353:400 SDRS.1355:400 SDRS.1356:400 SDRS.1357:400
    SDRS.1358:400 SDRS.1359:400 SDRS.1601:400 SDRS.1603:400 SDRS.1604:400 SDRS.1605:400
    SDRS.1606:400 SDRS.1607:400 SDRS.1608:400 SDRS.1609:400 SDRS.1610:400 SDRS.1611:400
    SDRS.1801:400 SDRS.1802:400 SDRS.1803:400 SDRS.1804:400 SDRS.1805:400 SDRS.1806:400
    SDRS.1807:400 SDRS.1808:400 SDRS.1809:400 SDRS.1810:400 SDRS.1811:400 SDRS.1812:400
    SDRS.1813:400 SDRS.1814:400 SDRS.1816:400 SDRS.1817:400 SDRS.1818:400 SDRS.1820:400
    SDRS.1821:400 SDRS.1822:400 SDRS.1823:400 SDRS.1824:400 SDRS.1825:400 SDRS.1826:400
    SDRS.1828:400 SDRS.1830:400 SDRS.1831:400 SDRS.1832:400 SDRS.1900:400 SDRS.1901:400
    SDRS.1902:400 SDRS.1904:500 SDRS.1905:500 SDRS.1906:500 SDRS.1907:400 SDRS.1908:400
    SDRS.1909:400 SDRS.1910:400 SDRS.1911:400 SDRS.1912:500 SDRS.1913:400 SDRS.1914:500
    SDRS.1915:500 SDRS.1916:500 SDRS.1917:500 SDRS.1918:500 SDRS.1919:500 SDRS.1920:500
    SDRS.1921:400 SDRS.1922:400 SDRS.1923:400 SDRS.1924:400 SDRS.1925:400 SDRS.1926:400
    SDRS.1927:400 SDRS.1928:400 SDRS.1929:400 SDRS.1930:400 SDRS.2201:400 SDRS.2202:400
    SDRS.2203:400 SDRS.2204:400 SDRS.2205:400 SDRS.2206:404 SDRS.2207:400 SDRS.2208:400
    SDRS.2209:400 SDRS.2210:400 SDRS.2211:400 SDRS.2212:400 SDRS.2213:400 SDRS.2214:400
    SDRS.2215:400 SDRS.2216:400 SDRS.2217:400 SDRS.2218:400 SDRS.2219:400 SDRS.2220:400
    SDRS.2221:400 SDRS.2222:400
""".split())

FAULT_NAMES = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
               405: "badMethod", 409: "conflictingRequest", 500: "computeFault", 501: "notImplemented",
               502: "badGateway", 503: "serviceUnavailable", 504: "gatewayTimeout"}


def test_error_table_covers_every_appendix_code_with_a_legacy_status():
    table = load_mappings(default_mappings_dir()).errors
    assert len(APPENDIX) == 218
    assert set(table.codes) == set(APPENDIX)
    for code, documented_http in APPENDIX.items():
        row = table.codes[code]
        assert row.sdrs == int(documented_http), code
        assert row.legacy in LEGACY_ERROR_STATUSES, code
    assert table.by_sdrs_class == {"4xx": 400, "5xx": 502}
    assert set(table.legacy_faults) == LEGACY_ERROR_STATUSES


def test_only_sdrs_own_not_found_codes_read_as_404():
    """404 tells Terraform the resource is gone: only SDRS's own "not found" of the group or pair may
    say that. A gateway 404 without an SDRS code (a wrong endpoint) or an invalid id the shim took
    from its mapping is a configuration fault: 502."""
    table = load_mappings(default_mappings_dir()).errors
    for code in ("SDRS.1013", "SDRS.1608"):
        assert table.legacy_status(400, code) == 404
        assert table.legacy_status(404, code) == 404
    for code in ("SDRS.0207", "SDRS.0213"):
        assert table.legacy_status(400, code) == 502
    assert table.legacy_status(404, None) == 502
    assert table.legacy_status(404, "APIGW.0101") == 502
    assert table.legacy_status(429, None) == 503


def test_a_failed_job_is_a_server_failure_unless_its_code_blames_the_request():
    table = load_mappings(default_mappings_dir()).errors
    for code in ("SDRS.1027", "SDRS.1032", "SDRS.0405", "SDRS.9876", None):
        assert table.legacy_status_of_failed_job(code) == 500, code
    for code in ("SDRS.1002", "SDRS.0201", "SDRS.1342"):
        assert table.legacy_status_of_failed_job(code) == 400, code


def test_shipped_error_table_is_the_repository_file():
    raw = yaml.safe_load((default_mappings_dir() / SDRS_ERRORS_FILE).read_text())
    assert raw["codes"]["SDRS.1013"]["legacy"] == 404


def envelope(code: str, message: str, key: str = "error") -> bytes:
    return json.dumps({key: {"code": code, "message": message}}).encode()


GATEWAY_401 = json.dumps({"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information",
                          "request_id": "4f1c"}).encode()

# (which SDRS call fails, SDRS status, SDRS body, legacy status, text the legacy message must contain)
ROWS = [
    ("GET", 404, envelope("SDRS.1013", "Protection group not found", "itemNotFound"), 404, "SDRS.1013"),
    ("GET", 404, b"", 502, "check upstreams.sdrs"),
    ("GET", 404, json.dumps({"error_code": "APIGW.0101", "error_msg": "The API does not exist"}).encode(), 502,
     "APIGW.0101"),
    ("GET", 400, envelope("SDRS.1013", "Protection group not found"), 404, "SDRS.1013"),
    ("GET", 400, envelope("SDRS.0207", "Invalid protection group ID", "badrequest"), 502, "SDRS.0207"),
    ("GET", 401, GATEWAY_401, 401, "APIGW.0301"),
    ("GET", 400, envelope("SDRS.0002", "Invalid tenant token"), 401, "SDRS.0002"),
    ("GET", 403, envelope("SDRS.0005", "No permission for the operation"), 403, "SDRS.0005"),
    ("GET", 400, envelope("SDRS.0001", "Invalid tenant ID"), 400, "SDRS.0001"),
    ("POST", 400, envelope("SDRS.1002", "Operation not allowed"), 400, "SDRS.1002"),
    ("POST", 400, envelope("SDRS.1342", "Current DR site server is not stopped"), 400, "SDRS.1342"),
    ("POST", 400, envelope("SDRS.0305", "Insufficient protection group quota"), 400, "SDRS.0305"),
    ("POST", 500, envelope("SDRS.0013", "Internal error"), 500, "SDRS.0013"),
    ("POST", 500, envelope("SDRS.0008", "Network connection timeout"), 503, "SDRS.0008"),
    ("POST", 500, envelope("SDRS.0404", "Failed to submit the job"), 500, "SDRS.0404"),
    ("POST", 429, json.dumps({"error_code": "APIGW.0308", "error_msg": "throttled"}).encode(), 503, "APIGW.0308"),
    ("POST", 409, envelope("SDRS.9999", "conflict"), 409, "SDRS.9999"),
    ("POST", 500, b"<html>oops</html>", 500, "HTTP 500"),
    ("POST", 502, b"", 502, "HTTP 502"),
    ("POST", 503, b"", 503, "HTTP 503"),
    ("POST", 504, b"", 504, "HTTP 504"),
    ("POST", 405, b"", 502, "HTTP 405"),
    ("POST", 418, b"", 400, "HTTP 418"),
    ("POST", 507, b"", 502, "HTTP 507"),
]


@pytest.mark.parametrize(("failing", "status", "body", "legacy", "says"), ROWS)
async def test_sdrs_error_becomes_the_tables_legacy_error(simulator, make_shim, failing, status, body, legacy, says):
    sim, sdrs_url = simulator
    suffix = "/action" if failing == "POST" else f"/server-groups/{GROUP}"
    sim.inject(Fault(method=failing, path_suffix=suffix, status=status, body=body,
                     headers={"Content-Type": "application/json"}))
    shim = await make_shim(sdrs=sdrs_url)

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert reply.status == legacy
    name, inner = reply.fault()
    assert name == FAULT_NAMES[legacy]
    assert says in inner["message"]
    assert len(sim.action_calls) == (1 if failing == "POST" else 0)
    if legacy == 503:
        assert int(reply.headers["Retry-After"]) > 0


async def test_sdrs_retry_after_is_passed_on_for_429(simulator, make_shim):
    sim, sdrs_url = simulator
    sim.inject(Fault(method="POST", path_suffix="/action", status=429, body=b"", headers={"Retry-After": "17"}))
    shim = await make_shim(sdrs=sdrs_url)
    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)
    assert (reply.status, reply.headers["Retry-After"]) == (503, "17")


@pytest.mark.parametrize(("failing", "body"), [
    ("GET", b"not json"),
    ("GET", b'{"server_group": {"id": "x"}}'),
    ("GET", b'{"server_groups": []}'),
    ("GET", b'{"server_group": {"id": "x", "status": 7}}'),
    ("POST", b""),
    ("POST", b'{"job": "x"}'),
    ("POST", b'{"job_id": ""}'),
    ("POST", b'[{"job_id": "abc"}]'),
])
async def test_success_status_with_undocumented_shape_is_502(simulator, make_shim, failing, body):
    sim, sdrs_url = simulator
    suffix = "/action" if failing == "POST" else f"/server-groups/{GROUP}"
    sim.inject(Fault(method=failing, path_suffix=suffix, status=200, body=body,
                     headers={"Content-Type": "application/json"}))
    shim = await make_shim(sdrs=sdrs_url)

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert reply.status == 502
    assert "not the documented shape" in reply.fault()[1]["message"]
    assert len(sim.action_calls) == (1 if failing == "POST" else 0)


async def test_sdrs_unreachable_is_503_with_retry_after(make_shim, unused_tcp_port):
    shim = await make_shim(sdrs=f"http://127.0.0.1:{unused_tcp_port}")
    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)
    assert reply.status == 503
    assert reply.fault()[0] == "serviceUnavailable"
    assert "unreachable" in reply.fault()[1]["message"]
    assert int(reply.headers["Retry-After"]) > 0


@pytest.mark.parametrize("failing", ["GET", "POST"])
async def test_sdrs_too_slow_is_504_and_the_action_is_not_resent(simulator, make_shim, failing):
    sim, sdrs_url = simulator
    suffix = "/action" if failing == "POST" else f"/server-groups/{GROUP}"
    sim.inject(Fault(method=failing, path_suffix=suffix, hang=True))
    shim = await make_shim(sdrs=sdrs_url, timeouts={"sdrs": {"connect": 1, "read": 0.3, "total": 1}})

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert reply.status == 504
    assert reply.fault()[0] == "gatewayTimeout"
    assert len(sim.action_calls) == (1 if failing == "POST" else 0)


@pytest.mark.parametrize("fault", [Fault(method="POST", path_suffix="/action", reset=True),
                                   Fault(method="POST", path_suffix="/action", status=200, truncate=True,
                                         body=b'{"job_id": "0123456789abcdef0123456789abcdef"}')])
async def test_sdrs_connection_lost_mid_answer_is_503_and_the_action_is_not_resent(simulator, make_shim, fault):
    sim, sdrs_url = simulator
    sim.inject(fault)
    shim = await make_shim(sdrs=sdrs_url)

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert reply.status == 503
    assert sim.action_calls == [(PROJECT, GROUP, "start-server-group")]


@pytest.mark.parametrize("fault", [Fault(method="POST", path_suffix="/action", hang=True),
                                   Fault(method="POST", path_suffix="/action", reset=True),
                                   Fault(method="POST", path_suffix="/action", status=504, body=b""),
                                   Fault(method="POST", path_suffix="/action", status=200, body=b"{}")])
async def test_after_an_action_with_unknown_outcome_the_group_is_not_actioned_again(simulator, make_shim, fault):
    sim, sdrs_url = simulator
    sim.inject(fault)
    shim = await make_shim(sdrs=sdrs_url, timeouts={"sdrs": {"connect": 1, "read": 0.3, "total": 1}},
                           actions={"settle_seconds": 30})
    first = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)
    assert first.status in (502, 503, 504)

    retry = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert retry.status == 409
    assert "not known yet" in retry.fault()[1]["message"]
    assert 0 < int(retry.headers["Retry-After"]) <= 30
    assert len(sim.action_calls) == 1


async def test_after_sdrs_refused_an_action_a_retry_is_sent(simulator, make_shim):
    sim, sdrs_url = simulator
    sim.inject(Fault(method="POST", path_suffix="/action", status=400,
                     body=envelope("SDRS.1342", "Current DR site server is not stopped")))
    shim = await make_shim(sdrs=sdrs_url)
    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)).status == 400

    retry = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)

    assert retry.status == 200
    assert len(sim.action_calls) == 2


@pytest.mark.parametrize("second", ["action", "update", "delete"])
async def test_an_expired_token_on_the_previous_jobs_read_is_the_clients_401(simulator, make_shim, second):
    """golangsdk re-authenticates only on 401: an SDRS 401 while the shim reads the previous action's job
    (an action or write after one) is the client's 401, not a 503 that ends the client's run."""
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)).status == 200
    sim.inject(Fault(method="GET", path_contains="/jobs/", status=401, times=None,
                     body={"error": {"code": "APIGW.0301", "message": "Incorrect IAM authentication information"}}))
    group_url = action_url(shim).rsplit("/", 1)[0]
    if second == "action":
        reply = await call("POST", action_url(shim), headers=GO_HEADERS,
                           body=b'{"os-stop-replication-consistency-group":null}\n')
    elif second == "update":
        reply = await call("PUT", group_url, headers=GO_HEADERS,
                           body=b'{"replication_consistency_group":{"description":"x"}}\n')
    else:
        reply = await call("DELETE", group_url, headers=GO_HEADERS)

    assert reply.status == 401, reply.body
    assert reply.fault()[0] == "unauthorized"
    assert len(sim.action_calls) == 1 and [call for call in sim.write_calls if call[0] != "POST"] == []
