"""The nginx front's own cost, side by side with plain nginx on one core at the same time.

Plain nginx writing the front's kind of JSON access line (run.py's `nginx-log` row) and nginx
running the config `shim front-config` generates (run.py's `front` row) both relay the passthrough
GET to benchmarks/upstream.py. Unlike run.py, which measures rows one after another, each round
loads the two *at once*, with their workers pinned to the same core and a wrk (c=32 each) apiece on
the other core(s): whatever else the machine does then slows both alike, and as the scheduler
shares the core evenly, the ratio of their req/s is the inverse ratio of their CPU per request when
that core is the limit. Each round reports both ratios and the share of the core the two used: near
100%, the core was the limit; well below, the clients or the upstream were (a busy machine), the
req/s ratio then understates the difference and CPU per request (from /proc) is the figure to read.
On a shared machine these ratios stay within a few percent where run.py's sequential rows scatter
by tens of percent.

    .venv/bin/python benchmarks/front_ab.py                      # 8 rounds of 5 s
    .venv/bin/python benchmarks/front_ab.py --front-from ../old  # also the front another checkout generates

`--front-from DIR` adds a contender: the config the checkout in DIR generates (its `shim`
package), e.g. the commit before a change to shim/front/nginx.py (`git worktree add ../old HEAD~1`).
Needs nginx and wrk; writes nothing but prints.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402  (benchmarks/run.py: its processes, configs and load generator)


def start_front(nginx: str, checkout: Path, tmp: Path, name: str, shim_yaml: Path, cpus: set[int]) -> run.Server:
    """nginx with the config the `shim` package in `checkout` generates for `shim_yaml`."""
    directory = tmp / name
    directory.mkdir()
    port = run.free_port()
    generated = subprocess.run(
        [sys.executable, "-m", "shim", "front-config", "--config", str(shim_yaml), "--listen", f"127.0.0.1:{port}",
         "--access-log", "access.log"],
        cwd=checkout, env={**run.child_env(), "PYTHONPATH": str(checkout)}, capture_output=True, text=True, timeout=60)
    if generated.returncode != 0:
        raise run.BenchError(f"shim front-config in {checkout} failed: {generated.stderr.strip()[-500:]}")
    (directory / "nginx.conf").write_text(generated.stdout)
    return run.start(name, [nginx, "-e", "stderr", "-p", str(directory), "-c", str(directory / "nginx.conf")],
                     tmp, ready_line=False, port=port, cpus=cpus)


def worker_ticks(server: run.Server) -> int:
    return sum(run.cpu_ticks(pid) for pid in server.pids())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=5, help="seconds per round (after a 1 s warm-up)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections per contender")
    parser.add_argument("--front-from", type=Path, action="append", default=[], metavar="DIR",
                        help="also measure the front the checkout in DIR generates (repeatable)")
    args = parser.parse_args()
    nginx = run.find_nginx()
    if nginx is None or not run.shutil.which("wrk"):
        print("needs nginx and wrk (apt-get install nginx wrk)", file=sys.stderr)
        return 2
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        print("needs two CPUs: one shared by the servers, one for the clients", file=sys.stderr)
        return 2
    server_cpu, client_cpus = {allowed[-1]}, set(allowed[:-1])
    servers: list[run.Server] = []
    with tempfile.TemporaryDirectory(prefix="front-ab-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            files = run.write_inputs(tmp, run.group_ids(1))
            upstream = run.start("upstream", [sys.executable, str(run.HERE / "upstream.py")], tmp, ready_line=True,
                                 cpus=client_cpus)
            servers.append(upstream)
            shim_yaml = tmp / "shim.yaml"
            shim_yaml.write_text(f"listen: {{host: 127.0.0.1, port: {run.free_port()}}}\n"
                                 f"upstreams: {{legacy: 'http://127.0.0.1:{upstream.port}', sdrs: 'http://127.0.0.1:9'}}\n"
                                 f"mappings: {files['mappings']}\n")
            port = run.free_port()
            conf = tmp / "nginx-log.conf"
            conf.write_text(run.NGINX_CONF.format(tmp=tmp, name="nginx-log", what="JSON access log",
                                                  access_log=run.NGINX_JSON_LOG.format(tmp=tmp),
                                                  upstream_port=upstream.port, port=port))
            plain = run.start("nginx-log", [nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"], tmp,
                              ready_line=False, port=port, cpus=server_cpu)
            servers.append(plain)
            contenders = [start_front(nginx, run.REPO, tmp, "front", shim_yaml, server_cpu)]
            for number, checkout in enumerate(args.front_from, 1):
                contenders.append(start_front(nginx, checkout.resolve(), tmp, f"front-{number}", shim_yaml,
                                              server_cpu))
            servers += contenders
            load = run.Load("GET", files["get"], run.GET_HEADERS)
            ratios: dict[str, list[float]] = {front.name: [] for front in contenders}
            cpu_ratios: dict[str, list[float]] = {front.name: [] for front in contenders}
            for round_number in range(args.rounds):
                for front in contenders:
                    pair = (plain, front)
                    for server in pair:  # warm-up, one at a time
                        run.run_client("wrk", server.port, load, args.connections, 1, tmp, client_cpus)
                    ticks = [worker_ticks(server) for server in pair]
                    started = time.monotonic()
                    with ThreadPoolExecutor(2) as pool:
                        results = list(pool.map(lambda server: run.run_client(
                            "wrk", server.port, load, args.connections, args.duration, tmp, client_cpus), pair))
                    wall = time.monotonic() - started
                    used = [worker_ticks(server) - before for server, before in zip(pair, ticks, strict=True)]
                    share = sum(used) / run.CLK_TCK / wall
                    for server, result in zip(pair, results, strict=True):
                        statuses = result.result["statuses"]
                        if set(statuses) != {"200"} or result.result["errors"]:
                            raise run.BenchError(f"{server.name}: answers other than 200: {result.result}")
                    rps = [result.result["rps"] for result in results]
                    cpu_us = [ticks / run.CLK_TCK * 1e6 / result.result["requests"]
                              for ticks, result in zip(used, results, strict=True)]
                    ratios[front.name].append(rps[1] / rps[0])
                    cpu_ratios[front.name].append(cpu_us[1] / cpu_us[0])
                    print(f"round {round_number + 1}: {front.name} {rps[1]:,.0f} req/s, nginx-log {rps[0]:,.0f} req/s:"
                          f" {rps[1] / rps[0]:.3f}x; CPU per request {cpu_us[1]:.1f} vs {cpu_us[0]:.1f} us: "
                          f"{cpu_us[1] / cpu_us[0]:.3f}x (the two used {share:.0%} of their core)", flush=True)
        finally:
            for server in reversed(servers):
                server.stop()
    for name, values in ratios.items():
        source = "this checkout" if name == "front" else str(args.front_from[int(name.split("-")[1]) - 1])
        cpu = cpu_ratios[name]
        print(f"{name} ({source}) / plain nginx with the same JSON access log, {len(values)} rounds: req/s median "
              f"{statistics.median(values):.3f}x (range {min(values):.3f}-{max(values):.3f}), CPU per request median "
              f"{statistics.median(cpu):.3f}x (range {min(cpu):.3f}-{max(cpu):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
