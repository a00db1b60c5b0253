"""One-command benchmark of the shim beside a direct upstream, nginx, a bare aiohttp proxy and the nginx front.

Starts, each as its own OS process on 127.0.0.1 ephemeral ports: a fast upstream (benchmarks/upstream.py),
the SDRS simulator with instant jobs (benchmarks/sdrs_sim.py), the shim as shipped (`python -m shim serve`,
one process, `log_level: info`, SQLite state, uvloop when installed) and variants of it (log level
warning; memory and Redis state; `--workers 2`), a bare aiohttp proxy as a yardstick
(benchmarks/reference_proxy.py) and, when installed, nginx (`worker_processes 1`, keepalive upstream),
nginx running the config `shim front-config` generates, and redis-server. The rows are data (ROW_SPECS).
At each concurrency it measures requests/s, p50 and p99 latency, CPU per request and the RSS of the
server under test for each row, checks every answer's status, prints the ratios between rows and
judges the targets (issues 8 and 13, and the first benchmark's).

    .venv/bin/python benchmarks/run.py            # full run, writes benchmarks/RESULTS.md (about 10 min)
    .venv/bin/python benchmarks/run.py --quick    # smoke run (~2 min), writes nothing

See benchmarks/README.md for what each row means and how to read the output. Installs nothing: a row
whose tool is missing (nginx, redis-server, wrk) is skipped or measured with the Python client, and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_FILE = HERE / "RESULTS.md"
NOTES_MARKER = "<!-- Everything below this line is kept when run.py rewrites this file. -->"

PROJECT = "0970dd7a1300f5672ff2c003c60ae115"
TOKEN = "bench-token"  # the simulator accepts any non-empty token
ID_NAMESPACE = uuid.UUID("5b0f5d8e-2f9c-4a8e-b8c4-6f1d3e0a7c21")
PASSTHROUGH_PATH = f"/v2/{PROJECT}/volumes/detail?limit=10"
REPROTECT_BODY = '{"os-reprotect-replication-consistency-group": null}'
GET_HEADERS = ["Accept: application/json", f"X-Auth-Token: {TOKEN}", "User-Agent: golangsdk/2.0.0"]
POST_HEADERS = [*GET_HEADERS, "Content-Type: application/json"]

TARGET_PASSTHROUGH_VS_NGINX = 0.2
TARGET_ADDED_P50_US = 250.0
TARGET_FLOOR_CPU_RATIO = 1.15  # shim passthrough CPU per request (log_level info) / bare aiohttp proxy's
TARGET_REPROTECT_CPU_US = 400.0
TARGET_REPROTECT_RPS = 2000.0
TARGET_DURABLE_SHARE = 0.8  # the durable default (sqlite) keeps at least this share of memory's req/s
TARGET_WORKERS = {"passthrough": 1.6, "reprotect": 1.5}  # --workers 2 over one worker, req/s
TARGET_RSS_MB = 80.0
TARGET_FRONT_VS_NGINX_LOG = 0.9  # the front's passthrough req/s / plain nginx's with the same kind of access log
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class RowSpec:
    """One row: which process serves it, which request it sends, which processes help it."""

    kind: str
    title: str
    server: str  # a key of SERVER_STARTERS
    load: str  # "get" (the passthrough GET) or "reprotect" (the translated POST)
    helpers: tuple[str, ...] = ()
    all_concurrencies: bool = True  # False: measured at the highest concurrency only
    cores: int = 1  # cores given to the server under test (2 for the --workers 2 rows)
    pinned: str = ""  # the process given a core of its own, when not `server` (the one doing the work)


ROW_SPECS = (
    RowSpec("direct", "direct to upstream", "upstream", "get"),
    RowSpec("nginx", "through nginx", "nginx", "get", ("upstream",)),
    RowSpec("aiohttp-floor", "bare aiohttp proxy (reference)", "aiohttp-floor", "get", ("upstream",)),
    RowSpec("passthrough", "shim passthrough", "shim", "get", ("upstream",)),
    RowSpec("passthrough-warning", "shim passthrough, log_level warning", "shim-warning", "get", ("upstream",),
            all_concurrencies=False),
    RowSpec("nginx-log", "through nginx, JSON access log", "nginx-log", "get", ("upstream",), all_concurrencies=False),
    RowSpec("front", "nginx front: passthrough", "front", "get", ("upstream", "shim")),
    RowSpec("reprotect", "shim reprotect (translated)", "shim", "reprotect", ("sdrs-sim",)),
    RowSpec("front-reprotect", "nginx front: reprotect", "front", "reprotect", ("shim", "sdrs-sim"),
            all_concurrencies=False, pinned="shim"),
    RowSpec("reprotect-memory", "shim reprotect, state memory", "shim-memory", "reprotect", ("sdrs-sim",),
            all_concurrencies=False),
    RowSpec("reprotect-redis", "shim reprotect, state redis", "shim-redis", "reprotect", ("sdrs-sim", "redis"),
            all_concurrencies=False),
    RowSpec("passthrough-workers2", "shim passthrough, --workers 2", "shim-workers2", "get", ("upstream",),
            all_concurrencies=False, cores=2),
    RowSpec("reprotect-workers2", "shim reprotect, --workers 2", "shim-workers2", "reprotect", ("sdrs-sim",),
            all_concurrencies=False, cores=2),
)
SPECS = {spec.kind: spec for spec in ROW_SPECS}
ROWS = tuple(SPECS)
ROW_TITLES = {spec.kind: spec.title for spec in ROW_SPECS}
# The shims of the rows: (log level, state backend, workers). `shim` is the shipped default.
SHIM_VARIANTS = {
    "shim": ("info", "sqlite", 1),
    "shim-warning": ("warning", "sqlite", 1),
    "shim-memory": ("info", "memory", 1),
    "shim-redis": ("info", "redis", 1),
    "shim-workers2": ("info", "sqlite", 2),
}

WRK_SCRIPT = r"""
-- Generated by benchmarks/run.py. args: METHOD BODY PATHS_FILE. Requests go to the file's paths
-- round-robin; every answer's status is counted; done() prints one RESULT line of JSON.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  local method, body = args[1], args[2]
  if body == "" then body = nil end
  reqs, n, i, counts = {}, 0, 0, {}
  for line in io.lines(args[3]) do
    if line ~= "" then n = n + 1; reqs[n] = wrk.format(method, line, nil, body) end
  end
end
function request() i = i % n + 1; return reqs[i] end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do parts[#parts + 1] = string.format('"%d": %d', k, v) end
  local e, seconds = summary.errors, summary.duration / 1e6
  io.write(string.format('RESULT {"requests": %d, "seconds": %.6f, "rps": %.3f, "p50_us": %.1f, '
    .. '"p90_us": %.1f, "p99_us": %.1f, "max_us": %.1f, "statuses": {%s}, "errors": %d, '
    .. '"error_detail": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
    summary.requests, seconds, summary.requests / seconds, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, table.concat(parts, ", "),
    e.connect + e.read + e.write + e.timeout, e.connect, e.read, e.write, e.timeout))
end
"""

NGINX_CONF = """\
# Generated by benchmarks/run.py: one worker, keep-alive to the upstream, {what}.
worker_processes 1;
error_log {tmp}/{name}-error.log warn;
pid {tmp}/{name}.pid;
events {{ worker_connections 4096; }}
http {{
{access_log}
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fastcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
    keepalive_requests 1000000;
    upstream legacy {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://legacy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""
NGINX_NO_LOG = "    access_log off;"
# The yardstick for the front's own cost: the JSON line the front writes (the same fields, buffered the
# same way), filled from plain nginx's own variables (its $request_id, $uri as the path, no maps).
NGINX_JSON_LOG = """\
    log_format json escape=json
        '{{"time":"$time_iso8601","level":"info","logger":"front.access","request_id":"$request_id",'
        '"method":"$request_method","path":"$uri","status":$status,"duration_s":$request_time,'
        '"upstream":"legacy","upstream_status":"$upstream_status",'
        '"upstream_time_s":"$upstream_response_time","bytes_sent":$bytes_sent}}';
    access_log {tmp}/nginx-log-access.log json buffer=64k flush=1s;"""


# -- processes ------------------------------------------------------------------------------------


class BenchError(RuntimeError):
    pass


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """This process and its descendants (nginx: master and worker)."""
        return [self.pid, *descendants(self.pid)]

    def rss_kb(self) -> int:
        return sum(proc_status(pid).get("VmRSS", 0) for pid in self.pids())

    def cpu_ticks(self) -> int:
        return sum(cpu_ticks(pid) for pid in self.pids())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def proc_status(pid: int) -> dict[str, int]:
    values = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all threads), in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def set_affinity(pids: list[int], cpus: set[int]) -> None:
    """Pin every thread of the given processes (threads keep their own masks)."""
    for pid in pids:
        tasks = Path(f"/proc/{pid}/task")
        for tid in [int(t.name) for t in tasks.iterdir()] if tasks.exists() else [pid]:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env() -> dict[str, str]:
    """The environment minus SHIM_* overrides (they would win over the generated config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def start(name: str, argv: list[str], tmp: Path, *, ready_line: bool, port: int = 0,
          cpus: set[int] | None = None) -> Server:
    log = tmp / f"{name}.log"
    stdout = subprocess.PIPE if ready_line else subprocess.DEVNULL
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            argv, cwd=REPO, env=child_env(), stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
    server = Server(name, process, port, log)
    if ready_line:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()  # the child prints READY <port> first
        if not line.startswith("READY "):
            server.stop()
            raise BenchError(f"{name} did not start: {line!r}\n{server.log_tail()}")
        server.port = int(line.split()[1])
    else:
        wait_for_port(server, 20.0)
    return server


def wait_for_port(server: Server, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), 0.2):
            return
        time.sleep(0.05)
    server.stop()
    raise BenchError(f"{server.name} did not listen on 127.0.0.1:{server.port} within {seconds:g} s")


def probe(port: int, method: str, path: str, body: str | None, headers: list[str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=dict(h.split(": ", 1) for h in headers))
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


# -- load generation ------------------------------------------------------------------------------


@dataclass
class Load:
    """What one row sends: method, body, headers and a file of paths used round-robin."""

    method: str
    paths_file: Path
    headers: list[str]
    body: str = ""


@dataclass
class ClientRun:
    result: dict[str, Any]
    wall: float
    client_cpu: float  # seconds of CPU the client used


def run_client(client: str, port: int, load: Load, connections: int, seconds: int, tmp: Path,
               cpus: set[int] | None) -> ClientRun:
    if client == "wrk":
        script = tmp / "bench.lua"
        if not script.exists():
            script.write_text(WRK_SCRIPT)
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script)]
        for header in load.headers:
            argv += ["-H", header]
        argv += [f"http://127.0.0.1:{port}", "--", load.method, load.body, str(load.paths_file)]
    else:
        argv = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port), "--paths-file",
                str(load.paths_file), "--method", load.method, "--body", load.body,
                "-c", str(connections), "-d", str(seconds)]
        for header in load.headers:
            argv += ["--header", header]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, stdin=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        raise BenchError(f"load generator failed ({completed.returncode}): {completed.stderr.strip()[-800:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ClientRun(result, wall, cpu)


# -- rows -----------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One measured run of one row."""

    requests: int
    seconds: float
    rps: float
    p50_us: float
    p99_us: float
    statuses: dict[str, int]
    errors: int
    rss_kb: int
    cpu: dict[str, float]  # process -> share of one core; "client" is the load generator
    server_cpu_us: float  # CPU time of the server under test per request, in microseconds
    irq: float  # CPU (in cores) in interrupts and softirqs: mostly the loopback network stack
    outside: float  # CPU (in cores) the machine spent on other programs


@dataclass
class Row:
    """One row of the table: the median of its samples (repetitions interleaved with the other rows)."""

    kind: str
    concurrency: int
    skipped: str = ""  # why the row was not measured
    samples: list[Sample] = field(default_factory=list)
    disturbed: int = 0  # samples dropped because other programs used the CPU meanwhile

    def _median(self, values: list[float]) -> float:
        return statistics.median(values) if values else 0.0

    @property
    def rps(self) -> float:
        return self._median([s.rps for s in self.samples])

    @property
    def p50_us(self) -> float:
        return self._median([s.p50_us for s in self.samples])

    @property
    def p99_us(self) -> float:
        return self._median([s.p99_us for s in self.samples])

    @property
    def server_cpu_us(self) -> float:
        return self._median([s.server_cpu_us for s in self.samples])

    @property
    def rss_kb(self) -> int:
        return self.samples[-1].rss_kb if self.samples else 0

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.samples)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.samples)

    @property
    def statuses(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for sample in self.samples:
            total.update(sample.statuses)
        return dict(total)

    @property
    def cpu(self) -> dict[str, float]:
        names = self.samples[0].cpu if self.samples else {}
        return {name: self._median([s.cpu.get(name, 0.0) for s in self.samples]) for name in names}

    @property
    def outside(self) -> float:
        return self._median([s.outside for s in self.samples])

    @property
    def irq(self) -> float:
        return self._median([s.irq for s in self.samples])

    @property
    def spread(self) -> str:
        if len(self.samples) < 2:
            return ""
        values = [s.rps for s in self.samples]
        return f"{min(values):,.0f}-{max(values):,.0f}"

    @property
    def all_ok(self) -> bool:
        return self.requests > 0 and self.statuses.get("200", 0) == self.requests and self.errors == 0

    def status_text(self) -> str:
        text = " ".join(f"{code}:{count}" for code, count in sorted(self.statuses.items()))
        return text + (f" errors:{self.errors}" if self.errors else "")

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "concurrency": self.concurrency, "skipped": self.skipped,
                "rps": self.rps, "p50_us": self.p50_us, "p99_us": self.p99_us, "rss_kb": self.rss_kb,
                "server_cpu_us": self.server_cpu_us, "statuses": self.statuses, "errors": self.errors,
                "cpu": self.cpu, "irq": self.irq, "outside": self.outside, "disturbed": self.disturbed,
                "samples": [sample.__dict__ for sample in self.samples]}


def machine_ticks() -> tuple[int, int]:
    """(busy, irq) CPU time of the whole machine (all cores) in clock ticks, from /proc/stat; irq is
    hard and soft interrupt time, where most of the loopback TCP work of every process is counted."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return sum(fields) - idle - guest, fields[5] + fields[6]


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    client: str
    servers: dict[str, Server] = field(default_factory=dict)
    loads: dict[str, Load] = field(default_factory=dict)
    server_cpus: set[int] | None = None
    other_cpus: set[int] | None = None
    shim_requests: Counter[str] = field(default_factory=Counter)  # requests served by the shim, by kind
    why_not: dict[str, str] = field(default_factory=dict)  # servers not started, and why
    profiles: dict[str, str] = field(default_factory=dict)

    def pin_for(self, kind: str) -> None:
        """The server under test gets a core of its own (a row with `cores` 2: every core, shared with
        the others); every other process shares the rest."""
        if self.server_cpus is None or self.other_cpus is None:
            return
        spec = SPECS[kind]
        every = self.server_cpus | self.other_cpus
        for name, server in self.servers.items():
            if spec.cores > 1:
                cpus = every
            else:
                cpus = self.server_cpus if name == (spec.pinned or spec.server) else self.other_cpus
            set_affinity(server.pids(), cpus)

    def measure(self, row: Row, profile: bool) -> None:
        """One more sample of `row` (warm-up first), or mark it skipped."""
        kind, concurrency = row.kind, row.concurrency
        spec = SPECS[kind]
        serving = self.servers.get(spec.server)
        missing = [name for name in (spec.server, *spec.helpers) if name not in self.servers]
        if missing:
            row.skipped = self.why_not.get(missing[0], f"{missing[0]} not started")
            return
        assert serving is not None
        self.pin_for(kind)
        load, port = self.loads[spec.load], serving.port
        if self.args.warmup > 0:
            warm = run_client(self.client, port, load, concurrency, self.args.warmup, self.tmp, self.other_cpus)
            self.count(kind, warm.result)
        involved = [serving] + [self.servers[name] for name in spec.helpers if name in self.servers]
        ticks_before = {s.name: s.cpu_ticks() for s in involved}
        busy_before, irq_before = machine_ticks()
        run = run_client(self.client, port, load, concurrency, self.args.duration, self.tmp, self.other_cpus)
        busy_after, irq_after = machine_ticks()
        ticks_after = {s.name: s.cpu_ticks() for s in involved}
        self.count(kind, run.result)
        result = run.result
        cpu = {name: (ticks_after[name] - ticks_before[name]) / CLK_TCK / run.wall for name in ticks_before}
        cpu["client"] = run.client_cpu / run.wall
        server_ticks = ticks_after[serving.name] - ticks_before[serving.name]
        server_cpu_us = server_ticks / CLK_TCK / max(1, result["requests"]) * 1e6
        irq = (irq_after - irq_before) / CLK_TCK / run.wall
        # Everything else the machine did: other programs (another test run, a build) disturb a row.
        outside = max(0.0, (busy_after - busy_before) / CLK_TCK / run.wall - sum(cpu.values()) - irq)
        row.samples.append(Sample(
            requests=result["requests"], seconds=result["seconds"], rps=result["rps"],
            p50_us=result["p50_us"], p99_us=result["p99_us"], statuses=result["statuses"],
            errors=result["errors"], rss_kb=serving.rss_kb(), cpu=cpu, server_cpu_us=server_cpu_us,
            irq=irq, outside=outside,
        ))
        if profile:
            self.profile(kind, concurrency)

    def count(self, kind: str, result: dict[str, Any]) -> None:
        """Requests the default shim (`shim`, whose RSS is judged) served, by passthrough/reprotect."""
        spec = SPECS[kind]
        if spec.server == "shim" or (spec.load == "reprotect" and "shim" in spec.helpers):
            self.shim_requests["passthrough" if spec.load == "get" else "reprotect"] += result["requests"]

    def soak(self, target: int) -> None:
        """More passthrough requests through the shim until it has served `target` of them."""
        concurrency = max(self.args.concurrency)
        self.pin_for("passthrough")
        while self.shim_requests["passthrough"] < target:
            missing = target - self.shim_requests["passthrough"]
            rate = max(self.args.last_passthrough_rps, 200.0)
            seconds = int(min(60, max(1, missing / rate + 1)))
            print(f"  soak: {missing} more passthrough requests through the shim (~{seconds} s)", flush=True)
            run = run_client(self.client, self.servers["shim"].port, self.loads["get"], concurrency,
                             seconds, self.tmp, self.other_cpus)
            if run.result["requests"] == 0:
                raise BenchError("soak: the shim answered no request")
            self.count("passthrough", run.result)

    def profile(self, kind: str, concurrency: int) -> None:
        """An extra run of the row under py-spy (not the measured one): where the shim's CPU goes."""
        py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if py_spy is None:
            print("  profile: py-spy is not installed (pip install py-spy); skipped", flush=True)
            return
        out = Path(self.args.profile).resolve()
        out.mkdir(parents=True, exist_ok=True)
        raw = out / f"{kind}-c{concurrency}.txt"
        seconds = self.args.duration
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(self.servers[SPECS[kind].server].pid), "--rate", "250", "--format",
             "raw",
             "--output", str(raw), "--duration", str(seconds), "--idle"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=(lambda: os.sched_setaffinity(0, self.other_cpus)) if self.other_cpus else None,
        )
        time.sleep(0.5)
        run = run_client(self.client, self.servers[SPECS[kind].server].port, self.loads[SPECS[kind].load],
                         concurrency, seconds,
                         self.tmp, self.other_cpus)
        self.count(kind, run.result)
        _, err = spy.communicate(timeout=seconds + 30)
        if not raw.exists():
            print(f"  profile: py-spy failed: {err.decode(errors='replace')[-300:]}", flush=True)
            return
        summary = summarize_profile(raw)
        (out / f"{kind}-c{concurrency}-summary.txt").write_text(summary)
        self.profiles[f"{kind} c={concurrency}"] = summary
        print(f"  profile: {raw} ({run.result['rps']:.0f} req/s while profiled)", flush=True)


# -- profile summary ------------------------------------------------------------------------------


BUCKETS = (  # first match wins, on the file of the innermost frame
    ("shim/", "shim (this project)"),
    ("aiohttp/", "aiohttp"),
    ("yarl/", "yarl"),
    ("multidict/", "multidict"),
    ("pydantic", "pydantic"),
    ("json/", "json"),
    ("logging/", "logging"),
    ("asyncio/", "asyncio"),
    ("uvloop/", "uvloop (Python frames)"),
    ("uuid.py", "uuid"),
    ("re/", "re"),
)


def frame_parts(frame: str) -> tuple[str, str]:
    """`func (path/to/file.py:123)` -> (func, short file)."""
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3":
                path = path.split("/", 1)[1] if "/" in path else path
            break
    if "/work/" in path or path.startswith(str(REPO)):
        path = path.split(str(REPO) + "/", 1)[-1]
    return (name or frame), path


def summarize_profile(raw: Path, top: int = 20) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        total += count
        seen = set()
        for frame in frames:
            name, path = frame_parts(frame)
            key = f"{name} ({path})"
            if key not in seen:
                inclusive[key] += count
                seen.add(key)
        name, path = frame_parts(frames[-1])
        own[f"{name} ({path})"] += count
        # self time charged to the innermost frame of one of the named libraries or the project
        for frame in reversed(frames):
            _, path = frame_parts(frame)
            bucket = next((label for marker, label in BUCKETS if marker in path), None)
            if bucket is not None:
                buckets[bucket] += count
                break
        else:
            buckets["other"] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} samples, idle included (the event loop waiting for I/O, and uvloop's own C code, "
             "show as Runner.run)", "", "self time by library (innermost known frame):"]
    lines += [f"  {100 * n / total:5.1f}%  {label}" for label, n in buckets.most_common()]
    lines += ["", f"top {top} functions by self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {key}" for key, n in own.most_common(top)]
    lines += ["", f"top {top} shim/aiohttp functions by inclusive time:"]
    chosen = [(k, n) for k, n in inclusive.most_common() if "shim/" in k or "aiohttp/" in k][:top]
    lines += [f"  {100 * n / total:5.1f}%  {key}" for key, n in chosen]
    return "\n".join(lines) + "\n"


# -- setup ----------------------------------------------------------------------------------------


def group_ids(count: int) -> list[tuple[str, str]]:
    """(legacy rcg id, SDRS protection group id) pairs, stable across runs."""
    return [(str(uuid.uuid5(ID_NAMESPACE, f"rcg-{i}")), str(uuid.uuid5(ID_NAMESPACE, f"pg-{i}")))
            for i in range(count)]


def write_inputs(tmp: Path, groups: list[tuple[str, str]]) -> dict[str, Path]:
    import yaml

    mappings = tmp / "mappings"
    mappings.mkdir()
    entries = [{"project_id": PROJECT, "replication_consistency_group_id": rcg, "protection_group_id": pg}
               for rcg, pg in groups]
    (mappings / "consistency-groups.yaml").write_text(yaml.safe_dump({"consistency_groups": entries}))
    files = {"mappings": mappings, "groups": tmp / "groups.txt", "get": tmp / "get-paths.txt",
             "reprotect": tmp / "reprotect-paths.txt"}
    files["groups"].write_text("".join(pg + "\n" for _, pg in groups))
    files["get"].write_text(PASSTHROUGH_PATH + "\n")
    files["reprotect"].write_text("".join(
        f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{rcg}/action\n" for rcg, _ in groups))
    return files


def start_servers(bench: Bench, files: dict[str, Path]) -> None:
    """Start every process the chosen rows need (a row whose tool is missing is skipped later)."""
    tmp, cpus, python = bench.tmp, bench.other_cpus, sys.executable
    needed = {name for kind in bench.args.rows for name in (SPECS[kind].server, *SPECS[kind].helpers)}
    if "front" in needed:
        needed.add("shim")
    servers = bench.servers
    if needed & {"upstream", "nginx", "nginx-log", "aiohttp-floor", "front"} or any(n in SHIM_VARIANTS for n in needed):
        servers["upstream"] = start("upstream", [python, str(HERE / "upstream.py")], tmp, ready_line=True, cpus=cpus)
    if needed & {"sdrs-sim", *SHIM_VARIANTS}:
        servers["sdrs-sim"] = start("sdrs-sim", [python, str(HERE / "sdrs_sim.py"), "--project", PROJECT,
                                                 "--groups-file", str(files["groups"])],
                                    tmp, ready_line=True, cpus=cpus)
    redis = shutil.which("redis-server") or next(
        (path for path in ("/usr/bin/redis-server",) if os.access(path, os.X_OK)), None)
    if "shim-redis" in needed:
        if redis is None:
            bench.why_not["shim-redis"] = bench.why_not["redis"] = "redis-server is not installed"
        else:
            port = free_port()
            servers["redis"] = start("redis", [redis, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                               "--appendonly", "no", "--dir", str(tmp)],
                                     tmp, ready_line=False, port=port, cpus=cpus)
    for name, (level, backend, workers) in SHIM_VARIANTS.items():
        if name not in needed or (backend == "redis" and "redis" not in servers):
            continue
        if backend == "redis":
            state = f"{{backend: redis, url: 'redis://127.0.0.1:{servers['redis'].port}/0', key_prefix: '{name}:'}}"
        elif backend == "sqlite":
            state = f"{{backend: sqlite, path: {tmp / (name + '.sqlite3')}}}"
        else:
            state = "{backend: memory}"
        port = free_port()
        config = tmp / f"{name}.yaml"
        config.write_text(textwrap.dedent(f"""\
            listen: {{host: 127.0.0.1, port: {port}}}
            upstreams:
              legacy: http://127.0.0.1:{servers["upstream"].port}
              sdrs: http://127.0.0.1:{servers["sdrs-sim"].port}
            mappings: {files["mappings"]}
            state: {state}
            log_level: {level}
            workers: {workers}
            """))
        servers[name] = start(name, [python, "-m", "shim", "serve", "--config", str(config)], tmp,
                              ready_line=False, port=port, cpus=cpus)
        if workers > 1:
            time.sleep(1.0)  # every worker listening, not only the first
    nginx = find_nginx()
    if nginx is None or bench.args.no_nginx:
        bench.why_not["nginx"] = bench.why_not["nginx-log"] = bench.why_not["front"] = (
            "nginx is not installed" if nginx is None else "--no-nginx")
    else:
        for name, what, access_log in (("nginx", "no access log", NGINX_NO_LOG),
                                       ("nginx-log", "JSON access log", NGINX_JSON_LOG.format(tmp=tmp))):
            if name not in needed:
                continue
            port = free_port()
            conf = tmp / f"{name}.conf"
            conf.write_text(NGINX_CONF.format(tmp=tmp, name=name, what=what, access_log=access_log,
                                              upstream_port=servers["upstream"].port, port=port))
            servers[name] = start(name, [nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
                                  tmp, ready_line=False, port=port, cpus=cpus)
        if "front" in needed:
            servers["front"] = start_front(nginx, tmp, cpus)
    if "aiohttp-floor" in needed:
        servers["aiohttp-floor"] = start(
            "aiohttp-floor", [python, str(HERE / "reference_proxy.py"), "--upstream",
                              f"http://127.0.0.1:{servers['upstream'].port}"], tmp, ready_line=True, cpus=cpus)
    bench.loads = {
        "get": Load("GET", files["get"], GET_HEADERS),
        "reprotect": Load("POST", files["reprotect"], POST_HEADERS, REPROTECT_BODY),
    }
    # Every server answers as the rows expect before anything is measured.
    for kind in bench.args.rows:
        spec = SPECS[kind]
        server = servers.get(spec.server)
        if server is None:
            continue
        load = bench.loads[spec.load]
        path = load.paths_file.read_text().splitlines()[0]
        status, body = probe(server.port, load.method, path, load.body or None, load.headers)
        if status != 200:
            raise BenchError(f"probe of the {kind} row answered {status}: {body[:300]!r}\n{server.log_tail()}")


def start_front(nginx: str, tmp: Path, cpus: set[int] | None) -> Server:
    """nginx with the config `shim front-config` prints for the default shim: translated URLs to the
    shim, everything else straight to the upstream (README, Behind nginx), JSON access lines on."""
    directory = tmp / "front"
    directory.mkdir()
    port = free_port()
    generated = subprocess.run(
        [sys.executable, "-m", "shim", "front-config", "--config", str(tmp / "shim.yaml"),
         "--listen", f"127.0.0.1:{port}", "--access-log", "access.log"],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=60)
    if generated.returncode != 0:
        raise BenchError(f"shim front-config failed: {generated.stderr.strip()[-500:]}")
    (directory / "nginx.conf").write_text(generated.stdout)
    return start("front", [nginx, "-e", "stderr", "-p", str(directory), "-c", str(directory / "nginx.conf")],
                 tmp, ready_line=False, port=port, cpus=cpus)


def find_nginx() -> str | None:
    """nginx on PATH, or where Debian puts it (/usr/sbin is not on every user's PATH)."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def machine_info(client: str) -> dict[str, str]:
    info: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    info["cpu"] = models[0] if models else platform.processor() or "unknown"
    info["cores"] = str(os.cpu_count())
    info["memory"] = next((f"{int(line.split()[1]) // 1024} MiB" for line in
                           Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "?")
    info["kernel"] = platform.release()
    os_release = Path("/etc/os-release")
    lines = os_release.read_text().splitlines() if os_release.exists() else []
    info["os"] = next((line.split("=", 1)[1].strip('"') for line in lines if line.startswith("PRETTY_NAME=")),
                      platform.platform())
    info["python"] = platform.python_version()
    for package in ("aiohttp", "uvloop", "yarl", "multidict"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    nginx = find_nginx()
    if nginx:
        out = subprocess.run([nginx, "-v"], capture_output=True, text=True)
        info["nginx"] = (out.stderr or out.stdout).strip().split("/", 1)[-1]
    else:
        info["nginx"] = "not installed"
    if client == "wrk":
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        info["client"] = "wrk " + ((out.stdout or out.stderr).split()[1] if (out.stdout or out.stderr) else "?")
    else:
        info["client"] = "benchmarks/loadgen.py (Python asyncio)"
    info["shim revision"] = git_revision()
    info["load average at start"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return info


def git_revision() -> str:
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "shim"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes in shim/" if dirty else "")


# -- report ---------------------------------------------------------------------------------------


@dataclass
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not evaluated


def judge(rows: list[Row], rss_kb: int, shim_total: Counter[str], cores: int) -> tuple[list[Verdict], list[str]]:
    """The targets (issue 13's, issue 8's and the first benchmark's), and the ratios between rows
    that explain them, each at the concurrency it names (`top`: the highest measured)."""
    top = max((r.concurrency for r in rows), default=32)

    def row(kind: str, concurrency: int = top) -> tuple[Row | None, str]:
        found = next((r for r in rows if r.kind == kind and r.concurrency == concurrency), None)
        if found is None:
            return None, f"{ROW_TITLES[kind]} at c={concurrency} not measured"
        if found.skipped:
            return None, f"{ROW_TITLES[kind]} skipped: {found.skipped}"
        if not found.all_ok:
            return None, f"{ROW_TITLES[kind]} at c={concurrency} had answers other than 200"
        return found, ""

    verdicts: list[Verdict] = []

    def compare(target: str, kinds: tuple[str, str], concurrency: int,
                check: Callable[[Row, Row], tuple[str, bool | None]]) -> None:
        (first, why_first), (second, why_second) = row(kinds[0], concurrency), row(kinds[1], concurrency)
        if first and second:
            measured, met = check(first, second)
            verdicts.append(Verdict(target, measured, met))
        else:
            verdicts.append(Verdict(target, f"not evaluated ({why_first or why_second})", None))

    def cpu_ratio(shim: Row, floor: Row) -> tuple[str, bool | None]:
        ratio = shim.server_cpu_us / floor.server_cpu_us
        return (f"{ratio:.2f}x ({shim.server_cpu_us:,.0f} vs {floor.server_cpu_us:,.0f} us)",
                ratio <= TARGET_FLOOR_CPU_RATIO)

    compare(f"passthrough CPU per request (log_level info) <= {TARGET_FLOOR_CPU_RATIO}x the bare aiohttp proxy's, "
            f"c={top}", ("passthrough", "aiohttp-floor"), top, cpu_ratio)
    reprotect, why = row("reprotect")
    target = f"translated reprotect CPU per request <= {TARGET_REPROTECT_CPU_US:.0f} us, c={top}"
    if reprotect:
        verdicts.append(Verdict(target, f"{reprotect.server_cpu_us:,.0f} us",
                                reprotect.server_cpu_us <= TARGET_REPROTECT_CPU_US))
    else:
        verdicts.append(Verdict(target, f"not evaluated ({why})", None))
    target = f"translated reprotect >= {TARGET_REPROTECT_RPS:,.0f} req/s"
    measured = [r for r in (row("reprotect", c)[0] for c in sorted({r.concurrency for r in rows})) if r is not None]
    if measured:
        best = max(measured, key=lambda r: r.rps)
        verdicts.append(Verdict(target, f"{best.rps:,.0f} req/s (c={best.concurrency})",
                                best.rps >= TARGET_REPROTECT_RPS))
    else:
        verdicts.append(Verdict(target, f"not evaluated ({why})", None))
    compare(f"durable state (sqlite, the default) >= {TARGET_DURABLE_SHARE:.0%} of the memory backend's reprotect "
            f"req/s, c={top}", ("reprotect", "reprotect-memory"), top,
            lambda durable, memory: (f"{durable.rps / memory.rps:.2f}x ({durable.rps:,.0f} vs {memory.rps:,.0f} "
                                     "req/s)", durable.rps / memory.rps >= TARGET_DURABLE_SHARE))
    for load, goal in TARGET_WORKERS.items():
        def scaling(two: Row, one: Row, goal: float = goal) -> tuple[str, bool | None]:
            ratio = two.rps / one.rps
            text = (f"{ratio:.2f}x ({two.rps:,.0f} vs {one.rps:,.0f} req/s; CPU per request "
                    f"{two.server_cpu_us:,.0f} vs {one.server_cpu_us:,.0f} us)")
            if cores < 4:
                capacity = 2 * one.server_cpu_us / two.server_cpu_us  # two workers, a core each
                return (text + f"; not judged: {cores} cores hold both workers, the load generator and the "
                        "stand-ins, so a second worker has no core of its own; at this CPU per request, two "
                        f"workers with a core each would serve up to {capacity:.2f}x", None)
            return text, ratio >= goal
        compare(f"--workers 2 >= {goal}x one worker's {load} req/s, c={top}", (f"{load}-workers2", load), top,
                scaling)
    for kind in ("passthrough", "front"):
        compare(f"{ROW_TITLES[kind]} at c={top} >= {TARGET_PASSTHROUGH_VS_NGINX}x nginx req/s", (kind, "nginx"), top,
                lambda shim, nginx: (f"{shim.rps / nginx.rps:.2f}x ({shim.rps:,.0f} vs {nginx.rps:,.0f} req/s)",
                                     shim.rps / nginx.rps >= TARGET_PASSTHROUGH_VS_NGINX))
        compare(f"{ROW_TITLES[kind]}: added p50 over direct at c=1 <= {TARGET_ADDED_P50_US:.0f} us",
                (kind, "direct"), 1,
                lambda shim, direct: (f"{shim.p50_us - direct.p50_us:.0f} us ({shim.p50_us:.0f} vs "
                                      f"{direct.p50_us:.0f} us)", shim.p50_us - direct.p50_us <= TARGET_ADDED_P50_US))
    compare(f"{ROW_TITLES['front']} at c={top} >= {TARGET_FRONT_VS_NGINX_LOG}x nginx with the same JSON access log, "
            "req/s", ("front", "nginx-log"), top,
            lambda front, plain: (f"{front.rps / plain.rps:.2f}x ({front.rps:,.0f} vs {plain.rps:,.0f} req/s; CPU per "
                                  f"request {front.server_cpu_us:,.1f} vs {plain.server_cpu_us:,.1f} us)",
                                  front.rps / plain.rps >= TARGET_FRONT_VS_NGINX_LOG))
    target = f"shim RSS <= {TARGET_RSS_MB:.0f} MB after 100,000 requests"
    served = shim_total["passthrough"]
    rss_text = f"{rss_kb / 1024:.1f} MB after {served:,} passthrough + {shim_total['reprotect']:,} reprotect requests"
    if served >= 100_000:
        verdicts.append(Verdict(target, rss_text, rss_kb / 1024 <= TARGET_RSS_MB))
    else:
        verdicts.append(Verdict(target, rss_text + " (fewer than 100,000 passthrough: not evaluated)", None))
    return verdicts, ratios(rows, top)


# (numerator row, denominator row, what the ratio says)
RATIOS = (
    ("passthrough", "aiohttp-floor", "shim passthrough (info) / bare aiohttp proxy"),
    ("passthrough-warning", "aiohttp-floor", "shim passthrough (warning) / bare aiohttp proxy"),
    ("passthrough", "nginx", "shim passthrough / nginx"),
    ("front", "nginx", "nginx front (passthrough straight to the legacy endpoint) / nginx alone"),
    ("front", "nginx-log", "nginx front (passthrough) / nginx with the same JSON access log"),
    ("front-reprotect", "reprotect", "reprotect through the nginx front / reprotect to the shim directly"),
    ("reprotect-memory", "reprotect", "reprotect, state memory / sqlite (the default)"),
    ("reprotect-redis", "reprotect", "reprotect, state redis / sqlite (the default)"),
    ("reprotect", "reprotect-memory", "reprotect, state sqlite / memory"),
    ("passthrough-workers2", "passthrough", "passthrough, --workers 2 / one worker"),
    ("reprotect-workers2", "reprotect", "reprotect, --workers 2 / one worker"),
)


def ratios(rows: list[Row], top: int) -> list[str]:
    """One line per pair of rows measured at `top`: req/s and CPU per request as ratios, p50 apart."""
    measured = {r.kind: r for r in rows if r.concurrency == top and r.samples and not r.skipped}
    lines = []
    for first, second, what in RATIOS:
        if first in measured and second in measured:
            a, b = measured[first], measured[second]
            lines.append(f"{what}: req/s {a.rps / b.rps:.2f}x, CPU per request "
                         f"{a.server_cpu_us / b.server_cpu_us:.2f}x ({a.server_cpu_us:,.0f} vs "
                         f"{b.server_cpu_us:,.0f} us), p50 {a.p50_us - b.p50_us:+,.0f} us")
    return lines


def mark(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not evaluated"}[met]


def table(rows: list[Row], markdown: bool) -> str:
    header = ["row", "conc", "req/s", "(range)", "p50 us", "p99 us", "CPU us/req", "RSS MB", "statuses",
              "CPU, share of one core", "irq", "other"]
    left = {0, 8, 9}
    lines = []
    for r in rows:
        if r.skipped:
            cells = [ROW_TITLES[r.kind], str(r.concurrency), "-", "", "-", "-", "-", "-", f"skipped: {r.skipped}",
                     "", "", ""]
        else:
            cpu = ", ".join(f"{name} {share:.0%}" for name, share in r.cpu.items())
            cells = [ROW_TITLES[r.kind], str(r.concurrency), f"{r.rps:,.0f}", r.spread, f"{r.p50_us:,.0f}",
                     f"{r.p99_us:,.0f}", f"{r.server_cpu_us:,.0f}", f"{r.rss_kb / 1024:.1f}", r.status_text(), cpu,
                     f"{r.irq:.0%}", f"{r.outside:.0%}"]
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(header) + " |",
               "|" + "|".join(":--" if i in left else "--:" for i in range(len(header))) + "|"]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(header[i]), *(len(cells[i]) for cells in lines)) for i in range(len(header))]
    fmt = "  ".join("{:<%d}" % w if i in left else "{:>%d}" % w for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*c) for c in lines])


def results_markdown(info: dict[str, str], rows: list[Row], verdicts: list[Verdict], ratio_lines: list[str],
                     bench: Bench, rss: dict[str, int], command: str, started: dt.datetime, elapsed: float) -> str:
    args = bench.args
    pinning = (f"the server under test pinned to CPU {sorted(bench.server_cpus)}, every other process "
               f"(load generator, upstream, SDRS simulator) to CPU {sorted(bench.other_cpus or [])}"
               if bench.server_cpus else "no CPU pinning (the scheduler placed every process)")
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} UTC ({elapsed:.0f} s). "
        "See [README.md](README.md) for what each row measures.",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in info.items()],
        f"- CPU layout: {pinning}",
        "",
        "Client and servers share this machine's cores: every figure includes the cost of the load "
        "generator and the upstream stand-ins running beside the server under test.",
        "",
        f"## Figures (one worker each; median of {args.repeat} interleaved run(s) of {args.duration} s "
        f"per row, each after {args.warmup} s warm-up)",
        "",
        table(rows, markdown=True),
        "",
        "req/s, p50 and p99 are medians over the runs; `(range)` is the lowest and highest req/s of the "
        "runs; `CPU us/req` is the CPU time the server under test spent per request (robust to other "
        "load on the machine, unlike req/s); `RSS MB` is the server under test's resident memory after "
        "the row (nginx: master and worker); `statuses` counts every measured answer of every run. "
        "CPU is the share of one core each "
        "process used during a measured run (`client` is the load generator); `irq` is the machine's "
        "interrupt and softirq time (mostly the loopback TCP stack, for all processes); `other` is CPU "
        "used by anything else on the machine (a high figure means the row was disturbed).",
        "",
        f"Shim memory after all rows: VmRSS {rss['VmRSS'] / 1024:.1f} MB, peak (VmHWM) "
        f"{rss['VmHWM'] / 1024:.1f} MB, after {bench.shim_requests['passthrough']:,} passthrough and "
        f"{bench.shim_requests['reprotect']:,} translated requests (warm-ups and soak included).",
        "",
        f"## Ratios (c={max(args.concurrency)}, same run)",
        "",
        *[f"- {line}" for line in ratio_lines],
        "",
        "## Targets",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        *[f"| {v.target} | {v.measured} | {mark(v.met)} |" for v in verdicts],
        "",
    ]
    for name, summary in bench.profiles.items():
        lines += [f"## Profile of the shim: {name} (py-spy, an extra unmeasured run)", "", "```",
                  summary.rstrip(), "```", ""]
    return "\n".join(lines)


def write_results(path: Path, generated: str) -> None:
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES_MARKER in old:
            notes = old.split(NOTES_MARKER, 1)[1]
    path.write_text(generated + "\n" + NOTES_MARKER + (notes or "\n"))


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Benchmark the shim against a direct upstream and nginx, all on 127.0.0.1, in one go.",
        epilog="Example: .venv/bin/python benchmarks/run.py   (full run, about 10 min, rewrites benchmarks/RESULTS.md)",
    )
    parser.add_argument("--duration", type=int, default=6, metavar="S",
                        help="seconds measured per run of a row (default 6)")
    parser.add_argument("--warmup", type=int, default=1, metavar="S",
                        help="unmeasured seconds before each run of a row (default 1; 0 = none)")
    parser.add_argument("--requests", type=int, default=100_000, metavar="N",
                        help="passthrough requests the shim must have served before its RSS is read "
                             "(default 100000; extra passthrough load is run to reach it)")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="measure every row N times, interleaved, and report the median (default 3)")
    parser.add_argument("--max-other", type=float, default=0.25, metavar="CORES",
                        help="a run during which other programs used more CPU than this (in cores) is "
                             "measured again (default 0.25)")
    parser.add_argument("--retries", type=int, default=6, metavar="N",
                        help="how many disturbed runs, in all, are measured again (default 6; a re-run "
                             "replaces the disturbed run, and one still disturbed is kept)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32],
                        metavar="LIST", help="comma-separated connection counts (default 1,32)")
    parser.add_argument("--groups", type=int, default=1024, metavar="N",
                        help="mapped consistency groups the reprotect row cycles through (default 1024)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one 2 s run per row after 1 s warm-up, no re-runs, 5000-request soak; "
                             "writes no RESULTS.md")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk when installed (default), else benchmarks/loadgen.py")
    parser.add_argument("--rows", type=lambda s: s.split(","), default=list(ROWS), metavar="LIST",
                        help="comma-separated subset of rows to measure: " + ",".join(ROWS) + " (default all)")
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx row even when nginx is installed")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the server under test to a core of its own")
    parser.add_argument("--profile", metavar="DIR",
                        help="also run the shim rows at the highest concurrency once more under py-spy and "
                             "write raw stacks and a summary to DIR (figures are from the unprofiled run)")
    parser.add_argument("--results", type=Path, metavar="FILE",
                        help=f"write the Markdown report here (default {RESULTS_FILE.relative_to(REPO)} "
                             "for a full run; nothing for --quick)")
    parser.add_argument("--no-results", action="store_true", help="write no Markdown report")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the raw figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeat, args.retries = 2, 1, 1, 0
        args.requests = min(args.requests, 5000)
    if not set(args.rows) <= set(ROWS):
        parser.error(f"--rows: choose from {','.join(ROWS)}")
    if (args.duration < 1 or args.repeat < 1 or args.warmup < 0 or args.requests < 0
            or args.groups < max(args.concurrency)):
        parser.error("--duration must be >= 1, --warmup and --requests >= 0, --groups >= the highest concurrency")
    if args.results is None and not args.quick and not args.no_results:
        args.results = RESULTS_FILE
    if args.no_results:
        args.results = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers this run started are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    args.last_passthrough_rps = 0.0
    client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "python")
    if client == "wrk" and not shutil.which("wrk"):
        print("run.py: --client wrk but wrk is not installed", file=sys.stderr)
        return 2
    command = " ".join([".venv/bin/python benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    started, clock = dt.datetime.now(dt.UTC), time.monotonic()
    info = machine_info(client)
    print("Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    load1 = float(info["load average at start"].split()[0])
    if load1 > 0.5:
        print(f"WARNING: load average {load1} - something else is using the CPU; figures will be lower.",
              flush=True)
    with tempfile.TemporaryDirectory(prefix="shim-bench-") as tmp_name:
        tmp = Path(tmp_name)
        bench = Bench(args, tmp, client)
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2 and not args.no_pin:
            bench.server_cpus, bench.other_cpus = {cpus[-1]}, set(cpus[:-1])
        try:
            return run_all(bench, info, command, started, clock)
        except BenchError as err:
            print(f"run.py: {err}", file=sys.stderr)
            return 1
        finally:
            for server in reversed(list(bench.servers.values())):
                server.stop()


def run_all(bench: Bench, info: dict[str, str], command: str, started: dt.datetime, clock: float) -> int:
    args = bench.args
    files = write_inputs(bench.tmp, group_ids(args.groups))
    start_servers(bench, files)
    print("Servers: " + ", ".join(f"{s.name} pid {s.pid} port {s.port}" for s in bench.servers.values())
          + f"; client: {bench.client}", flush=True)
    if "nginx" not in bench.servers:
        print("nginx is not installed (or --no-nginx): the nginx row is skipped and the passthrough-vs-nginx "
              "target is not evaluated. Install it with: apt-get install nginx", flush=True)
    kinds = [k for k in ROWS if k in args.rows]
    top = max(args.concurrency)
    rows = [Row(kind, concurrency) for concurrency in args.concurrency for kind in kinds
            if SPECS[kind].all_concurrencies or concurrency == top]
    retries_left = args.retries
    for repetition in range(args.repeat):
        for row in rows:
            if row.skipped:
                continue
            label = f" (run {repetition + 1}/{args.repeat})" if args.repeat > 1 else ""
            print(f"- {ROW_TITLES[row.kind]}, concurrency {row.concurrency}{label} ...", flush=True)
            profile = (bool(args.profile) and repetition == 0 and row.kind in ("passthrough", "reprotect")
                       and row.concurrency == max(args.concurrency))
            bench.measure(row, profile)
            while not row.skipped and row.samples[-1].outside > args.max_other and retries_left > 0:
                retries_left -= 1
                print(f"  disturbed: other programs used {row.samples[-1].outside:.2f} cores "
                      f"({row.samples[-1].rps:,.0f} req/s); measuring again ({retries_left} re-runs left)",
                      flush=True)
                row.disturbed += 1
                row.samples.pop()
                bench.measure(row, False)
            if row.skipped:
                print(f"  skipped: {row.skipped}", flush=True)
                continue
            sample = row.samples[-1]
            if row.kind == "passthrough":
                args.last_passthrough_rps = sample.rps
            statuses = " ".join(f"{code}:{count}" for code, count in sorted(sample.statuses.items()))
            print(f"  {sample.rps:,.0f} req/s, p50 {sample.p50_us:,.0f} us, p99 {sample.p99_us:,.0f} us, "
                  f"statuses {statuses}" + (f" errors:{sample.errors}" if sample.errors else "")
                  + (f"; other load {sample.outside:.2f} cores" if sample.outside >= 0.25 else ""), flush=True)
            if sample.statuses.get("200", 0) != sample.requests or sample.errors:
                print(f"  WARNING: not every answer was 200; this row measures errors, not the "
                      f"{ROW_TITLES[row.kind]} path", flush=True)
    if "shim" in bench.servers:
        bench.soak(args.requests)
    rss = proc_status(bench.servers["shim"].pid) if "shim" in bench.servers else {}
    verdicts, ratio_lines = judge(rows, rss.get("VmRSS", 0), bench.shim_requests,
                                  len(bench.server_cpus | bench.other_cpus) if bench.server_cpus and bench.other_cpus
                                  else len(os.sched_getaffinity(0)))
    elapsed = time.monotonic() - clock
    print()
    print(table(rows, markdown=False))
    print()
    print(f"shim VmRSS {rss.get('VmRSS', 0) / 1024:.1f} MB (peak {rss.get('VmHWM', 0) / 1024:.1f} MB) after "
          f"{bench.shim_requests['passthrough']:,} passthrough + {bench.shim_requests['reprotect']:,} "
          "reprotect requests")
    print()
    for line in ratio_lines:
        print(line)
    print()
    for verdict in verdicts:
        print(f"[{mark(verdict.met):>13}] {verdict.target}: {verdict.measured}")
    for name, summary in bench.profiles.items():
        print(f"\nprofile of the shim, {name}:\n{textwrap.indent(summary, '  ')}")
    if args.results is not None:
        write_results(args.results, results_markdown(info, rows, verdicts, ratio_lines, bench,
                                                      {"VmRSS": rss.get("VmRSS", 0), "VmHWM": rss.get("VmHWM", 0)},
                                                      command, started, elapsed))
        print(f"\nwrote {args.results}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "machine": info, "started": started.isoformat(), "rows": [r.as_dict() for r in rows],
            "shim_rss_kb": rss, "shim_requests": dict(bench.shim_requests),
            "targets": [v.__dict__ for v in verdicts], "profiles": bench.profiles,
        }, indent=2))
    bad = [r for r in rows if not r.skipped and not r.all_ok]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
