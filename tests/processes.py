"""`shim serve` as a real process for tests: start it, read its JSON log lines, stop it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conftest import DEFAULT_MAPPING, write_mappings

Record = dict[str, Any]


@dataclass
class ShimProcess:
    """A `shim serve` subprocess; its JSON log lines (stderr) are collected as they come."""

    proc: asyncio.subprocess.Process
    records: list[Record] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    url: str = ""

    async def collect(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            text = line.decode(errors="replace")
            self.raw.append(text)
            try:
                self.records.append(json.loads(text))
            except ValueError:
                pass

    async def wait_for(self, predicate: Callable[[Record], bool], count: int = 1) -> list[Record]:
        """The first `count` log records matching `predicate` (waits up to 15 s for them)."""
        for _ in range(1500):
            found = [record for record in self.records if predicate(record)]
            if len(found) >= count:
                return found[:count]
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        raise AssertionError("log line not seen; the shim wrote:\n" + "".join(self.raw))

    def messages(self, message: str) -> list[Record]:
        return [record for record in self.records if record.get("message", "").startswith(message)]


Spawn = Callable[..., Awaitable[ShimProcess]]


def write_config(tmp_path: Path, sdrs: str, legacy: str | None, **extra: Any) -> Path:
    write_mappings(tmp_path / "mappings", DEFAULT_MAPPING)
    data = {"listen": {"host": "127.0.0.1", "port": 0}, "upstreams": {"sdrs": sdrs, "legacy": legacy},
            "mappings": "./mappings", "log_level": "info",
            "state": {"backend": "sqlite", "path": "./state.sqlite3"}, **extra}
    path = tmp_path / "shim.yaml"
    path.write_text(yaml.safe_dump(data))
    return path




async def spawner() -> AsyncIterator[Spawn]:
    """Yields `start(config, *args)`; on exit stops (SIGTERM, then SIGKILL) what it started."""
    started: list[ShimProcess] = []
    readers: list[asyncio.Task[None]] = []

    async def start(config: Path, *args: str, ready_message: str = "listening",
                    wrapper: tuple[str, ...] = ()) -> ShimProcess:
        """`wrapper`: a command the shim runs under (e.g. `faketime -f +2h`)."""
        proc = await asyncio.create_subprocess_exec(
            *wrapper, sys.executable, "-m", "shim", "serve", "--config", str(config), *args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        shim = ShimProcess(proc)
        started.append(shim)
        readers.append(asyncio.create_task(shim.collect()))
        (ready,) = await shim.wait_for(lambda record: record.get("message") == ready_message)
        shim.url = f"http://127.0.0.1:{ready['port']}"
        return shim

    yield start
    for shim in started:  # only the processes this test started, by pid
        if shim.proc.returncode is None:
            shim.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(shim.proc.wait(), 15)
            except TimeoutError:
                shim.proc.kill()
                await shim.proc.wait()
    await asyncio.gather(*readers, return_exceptions=True)
