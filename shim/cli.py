"""The `shim` command: serve, validate, config-schema, front-config, demo, simulate, legacy-sim, and the
migration tools report, explain, discover. Every subcommand has --help."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shim import __version__
from shim.front import DEFAULT_CA_FILE
from shim.validation import ConfigError

if TYPE_CHECKING:
    from shim.config import Settings
    from shim.credentials import KeyRing
    from shim.mappings import Mappings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shim",
        description="evs-sdrs-shim: answers deprecated EVS v2 replication-consistency-group calls "
        "through SDRS v1, and passes every other call to the legacy EVS endpoint unchanged.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the proxy",
        description="Run the proxy until SIGTERM or SIGINT, then drain (see README, Operations). "
        "SIGHUP reloads the config and mapping files.")
    serve.add_argument("--config", type=Path, required=True, metavar="PATH",
                       help="YAML config file (see README, Configuration); SHIM_* variables override it")
    serve.add_argument("--workers", type=_positive_int, metavar="N",
                       help="run N processes on one port (SO_REUSEPORT); default: the config's `workers` (1)")
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a child of --workers N

    validate = commands.add_parser(
        "validate", help="check a config file, its mapping tables and its state store",
        description="Load the config and every mapping table as `serve` would, and open the state store "
        "(the SQLite file, or the Redis server); exit 2 with one line naming the file, entry or key (the "
        "store's path or URL), and the problem.")
    validate.add_argument("--config", type=Path, required=True, metavar="PATH", help="YAML config file")

    front = commands.add_parser(
        "front-config", help="print an nginx.conf that puts nginx in front of the shim",
        description="Print a complete nginx.conf for the layout where nginx sends the translated URLs "
        "(and every spelling that could name one after normalisation) to the shim and everything else "
        "straight to upstreams.legacy, at nginx's speed. Generated from the shim's config and route "
        "table; regenerate it when either changes. Run it with `nginx -e stderr -p DIR -c FILE` "
        "(see README, Behind nginx).")
    front.add_argument("--config", type=Path, required=True, metavar="PATH",
                       help="the shim's YAML config file (its listen address is where nginx reaches it)")
    front.add_argument("--listen", required=True, metavar="HOST:PORT",
                       help="where nginx listens for the legacy clients, e.g. 127.0.0.1:8080 or [::1]:8080")
    front.add_argument("--kind", choices=["nginx"], default="nginx", help="front proxy (default nginx)")
    front.add_argument("--access-log", default="/dev/stdout", metavar="PATH",
                       help="where nginx writes its JSON access lines (default /dev/stdout; a relative "
                       "path is under nginx's -p prefix)")
    front.add_argument("--ca-file", default=DEFAULT_CA_FILE, metavar="PATH",
                       help=f"CA bundle nginx checks an https legacy endpoint against (default {DEFAULT_CA_FILE})")

    report = commands.add_parser(
        "report", help="print the migration report: per mapped group its mode, shadow results and last action",
        description="Per mapped group: its mode, the last shadow comparisons (matches, mismatches by field, "
        "when), the last dry run of a shadow action, and the last action the shim sent with its job outcome. "
        "Read from the mapping files and the state store a running shim writes (state.backend sqlite or "
        "redis); GET /migration on the shim answers the same as JSON (see README, Migration).")
    report.add_argument("--config", type=Path, required=True, metavar="PATH", help="the shim's YAML config file")
    report.add_argument("--json", action="store_true", help="print the JSON GET /migration answers instead")
    report.add_argument("--token-file", type=Path, metavar="PATH",
                        help="read the unfinished last actions' jobs from SDRS with the IAM token in this file "
                        "(default: $OS_TOKEN when set; without a token the report shows the state store's record "
                        "and when it was written)")

    explain = commands.add_parser(
        "explain", help="say which side would serve a legacy call, and what it would send and answer",
        description="Explain a legacy call without sending anything: which side owns it and why (mapping "
        "entry, mode, project default), which SDRS calls the shim would make, what the legacy answer would "
        "look like, and what shadow mode would compare.")
    explain.add_argument("--config", type=Path, required=True, metavar="PATH", help="the shim's YAML config file")
    explain.add_argument("method", metavar="METHOD", help="GET, POST, PUT, DELETE, ...")
    explain.add_argument("url", metavar="URL", help="the legacy URL or path, e.g. /v2/{project_id}/os-vendor-"
                         "replication-consistency-groups/{id}/action")
    explain.add_argument("body", metavar="BODY", nargs="?",
                         help='the request body, e.g. \'{"os-reprotect-replication-consistency-group": null}\'')

    discover_cmd = commands.add_parser(
        "discover", help="write mapping entries from evidence: legacy groups matched to SDRS groups by volume",
        description="Read a project's legacy replication consistency groups and pairs and its SDRS protection "
        "groups and pairs (GETs only), match them by their production volumes, and print the mapping file "
        "with the new entries (in mode shadow) on stdout and a report of what could not be matched or is "
        "ambiguous on stderr. The token comes from $OS_TOKEN or --token-file, never from an argument; "
        "without one, a configured aksk key pair signs the calls.")
    discover_cmd.add_argument("--config", type=Path, required=True, metavar="PATH",
                              help="the shim's YAML config file (its upstreams and mappings directory)")
    discover_cmd.add_argument("--project", required=True, metavar="ID", help="the project id")
    discover_cmd.add_argument("--token-file", type=Path, metavar="PATH",
                              help="a file holding the IAM token (default: the OS_TOKEN variable)")
    discover_cmd.add_argument("--access-key", metavar="AK",
                              help="sign with this configured aksk key pair instead of a token")
    discover_cmd.add_argument("--write", action="store_true",
                              help="add the new entries to the live consistency-groups.yaml (backed up first)")

    mode = commands.add_parser(
        "mode", help="show or switch the fleet's modes: one switch obeyed by every shim sharing the store",
        description="The fleet's modes live in the shared state store (seeded from the mapping file by every "
        "shim at start): `set` switches one group or one project's default for every shim that uses the store, "
        "with an audit record (who, when, from, to); `show` prints the modes, their versions, the shims' "
        "heartbeats and the last switches (see README, One switch for the fleet).")
    mode_commands = mode.add_subparsers(dest="mode_command", required=True, metavar="SUBCOMMAND")
    mode_set = mode_commands.add_parser("set", help="switch a group, or a project's default, for the whole fleet")
    mode_set.add_argument("--config", type=Path, required=True, metavar="PATH", help="the shim's YAML config file")
    target = mode_set.add_mutually_exclusive_group(required=True)
    target.add_argument("--group", metavar="RCG", help="the legacy replication consistency group id (mapped)")
    target.add_argument("--project", metavar="P", help="the project id: its default mode (`none`: no default)")
    mode_set.add_argument("--who", metavar="NAME", help="who switches, for the audit record (default user@host)")
    mode_set.add_argument("mode", metavar="MODE", choices=["legacy", "shadow", "sdrs", "none"],
                          help="legacy, shadow or sdrs (a project: also none)")
    mode_show = mode_commands.add_parser("show", help="print the fleet's modes, the shims' heartbeats, the audit")
    mode_show.add_argument("--config", type=Path, required=True, metavar="PATH", help="the shim's YAML config file")
    mode_show.add_argument("--json", action="store_true", help="print JSON")

    demo = commands.add_parser(
        "demo", help="run simulator, legacy stand-in and shim on loopback",
        description="Start an SDRS simulator (one failed-over protection group), a legacy EVS stand-in "
        "and the shim, all on loopback, and print curl commands to try. No cloud account needed.")
    demo.add_argument("--port", type=int, default=8080, help="shim port (default 8080; 0 = any free port)")
    demo.add_argument("--check", action="store_true",
                      help="run the printed commands once, report, and exit (non-zero if one misbehaves)")
    demo.add_argument("--job-seconds", type=float, default=20.0,
                      help="how long simulated SDRS jobs run (default 20)")

    schema = commands.add_parser(
        "config-schema", help="print the config file's JSON Schema",
        description="Print the JSON Schema (draft 2020-12) of the YAML config file, generated from the "
        "settings models `serve` validates with: every key, its type, bounds, default and description. "
        "For editors and CI checks; `shim validate` remains the complete check (files, key pairs, store).")
    schema.add_argument("--indent", type=int, default=2, metavar="N", help="indentation (default 2; 0: one line)")

    legacy_sim = commands.add_parser(
        "legacy-sim", help="run the legacy EVS v2 stand-in alone",
        description="Run the legacy EVS v2 stand-in (replication pairs and consistency groups, with state; "
        "README, Legacy EVS stand-in) on loopback. It accepts any token.")
    legacy_sim.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    legacy_sim.add_argument("--port", type=int, default=8776, help="listen port (default 8776; 0 = any free port)")
    legacy_sim.add_argument("--seed-demo", action="store_true",
                            help="start with the demo's two groups (one mapped by the shipped mappings, one not)")
    legacy_sim.add_argument("--transition-seconds", type=float, default=0.2,
                            help="time a group or pair stays creating/updating/deleting/failovering/reversing")
    legacy_sim.add_argument("--copy-seconds", type=float, default=0.2,
                            help="time replication stays copying after a sync or reprotect")

    simulate = commands.add_parser(
        "simulate", help="run the SDRS v1 simulator alone",
        description="Run the SDRS v1 simulator (protection groups, jobs, replication pairs) on loopback.")
    simulate.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    simulate.add_argument("--port", type=int, default=8777, help="listen port (default 8777)")
    simulate.add_argument("--seed-demo", action="store_true",
                          help="start with the demo's failed-over protection group")
    simulate.add_argument("--job-init-seconds", type=float, default=1.0, help="time a job stays INIT")
    simulate.add_argument("--job-run-seconds", type=float, default=20.0, help="time a job stays RUNNING")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from shim.runtime.server import ListenError

    try:
        return _run(args)
    except ConfigError as err:
        print(f"shim: config error: {err}", file=sys.stderr)
        return 2
    except ListenError as err:
        hint = " (choose another --port; 0 picks a free one)" if args.command in ("demo", "simulate", "legacy-sim") \
            else ""
        print(f"shim: {err}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from shim.runtime.server import serve
        from shim.web.logs import configure_logging

        settings, mappings, keys = _load_checked(args.config)
        configure_logging(settings.log_level, log_format=settings.log_format)
        workers = args.workers or settings.workers
        if workers > 1 and settings.state.backend == "memory":
            raise ConfigError(f"{args.config}: state.backend: memory cannot be shared by {workers} workers; "
                              "use sqlite or redis")
        if workers > 1 and not args.worker:
            from shim.runtime.server import run_workers

            return run_workers(args.config, settings, workers)
        run_event_loop(serve(settings, mappings, args.config, reuse_port=args.worker, keys=keys))
        return 0
    if args.command == "validate":
        settings, mappings, keys = _load_checked(args.config)
        scheme = "https" if settings.listen.tls is not None else "http"
        print(f"{args.config}: ok ({len(mappings.groups)} mapped consistency groups, "
              f"{len(mappings.errors.codes)} SDRS error codes, {len(keys)} AK/SK key pair(s); listen "
              f"{scheme}://{settings.listen.host}:{settings.listen.port}, {settings.workers} worker(s), "
              f"drain {settings.lifecycle.drain_seconds:g}s "
              f"after {settings.lifecycle.readiness_grace_seconds:g}s readiness grace, at most "
              f"{settings.limits.max_concurrent_translated} translated calls at once; state "
              f"{_describe_state(settings)})")
        for line in asyncio.run(_retired_entries(settings, mappings)):
            print(f"{args.config}: {line}")
        return 0
    if args.command == "front-config":
        from shim.config import load_settings
        from shim.front.nginx import parse_address, render_nginx_conf
        from shim.mappings import load_mappings

        try:
            listen = parse_address(args.listen)
        except ValueError as err:
            raise ConfigError(f"--listen: {err}") from None
        settings = load_settings(args.config)
        mappings = load_mappings(settings.mappings)
        print(render_nginx_conf(settings, mappings.errors, listen, source=str(args.config),
                                access_log=args.access_log, ca_file=args.ca_file), end="")
        return 0
    if args.command in ("report", "explain", "discover"):
        return _migration_command(args)
    if args.command == "mode":
        return _mode_command(args)
    if args.command == "demo":
        from shim.runtime import demo

        return demo.main(args.port, args.check, args.job_seconds)
    if args.command == "simulate":
        from shim.runtime.server import ListenError
        from shim.simulator import SimulatorSettings
        from shim.simulator.server import serve as serve_simulator
        from shim.web.logs import configure_logging

        configure_logging("info")
        simulator_settings = SimulatorSettings(
            job_init_seconds=args.job_init_seconds, job_run_seconds=args.job_run_seconds
        )
        try:
            asyncio.run(serve_simulator(args.host, args.port, simulator_settings, args.seed_demo))
        except OSError as err:
            raise ListenError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
        return 0
    if args.command == "config-schema":
        import json

        from shim.config import config_schema

        print(json.dumps(config_schema(), indent=args.indent or None))
        return 0
    if args.command == "legacy-sim":
        from shim.legacy_sim import LegacySimSettings
        from shim.runtime.legacy_stub import serve as serve_legacy
        from shim.runtime.server import ListenError
        from shim.web.logs import configure_logging

        configure_logging("info")
        try:
            legacy_settings = LegacySimSettings(transition_seconds=args.transition_seconds,
                                                copy_seconds=args.copy_seconds)
            asyncio.run(serve_legacy(args.host, args.port, legacy_settings, args.seed_demo))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        except OSError as err:
            raise ListenError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
        return 0
    raise AssertionError(args.command)


def _mode_command(args: argparse.Namespace) -> int:
    import json

    from shim.config import load_settings
    from shim.mappings import load_mappings
    from shim.migration import fleet_command

    settings = load_settings(args.config)
    if settings.state.backend == "memory":
        raise ConfigError(f"{args.config}: state.backend: memory is this process's only; the fleet's modes need "
                          "sqlite or redis")
    mappings = load_mappings(settings.mappings)
    if args.mode_command == "set":
        record = asyncio.run(fleet_command.set_mode(settings, mappings, args.group, args.project, args.mode,
                                                    args.who or fleet_command.default_who()))
        print(json.dumps(record, sort_keys=True))
        print(f"shim: {record['kind']} {record['name']}: {record['from']} -> {record['to']} at mode version "
              f"{record['version']}; {fleet_command.BOUND_NOTE}", file=sys.stderr)
        return 0
    shown = asyncio.run(fleet_command.show(settings, mappings))
    print(json.dumps(shown, indent=2) if args.json else fleet_command.render(shown), end="\n" if args.json else "")
    return 0


def _migration_command(args: argparse.Namespace) -> int:
    from shim.migration import commands

    if args.command == "report":
        from shim.config import load_settings
        from shim.mappings import load_mappings

        settings = load_settings(args.config)
        print(commands.report(settings, load_mappings(settings.mappings), args.json,
                              commands.read_token(args.token_file), config=str(args.config)), end="")
        return 0
    if args.command == "explain":
        from shim.config import load_settings
        from shim.mappings import load_mappings

        print(commands.explanation(load_mappings(load_settings(args.config).mappings), args.method, args.url,
                                   args.body), end="")
        return 0
    settings, mappings, keys = _load_checked(args.config)
    return commands.discover_command(settings, mappings, keys, args.project, commands.read_token(args.token_file),
                                     args.access_key, args.write)


def _load_checked(config: Path) -> tuple[Settings, Mappings, KeyRing]:
    """Config, mapping tables and key pairs, with every file they name checked (TLS files loadable,
    key files readable): what `serve` needs and `validate` reports on; ConfigError otherwise."""
    from shim import tls
    from shim.config import load_settings
    from shim.credentials import load_key_ring
    from shim.mappings import load_mappings

    settings = load_settings(config)
    mappings = load_mappings(settings.mappings)
    keys = load_key_ring(settings.aksk, str(config))
    if settings.listen.tls is not None:
        tls.server_context(settings.listen.tls, str(config))
    if settings.upstreams.ca_file is not None:
        tls.client_context(settings.upstreams.ca_file, str(config))
    _check_spool_directory(settings, str(config))
    if settings.tracing.enabled:
        from shim.tracing import TracingUnavailable, check_available

        try:
            check_available()
        except TracingUnavailable as err:
            raise ConfigError(f"{config}: tracing.enabled: {err}") from None
    return settings, mappings, keys


def _check_spool_directory(settings: Settings, source: str) -> None:
    """Passthrough bodies over limits.request_buffer_bytes go to temporary files: their directory must
    take one (checked once here, rather than found out by the first large upload)."""
    import tempfile

    if settings.limits.request_spool_bytes == 0 or settings.upstreams.legacy is None:
        return
    directory = settings.passthrough.spool_directory
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        where = directory or "the system's temporary directory ($TMPDIR, /tmp)"
        raise ConfigError(f"{source}: passthrough.spool_directory: {where} cannot hold temporary files for "
                          f"request bodies ({type(err).__name__}: {err.strerror or err})") from None


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (the `fast` extra), else on the standard loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _describe_state(settings: Any) -> str:
    state = settings.state
    if state.backend == "sqlite":
        return f"sqlite {state.path}"
    if state.backend == "redis":
        from yarl import URL

        if state.sentinels:
            return f"redis primary {state.sentinel_master!r} of the Sentinels {', '.join(state.sentinels)}"
        return f"redis {URL(state.url).with_password(None).with_user(None)}"  # never print credentials
    return "memory (this process only)"


def _without_password(text: str, url: str | None) -> str:
    from yarl import URL

    password = URL(url).password if url else None
    return text.replace(password, "***") if password else text


async def _retired_entries(settings: Any, mappings: Any) -> list[str]:
    """Mapping entries whose group this shim deleted (the state store's notes). A store that cannot
    be opened (a file that cannot be written, a Redis that does not answer) is a ConfigError naming
    the path or URL; one that opens but cannot be read is said to be so."""
    if settings.state.backend == "memory":
        return []
    from shim.state.backends import build_store
    from shim.state.group_notes import GroupNotes
    from shim.state.store import StoreUnavailable

    store = build_store(settings.state)
    lines = []
    try:
        try:
            await store.open()
        except StoreUnavailable as err:  # what `serve` would refuse every action for: not a valid deployment
            key = ("state.path" if settings.state.backend == "sqlite" else
                   "state.sentinels" if settings.state.sentinels else "state.url")
            raise ConfigError(f"{key}: the state store {_describe_state(settings)} cannot be opened: "
                              f"{_without_password(str(err), settings.state.url)[:300]}") from None
        notes = GroupNotes(store)
        for index, entry in enumerate(mappings.groups.values()):
            retired = await notes.retired(entry)
            if retired is not None:
                deleted = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(retired.get("deleted_at", 0))))
                lines.append(f"warning: consistency_groups entry {index} ({entry.rcg_id}) points at protection group "
                             f"{entry.protection_group_id}, deleted through the shim at {deleted} (SDRS job "
                             f"{retired.get('job_id')}): the entry is retired and may be removed; the group stays "
                             f"deleted (404, out of lists, its legacy copy never read) because the state store "
                             f"({_describe_state(settings)}) remembers it, not the mapping file: keep that store, "
                             "shared by every shim serving the project")
    except StoreUnavailable as err:
        lines.append(f"note: the state store could not be read ({str(err)[:200]}): deleted groups not checked")
    finally:
        await store.close()
    return lines
