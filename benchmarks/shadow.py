"""Shadow-mode reads beside plain passthrough reads, in one run: what shadow mode costs the client.

Starts, each as its own OS process on 127.0.0.1: the SDRS simulator and the legacy EVS stand-in
(benchmarks/shadow_world.py) and three shims (`python -m shim serve`): one with the default
`shadow.interval_seconds: 60`, one with 0 (every read compared, the worst case; the comparisons are
bounded by `shadow.max_concurrent`, 4), and one with 0 whose SDRS is down (nothing listens on its
port: every comparison fails). Through each shim, at concurrency 1 and 32, it reads:

- passthrough: `GET .../os-vendor-replication-consistency-groups/{id}` of an unmapped group;
- shadow: the same GET of a group in mode shadow (an identical legacy document).

Both are answered by the same legacy stand-in, so the ratio shadow/passthrough is what shadow mode
adds. It reports req/s and p50 per row (the median of interleaved repetitions), the ratios, and per
read the SDRS calls and comparisons the shim made in the background (from its /metrics). The load
generator is wrk when installed, else benchmarks/loadgen.py (see benchmarks/README.md).

    .venv/bin/python benchmarks/shadow.py           # ~4 minutes, writes benchmarks/SHADOW_RESULTS.md
    .venv/bin/python benchmarks/shadow.py --quick   # ~20 s, writes nothing
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from run import GET_HEADERS, HERE, BenchError, Load, Server, free_port, probe, run_client, start
from shadow_world import PLAIN_RCG, PROJECT, SHADOW_GROUP, SHADOW_RCG

RESULTS_FILE = HERE / "SHADOW_RESULTS.md"
NOTES_MARKER = "<!-- Everything below this line is kept when shadow.py rewrites this file. -->"
GOAL_RATIO = 0.9  # the goal: shadow reads within 10% of passthrough
READS = {"passthrough": PLAIN_RCG, "shadow": SHADOW_RCG}


@dataclass
class Cell:
    shim: str
    kind: str
    concurrency: int
    rps: list[float] = field(default_factory=list)
    p50_us: list[float] = field(default_factory=list)
    requests: int = 0
    non_200: int = 0
    sdrs_calls: float = 0.0
    comparisons: float = 0.0

    @property
    def median_rps(self) -> float:
        return statistics.median(self.rps)

    @property
    def median_p50(self) -> float:
        return statistics.median(self.p50_us)


def metric_total(port: int, name: str, **labels: str) -> float:
    status, body = probe(port, "GET", "/metrics", None, [])
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_shim(name: str, tmp: Path, sdrs_port: int, legacy: Server, interval: float) -> Server:
    mappings = tmp / f"mappings-{name}"
    mappings.mkdir()
    (mappings / "consistency-groups.yaml").write_text(textwrap.dedent(f"""\
        consistency_groups:
          - project_id: {PROJECT}
            replication_consistency_group_id: {SHADOW_RCG}
            protection_group_id: {SHADOW_GROUP}
            mode: shadow
        """))
    port = free_port()
    config = tmp / f"{name}.yaml"
    config.write_text(textwrap.dedent(f"""\
        listen: {{host: 127.0.0.1, port: {port}}}
        upstreams: {{legacy: "http://127.0.0.1:{legacy.port}", sdrs: "http://127.0.0.1:{sdrs_port}"}}
        mappings: {mappings}
        state: {{backend: sqlite, path: {tmp / f"{name}.sqlite3"}}}
        shadow: {{interval_seconds: {interval}}}
        log_level: warning
        """))
    return start(name, [sys.executable, "-m", "shim", "serve", "--config", str(config)], tmp, ready_line=False,
                 port=port)


def measure(args: argparse.Namespace, tmp: Path, client: str) -> list[Cell]:
    python = sys.executable
    servers: list[Server] = []
    try:
        sdrs = start("sdrs", [python, str(HERE / "shadow_world.py"), "--side", "sdrs"], tmp, ready_line=True)
        servers.append(sdrs)
        legacy = start("legacy", [python, str(HERE / "shadow_world.py"), "--side", "legacy"], tmp, ready_line=True)
        servers.append(legacy)
        shims = {"interval 60 s (default)": start_shim("shim-default", tmp, sdrs.port, legacy, 60),
                 "interval 0 (every read)": start_shim("shim-eager", tmp, sdrs.port, legacy, 0),
                 "interval 0, SDRS down": start_shim("shim-sdrs-down", tmp, free_port(), legacy, 0)}
        shims = {name: shim for name, shim in shims.items() if args.only is None or args.only in name}
        servers += shims.values()
        loads = {}
        for kind, rcg in READS.items():
            paths = tmp / f"{kind}.txt"
            paths.write_text(f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{rcg}\n")
            loads[kind] = Load("GET", paths, GET_HEADERS)
            for shim in shims.values():
                status, body = probe(shim.port, "GET", paths.read_text().strip(), None, GET_HEADERS)
                if status != 200:
                    raise BenchError(f"probe of {kind} answered {status}: {body[:300]!r}")
        cells = {(name, kind, c): Cell(name, kind, c) for name in shims for kind in READS for c in args.concurrency}
        order = list(cells.items())
        for repetition in range(args.repeat):  # interleaved, so that a noisy moment spreads over every row,
            for (name, kind, concurrency), cell in order if repetition % 2 == 0 else order[::-1]:  # both orders
                port = shims[name].port
                sdrs_before = metric_total(port, "shim_stage_duration_seconds_count", stage="sdrs")
                compared_before = metric_total(port, "shim_shadow_comparisons_total")
                run = run_client(client, port, loads[kind], concurrency, args.seconds, tmp, None).result
                cell.rps.append(run["rps"])
                cell.p50_us.append(run["p50_us"])
                cell.requests += run["requests"]
                cell.non_200 += run["requests"] - run["statuses"].get("200", 0) + run["errors"]
                cell.sdrs_calls += metric_total(port, "shim_stage_duration_seconds_count", stage="sdrs") - sdrs_before
                cell.comparisons += metric_total(port, "shim_shadow_comparisons_total") - compared_before
                print(f"  {name:24} {kind:11} c={concurrency:<3} {run['rps']:9.0f} req/s  p50 "
                      f"{run['p50_us'] / 1000:6.2f} ms", flush=True)
        return list(cells.values())
    finally:
        for server in reversed(servers):
            server.stop()


def report(cells: list[Cell], client: str, args: argparse.Namespace) -> str:
    by_key = {(cell.shim, cell.kind, cell.concurrency): cell for cell in cells}
    lines = [f"Client: {client}; {args.repeat} repetition(s) of {args.seconds} s per row, interleaved; medians.", "",
             "| shim | c | passthrough req/s | shadow req/s | throughput ratio | passthrough p50 | shadow p50 | "
             "p50 ratio | SDRS calls per shadow read | comparisons per shadow read |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for shim in dict.fromkeys(cell.shim for cell in cells):
        for concurrency in args.concurrency:
            plain, shadow = by_key[(shim, "passthrough", concurrency)], by_key[(shim, "shadow", concurrency)]
            throughput = shadow.median_rps / plain.median_rps
            latency = shadow.median_p50 / plain.median_p50
            lines.append(
                f"| {shim} | {concurrency} | {plain.median_rps:,.0f} | {shadow.median_rps:,.0f} | {throughput:.2f} | "
                f"{plain.median_p50 / 1000:.2f} ms | {shadow.median_p50 / 1000:.2f} ms | {latency:.2f} | "
                f"{shadow.sdrs_calls / shadow.requests:.4f} | {shadow.comparisons / shadow.requests:.4f} |")
            verdicts.append((shim, concurrency, throughput >= GOAL_RATIO and latency <= 1 / GOAL_RATIO))
    errors = sum(cell.non_200 for cell in cells)
    lines += ["", f"Answers other than 200: {errors}."]
    lines += [f"Goal (within 10% of passthrough in req/s and p50), {shim}, c={c}: {'met' if met else 'NOT met'}"
              for shim, c, met in verdicts]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short repetition; writes nothing")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per row and repetition (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repetitions (default 3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32], help="connections (default 1 32)")
    parser.add_argument("--only", metavar="TEXT",
                        help="measure only the shims whose name contains TEXT (writes nothing)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeat = 2, 1
    client = "wrk" if shutil.which("wrk") else "loadgen.py"
    with tempfile.TemporaryDirectory(prefix="shim-shadow-bench-") as tmp:
        cells = measure(args, Path(tmp), client)
    text = report(cells, client, args)
    print("\n" + text)
    if not args.quick and args.only is None:  # a partial run never replaces the full one
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        kept = RESULTS_FILE.read_text().partition(NOTES_MARKER)[2] if RESULTS_FILE.exists() else "\n"
        RESULTS_FILE.write_text(f"# Shadow-mode reads beside passthrough reads\n\nGenerated by "
                                f"`benchmarks/shadow.py` on {stamp}.\n\n{text}\n{NOTES_MARKER}{kept}")
    return 1 if any(cell.non_200 for cell in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
