"""How log lines reach their stream: the access line built directly, the buffered sink, and nothing
lost or leaked on the way (in process and from a real `shim serve`)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from conftest import GO_HEADERS, PROJECT, TOKEN
from processes import Spawn, spawner, write_config
from shim.web.logs import JsonFormatter, LineSink, TextFormatter

# Values that exercise the escaping: quotes, backslashes, non-ASCII, an absent request id or route.
ACCESS_FIELDS = [
    {"request_id": "req-1", "method": "GET", "path": "/v2/p/volumes", "status": 200, "duration_ms": 1.5,
     "route": "passthrough"},
    {"request_id": None, "method": "PATCH", "path": '/v2/p/a"b\\c/\u00e9%20x', "status": 400, "duration_ms": 0.001,
     "route": None},
    {"request_id": "r=1 two", "method": "DELETE", "path": "/", "status": 503, "duration_ms": 12345.678,
     "route": "translated"},
    {"request_id": "req-2", "method": "GET", "path": "/v2/p/x", "status": 200, "duration_ms": 2.0,
     "route": "passthrough", "upstream_request_id": 'req-"legacy"-\u00e9'},
]


def _record(level: int, fields: dict[str, object]) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "shim.access", "levelno": level, "levelname": logging.getLevelName(level),
                                  "msg": "access", "args": (), **fields})


@pytest.mark.parametrize("fields", ACCESS_FIELDS)
@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_the_direct_access_line_is_the_json_line_the_formatter_writes(fields, level):
    formatter = JsonFormatter()
    direct = formatter.access_line(level, "shim.access", fields)
    assert direct.endswith("\n") and direct.count("\n") == 1
    built, formatted = json.loads(direct), json.loads(formatter.format(_record(level, fields)))
    assert list(built) == list(formatted)  # same keys, same order
    del built["time"], formatted["time"]
    assert built == formatted
    assert direct.startswith('{"time": "') and '", "level": "' in direct  # json.dumps' own separators


@pytest.mark.parametrize("fields", ACCESS_FIELDS)
def test_the_direct_access_line_is_the_text_line_the_formatter_writes(fields):
    formatter = TextFormatter()
    direct = formatter.access_line(logging.INFO, "shim.access", fields)
    formatted = formatter.format(_record(logging.INFO, fields))
    assert direct.split(" ", 1)[1] == formatted.split(" ", 1)[1] + "\n"  # all but the time


async def test_buffered_lines_wait_for_the_timer_and_a_warning_writes_them_first():
    stream = io.StringIO()
    sink = LineSink(stream, buffered=True)
    sink.write("one\n")
    sink.write("two\n")
    assert stream.getvalue() == ""  # waiting for the batch
    sink.write("warning\n", urgent=True)
    assert stream.getvalue() == "one\ntwo\nwarning\n"  # in order, at once
    sink.write("three\n")
    await asyncio.sleep(LineSink.FLUSH_SECONDS * 3)
    assert stream.getvalue().endswith("warning\nthree\n")


async def test_a_full_batch_is_written_without_waiting_for_the_timer():
    stream = io.StringIO()
    sink = LineSink(stream, buffered=True)
    line = "x" * 1023 + "\n"
    for _ in range(LineSink.FLUSH_BYTES // len(line)):
        sink.write(line)
    assert stream.getvalue().count("\n") == LineSink.FLUSH_BYTES // len(line)


def test_lines_still_waiting_at_exit_are_written():
    """A process that ends right after logging (the timer never fires) still writes every line."""
    script = (
        "import asyncio, logging\n"
        "from shim.web.logs import configure_logging\n"
        "configure_logging('info')\n"
        "async def main():\n"
        "    for n in range(500):\n"
        "        logging.getLogger('shim').info('line %d', n)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    messages = [json.loads(line)["message"] for line in done.stderr.splitlines()]
    assert messages == [f"line {n}" for n in range(500)]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    async for start in spawner():
        yield start


async def test_a_serving_shim_writes_one_redacted_access_line_per_request(tmp_path, simulator, legacy_upstream, spawn):
    """`shim serve` builds its access lines directly and batches them: each request has exactly one,
    a JSON document, with the token pasted into the path redacted, while serving and up to the exit."""
    _, sdrs = simulator
    _, legacy = legacy_upstream
    shim = await spawn(write_config(tmp_path, sdrs, legacy))


    async with aiohttp.ClientSession() as session:
        async def get(number: int) -> str:
            async with session.get(f"{shim.url}/v2/{PROJECT}/volumes/{TOKEN}?n={number}",
                                   headers={**GO_HEADERS, "X-Request-Id": f"log-{number}"}) as reply:
                assert reply.status == 200
                return reply.headers["X-Request-Id"]

        first = await asyncio.gather(*(get(number) for number in range(40)))
        await shim.wait_for(lambda record: record.get("message") == "access", count=40)  # no exit needed
        last = await asyncio.gather(*(get(number) for number in range(40, 60)))
    shim.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(shim.proc.wait(), 30) == 0
    await asyncio.sleep(0.2)  # the reader drains the pipe

    access = [record for record in shim.records if record.get("message") == "access"]
    assert sorted(record["request_id"] for record in access) == sorted(first + last)
    assert all(record["path"] == f"/v2/{PROJECT}/volumes/[REDACTED]" for record in access)
    assert all(record["logger"] == "shim.access" and record["route"] == "passthrough" and record["status"] == 200
               and record["method"] == "GET" and isinstance(record["duration_ms"], float) for record in access)
    assert len(shim.records) == len(shim.raw)  # every line one JSON document
    assert not any(TOKEN in line for line in shim.raw)


def test_a_second_event_loop_gets_its_own_flush_timer():
    """`shim demo` and the tests run one loop after another: lines written on the second are not
    left waiting behind a timer that died with the first."""
    stream = io.StringIO()
    sink = LineSink(stream, buffered=True)

    async def write_and_wait(line: str) -> str:
        sink.write(line)
        await asyncio.sleep(LineSink.FLUSH_SECONDS * 3)
        return stream.getvalue()

    async def write_and_leave(line: str) -> None:
        sink.write(line)

    asyncio.run(write_and_leave("first\n"))  # its loop ends before its timer fires
    assert asyncio.run(write_and_wait("second\n")) == "first\nsecond\n"


AUDIT_FIELDS = [
    {"project_id": PROJECT, "rcg_id": "r1", "job_ids": ["j1", "j2"], "sdrs_status": 200, "sdrs_code": None,
     "legacy_status": "200", "duration_ms": 2.5},
    # Credentials in any shape are redacted on both ways: a sensitive key, a token-like text, nested.
    {"token": "not-a-secret-really", "detail": {"Authorization": "Bearer abc"}, "note": f"saw {TOKEN} here",
     "headers": [["X-Auth-Token: gAAAAABsomething-long"]]},
]


@pytest.mark.parametrize("fields", AUDIT_FIELDS)
@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_a_line_built_from_fields_is_the_line_the_formatter_writes_for_the_record(formatter, fields):
    record = logging.makeLogRecord({"name": "shim.audit", "levelno": logging.INFO, "levelname": "INFO",
                                    "msg": "translated call", "args": (), **fields})
    built = formatter.fields_line(logging.INFO, "shim.audit", "translated call", fields)
    formatted = formatter.format(record)
    assert built.endswith("\n") and built.count("\n") == formatted.count("\n") + 1
    if isinstance(formatter, TextFormatter):
        assert built.split(" ", 1)[1] == formatted.split(" ", 1)[1] + "\n"  # all but the time
    else:
        built_document, formatted_document = json.loads(built), json.loads(formatted)
        del built_document["time"], formatted_document["time"]
        assert built_document == formatted_document
    assert TOKEN not in built and "gAAAAABsomething" not in built and "abc" not in built.replace("[REDACTED]", "")
