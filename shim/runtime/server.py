"""Run the shim: one process, or `--workers N` processes sharing one port (SO_REUSEPORT).

Signals: SIGTERM/SIGINT drain (readiness 503, a grace period, stop accepting, let in-flight requests
finish within `lifecycle.drain_seconds`, close the upstream sessions); SIGHUP reloads config and
mappings (shim/runtime/reload.py). A worker parent forwards all three to its workers.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from aiohttp import web

from shim import tls
from shim.config import Settings
from shim.credentials import KeyRing
from shim.mappings import Mappings
from shim.runtime.reload import announce_reload, reload_config
from shim.runtime.watch import watch_files
from shim.web.app import build_app, build_management_app
from shim.web.logs import JsonAccessLogger
from shim.web.protocol import ConnectionBounds, ShimRunner
from shim.web.shim_state import STATE, ShimState

log = logging.getLogger("shim")
access_log = logging.getLogger("shim.access")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_TLS_CLOSE_SECONDS = 0.25  # aiohttp's advice: let TLS transports close before the loop stops
RELOAD_MIN_INTERVAL_SECONDS = 0.2  # at most five reloads a second, however many SIGHUPs arrive


class ListenError(Exception):
    """The listen address cannot be bound (in use, not local, no permission)."""


def make_runner(app: web.Application, settings: Settings | None = None) -> web.AppRunner:
    """A runner for `app`; with the shim's `settings` (the app is the shim's): JSON access log, the
    drain time, and bounded connections and request heads (shim/web/protocol.py)."""
    if settings is None:
        return web.AppRunner(app, access_log=None, handle_signals=False)
    state = app[STATE]
    bounds = ConnectionBounds(head_seconds=settings.timeouts.request_head,
                              head_bytes=settings.limits.request_head_bytes,
                              max_connections=settings.limits.client_connections)
    return ShimRunner(
        app, bounds=bounds, metrics=state.metrics, errors=lambda: state.mappings.errors,
        handle_signals=False, access_log=access_log, access_log_class=JsonAccessLogger,
        # aiohttp waits this long for in-flight handlers on cleanup, then cancels them.
        shutdown_timeout=settings.lifecycle.drain_seconds,
    )


async def start_site(
    app: web.Application, host: str, port: int, *, settings: Settings | None = None, reuse_port: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, int]:
    """Start `app` on host:port (0 = any free port), https with `ssl_context`; returns the runner
    and the bound port."""
    runner = make_runner(app, settings)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise ListenError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return runner, site.port


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def serve(
    settings: Settings, mappings: Mappings, config_path: Path | None = None, *, reuse_port: bool = False,
    keys: KeyRing | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain; SIGHUP reloads from `config_path`."""
    app = build_app(settings, mappings, keys)
    state = app[STATE]
    state.config_path = str(config_path) if config_path is not None else None
    if settings.listen.tls is not None:
        state.server_tls = tls.server_context(settings.listen.tls, str(config_path or "config"))
    stop = asyncio.Event()
    with _signal_handlers(stop, state, config_path):  # before listening: no signal finds the default action
        # The management listener first (its /readyz says "starting" until the shim is up) and closed
        # last: probes see the drain's 503 and scrapes reach the metrics until the end.
        management = await start_management(app, settings, reuse_port=reuse_port)
        try:
            runner, port = await start_site(app, settings.listen.host, settings.listen.port, settings=settings,
                                            reuse_port=reuse_port, ssl_context=state.server_tls)
            log.info("listening", extra={
                "address": f"{settings.listen.host}:{port}", "port": port, "pid": os.getpid(),
                "scheme": "https" if state.server_tls is not None else "http", "aksk_key_pairs": len(state.keys),
                "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
                "sdrs": settings.upstreams.sdrs, "legacy": settings.upstreams.legacy,
                "mapped_groups": len(mappings.groups), "config_digest": state.config_digest})
            await stop.wait()
            await drain(runner, state)
        finally:
            if management is not None:
                await management.cleanup()


async def start_management(
    app: web.Application, settings: Settings, *, reuse_port: bool = False
) -> web.AppRunner | None:
    """The management listener (`management: {host, port}`), when configured: its runner."""
    if settings.management is None:
        return None
    host, wanted = settings.management.host, settings.management.port
    runner = web.AppRunner(build_management_app(app), handle_signals=False, access_log=access_log,
                           access_log_class=JsonAccessLogger, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, wanted, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise ListenError(f"cannot listen on {host}:{wanted} (management): {err.strerror or err}") from None
    log.info("management listening", extra={
        "address": f"{host}:{site.port}", "port": site.port, "pid": os.getpid(),
        "also_on_listen": settings.management.also_on_listen})
    return runner


async def drain(runner: web.AppRunner, state: ShimState) -> None:
    """Readiness first, a grace for load balancers to notice, then stop accepting and drain."""
    lifecycle = state.settings.lifecycle
    state.health.draining = True
    state.metrics.draining.set(1)
    log.info("draining: /readyz now answers 503", extra={
        "in_flight": state.health.in_flight, "readiness_grace_seconds": lifecycle.readiness_grace_seconds,
        "drain_seconds": lifecycle.drain_seconds})
    await asyncio.sleep(lifecycle.readiness_grace_seconds)
    log.info("listener closed; waiting for in-flight requests", extra={"in_flight": state.health.in_flight})
    # Stops the sites (new connections are refused), closes idle keep-alive connections, waits up to
    # shutdown_timeout (= drain_seconds) for handlers, cancels the rest, then closes upstream sessions.
    await runner.cleanup()
    upstreams = (state.settings.upstreams.sdrs, state.settings.upstreams.legacy or "")
    if any(url.startswith("https:") for url in upstreams):
        await asyncio.sleep(_TLS_CLOSE_SECONDS)
    log.info("stopped")


@contextmanager
def _signal_handlers(stop: asyncio.Event, state: ShimState, config_path: Path | None) -> Iterator[None]:
    loop = asyncio.get_running_loop()

    def on_stop() -> None:
        if stop.is_set():
            log.info("already draining; the signal changes nothing")
        stop.set()

    reload_due: asyncio.TimerHandle | None = None
    last_reload = -RELOAD_MIN_INTERVAL_SECONDS

    reloads: set[asyncio.Task[None]] = set()
    reloading = asyncio.Lock()

    async def reload_and_refresh(path: Path) -> None:
        async with reloading:
            if reload_config(state, path, announce=False):
                try:
                    await state.fleet.refresh()  # the file's mode changes, in the fleet's modes first
                except Exception:  # never a lost reload: the view's next refresh tries again
                    log.exception("reload: the fleet's modes could not be refreshed")
                announce_reload(state)

    def reload_now() -> None:
        nonlocal reload_due, last_reload
        reload_due, last_reload = None, loop.time()
        if config_path is None:
            log.warning("SIGHUP: no config file to reload from")
        else:
            task = loop.create_task(reload_and_refresh(config_path))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    def on_reload() -> None:
        # SIGHUPs that arrive together (a config watcher, a burst of kill -HUP) are one reload, and
        # reloads are spaced out: a flood of signals never starves the requests being served.
        nonlocal reload_due
        if reload_due is None:
            reload_due = loop.call_at(max(loop.time(), last_reload + RELOAD_MIN_INTERVAL_SECONDS), reload_now)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_stop)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    watcher = None if config_path is None else loop.create_task(
        watch_files(config_path, on_reload, lambda: state.settings.mappings))
    # A worker of `--workers N` starts with these signals blocked (see run_workers): one sent while
    # it was starting has waited, and is handled now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    try:
        yield
    finally:
        for sig in (*STOP_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if reload_due is not None:
            reload_due.cancel()
        if watcher is not None:
            watcher.cancel()


# -- --workers N: a parent process and N workers on one port --------------------------------------


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT but never listening: it fixes the port number
    (a real one when `port` is 0) for the workers to share, and takes no connections itself."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def run_workers(config_path: Path, settings: Settings, workers: int) -> int:
    """Start `workers` processes of `shim serve --worker` on one port, forward SIGTERM/SIGINT/SIGHUP
    to them, and return when all have exited: 0, or 1 if one failed or exited unasked (the others
    are then stopped too, so a supervisor restarts the whole set)."""
    reservation = reserve_port(settings.listen.host, settings.listen.port)
    port = reservation.getsockname()[1]
    command = [sys.executable, "-m", "shim", "serve", "--config", str(config_path), "--worker"]
    # The workers share the duplicate-action guard through the state store (`state`, never memory).
    env = {**os.environ, "SHIM_LISTEN__PORT": str(port)}
    management_reservation = None
    if settings.management is not None:  # the workers share the management port the same way
        management_reservation = reserve_port(settings.management.host, settings.management.port)
        env["SHIM_MANAGEMENT__PORT"] = str(management_reservation.getsockname()[1])
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = stopping or signum != signal.SIGHUP
        for child in list(children.values()):
            with suppress(ProcessLookupError):
                child.send_signal(signum)

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    log.info("starting workers", extra={"address": f"{settings.listen.host}:{port}", "port": port,
                                        "pid": os.getpid(), "workers": workers})
    # A worker inherits the signal mask: with these blocked, a SIGHUP (or SIGTERM) that arrives before
    # its handlers are installed waits for them instead of killing it with the default action. The
    # parent's own copies wait until every worker is spawned, then are forwarded to all of them.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        for _ in range(workers):
            child = subprocess.Popen(command, env=env, preexec_fn=_die_with(os.getpid()))
            children[child.pid] = child
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    log.info("workers started", extra={"address": f"{settings.listen.host}:{port}", "port": port,
                                       "pid": os.getpid(), "worker_pids": sorted(children)})
    failed = False
    while children:
        pid, status = os.wait()  # interrupted by a signal, Python runs `forward` and waits again
        exited = children.pop(pid, None)
        if exited is None:
            continue
        exited.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0 or not stopping:
            failed = True
            log.error("worker exited", extra={"worker_pid": pid, "exit_code": code, "asked_to_stop": stopping})
        if not stopping:
            stopping = True
            forward(signal.SIGTERM, None)
    reservation.close()
    if management_reservation is not None:
        management_reservation.close()
    log.info("all workers stopped", extra={"pid": os.getpid()})
    return 1 if failed else 0


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(parent_pid: int) -> Callable[[], None]:
    """For a worker, between fork and exec: the kernel sends it SIGTERM (a drain) when the parent
    dies, however it dies (SIGKILL included), so no orphaned worker keeps the port with a guard of
    its own. A parent that died before this ran is caught by the pid check."""

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return arm
