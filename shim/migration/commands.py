"""The I/O shell of `shim report`, `shim explain` and `shim discover` (the CLI parses, this runs)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from shim import __version__, tls
from shim.config import Settings
from shim.credentials import KeyRing
from shim.mappings import CONSISTENCY_GROUPS_FILE, Mappings
from shim.migration.discovery import Discovery, discover, render_findings
from shim.migration.explain import explain
from shim.migration.mapping_file import entry_comment, with_entries, write_with_backup
from shim.migration.readiness import NextStepContext
from shim.migration.report import JobReader, build_report, render_table
from shim.state.backends import build_store
from shim.state.store import StateStore, StoreUnavailable
from shim.translate.legacy import PAIR_COLLECTION, RCG_COLLECTION, LegacyError, canonical_project_id, is_legacy_id
from shim.translate.signing import EMPTY_PAYLOAD_HASH, KeyPair
from shim.upstreams.resign import resign
from shim.upstreams.sdrs_calls import ListBounds, SdrsCalls
from shim.upstreams.sdrs_client import SdrsClient
from shim.validation import ConfigError

LEGACY_PAGE = 1000  # the legacy API's largest `limit`
TOKEN_VARIABLE = "OS_TOKEN"  # the OpenStack CLI's


# -- shim report ------------------------------------------------------------------------------------


def report(settings: Settings, mappings: Mappings, as_json: bool, token: str | None = None,
           config: str | None = None) -> str:
    return asyncio.run(_report(settings, mappings, as_json, token, config))


async def _with_fleet_modes(mappings: Mappings, store: StateStore) -> Mappings:
    """The modes the fleet serves (README, One switch for the fleet), when the store has them."""
    from shim.state.fleet import read_modes
    from shim.translate.fleet import effective

    try:
        fleet = await read_modes(store)
    except StoreUnavailable:
        return mappings
    return effective(mappings, fleet, confirmed=True) if fleet.groups or fleet.projects else mappings


async def _report(settings: Settings, mappings: Mappings, as_json: bool, token: str | None = None,
                  config: str | None = None) -> str:
    state = settings.state
    if state.backend == "memory":
        print("shim report: state.backend is memory: a running shim's records are in its own process only "
              "(GET /migration); showing the modes", file=sys.stderr)
    if state.backend == "sqlite" and not state.path.exists():
        print(f"shim report: no state file at {state.path} yet (no shim has written one); showing the modes",
              file=sys.stderr)
        state = state.model_copy(update={"backend": "memory"})  # never create the file from here
    store = build_store(state)
    try:
        await store.open()
    except StoreUnavailable as err:
        print(f"shim report: state store unavailable ({err}); showing the modes", file=sys.stderr)
    sdrs = None
    try:
        if token is not None:  # the unfinished jobs' state, from SDRS itself
            upstreams = settings.upstreams
            context = tls.client_context(upstreams.ca_file, "config") if upstreams.ca_file is not None else None
            sdrs = SdrsClient(upstreams.sdrs, settings.timeouts.sdrs, 4, tls=context, trust_env=upstreams.trust_env)
            await sdrs.start()
        mappings = await _with_fleet_modes(mappings, store)
        reader = job_reader(sdrs, token, mappings) if sdrs is not None and token is not None else None
        # The next steps' commands name the config given (a SIGHUP goes to the running shim, whose pid
        # this command does not know).
        next_step = NextStepContext(str(mappings.source / CONSISTENCY_GROUPS_FILE), None, config)
        built = await build_report(mappings, store, reader, next_step=next_step)
    finally:
        await store.close()
        if sdrs is not None:
            await sdrs.close()
    return json.dumps(built, indent=2) + "\n" if as_json else render_table(built)


def job_reader(sdrs: SdrsClient, token: str, mappings: Mappings) -> JobReader:
    """Reads one SDRS job with `token`, for the report (`shim report` and GET /migration)."""

    async def read(project_id: str, job_id: str) -> dict[str, Any] | None:
        request_id = "req-" + str(uuid.uuid4())
        headers = {"X-Auth-Token": token, "X-Request-Id": request_id, "X-Openstack-Request-Id": request_id}
        try:
            job = await SdrsCalls(sdrs, headers, mappings.errors, {}).job(project_id, job_id)
        except LegacyError as err:
            raise RuntimeError(f"SDRS job {job_id}: {err.message}") from None
        if job is None:
            return None
        return {"status": job.status, "job_type": job.job_type, "error_code": job.error_code,
                "fail_reason": job.fail_reason}

    return read


# -- shim explain -----------------------------------------------------------------------------------


def explanation(mappings: Mappings, method: str, url: str, body: str | None) -> str:
    return explain(mappings, method, url, None if body is None else body.encode()).render()


# -- shim discover ----------------------------------------------------------------------------------


def read_token(token_file: Path | None) -> str | None:
    """The IAM token: `--token-file`, else $OS_TOKEN; never a command-line argument (argv is visible
    to every user of the machine)."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"--token-file: cannot read {token_file}: {getattr(err, 'strerror', None) or err}"
                              ) from None
        if not token:
            raise ConfigError(f"--token-file: {token_file} is empty")
        return token
    return os.environ.get(TOKEN_VARIABLE, "").strip() or None


def signing_key(keys: KeyRing, access_key: str | None) -> KeyPair:
    if access_key is not None:
        if access_key not in keys:
            raise ConfigError(f"--access-key: {access_key} is not one of the config's aksk key pairs")
        return keys[access_key]
    if len(keys) != 1:
        raise ConfigError(f"no token: set {TOKEN_VARIABLE} or --token-file, or name one of the config's aksk key "
                          "pairs with --access-key")
    return next(iter(keys.values()))


def discover_command(settings: Settings, mappings: Mappings, keys: KeyRing, project: str, token: str | None,
                     access_key: str | None, write: bool) -> int:
    if not is_legacy_id(project):
        raise ConfigError(f"--project: {project!r} is not a project id (32 hexadecimal digits)")
    if settings.upstreams.legacy is None:
        raise ConfigError("upstreams.legacy: discovery reads the legacy groups, so it needs the legacy endpoint")
    key = None if token is not None else signing_key(keys, access_key)
    project_id = canonical_project_id(project)
    try:
        found = asyncio.run(_discover(settings, mappings, project_id, token, key))
    except LegacyError as err:
        print(f"shim discover: {err.message}", file=sys.stderr)
        return 1
    path = mappings.source / CONSISTENCY_GROUPS_FILE
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    matched = found.of("matched")
    new_text, kept_comments = with_entries(text, found.new_entries(), [entry_comment(item) for item in matched])
    sys.stdout.write(new_text)
    report = render_findings(found)
    if write and matched:
        backup = write_with_backup(path, new_text)
        report += (f"Wrote {len(matched)} new entr{'y' if len(matched) == 1 else 'ies'} (mode shadow) to {path}"
                   + (f"; the previous file is {backup}" if backup else "")
                   + ("" if kept_comments else " (its comments are only in the backup)")
                   + ". Reload the shim (SIGHUP) to apply.\n")
    elif write:
        report += f"Nothing new to write; {path} is unchanged.\n"
    else:
        report += f"Printed the mapping file with the new entries; --write replaces {path} (with a backup).\n"
    sys.stderr.write(report)
    return 0


async def _discover(settings: Settings, mappings: Mappings, project_id: str, token: str | None,
                    key: KeyPair | None) -> Discovery:
    upstreams, timeouts = settings.upstreams, settings.timeouts
    context = tls.client_context(upstreams.ca_file, "config") if upstreams.ca_file is not None else None
    headers = {"X-Auth-Token": token} if token is not None else {"X-Project-Id": project_id}
    sdrs = SdrsClient(upstreams.sdrs, timeouts.sdrs, 4, tls=context, trust_env=upstreams.trust_env)
    await sdrs.start()
    try:
        calls = SdrsCalls(sdrs, headers, mappings.errors, {}, key=key)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=4, ssl=context or True), trust_env=upstreams.trust_env,
            timeout=aiohttp.ClientTimeout(total=timeouts.legacy.total, connect=timeouts.legacy.connect,
                                          sock_read=timeouts.legacy.read),
            headers={"User-Agent": f"evs-sdrs-shim/{__version__} (discover)", "Accept": "application/json"},
        ) as session:
            bounds = ListBounds(settings.limits.sdrs_list_items, timeouts.sdrs_list)
            legacy = _LegacyLister(session, upstreams.legacy or "", project_id, headers, key, bounds,
                                   settings.limits.upstream_body_bytes)
            groups, pairs, sdrs_groups, sdrs_pairs = await asyncio.gather(
                legacy.all(RCG_COLLECTION, "replication_consistency_groups"),
                legacy.all(PAIR_COLLECTION, "replications"), calls.groups(project_id), calls.pairs(project_id))
    finally:
        await sdrs.close()
    return discover(project_id, groups, pairs, sdrs_groups, sdrs_pairs, mappings.groups.values())


class _LegacyLister:
    """Every item of a legacy list, page by page (`limit` and `marker`), read-only, within the bounds
    an SDRS list has (`ListBounds`: `limits.sdrs_list_items` items, `timeouts.sdrs_list` for all pages)
    and `limits.upstream_body_bytes` a page: a legacy endpoint that ignores `marker` (the same page
    again), never ends or sends a page too large is an error, never an endless read."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, project_id: str, headers: dict[str, str],
                 key: KeyPair | None, bounds: ListBounds | None = None, max_page_bytes: int = 4 * 1048576) -> None:
        self._session, self._base, self._project = session, base_url.rstrip("/"), project_id
        self._headers, self._key = headers, key
        self._bounds = bounds or ListBounds()
        self._max_page_bytes = max_page_bytes

    async def all(self, collection: str, list_key: str) -> list[dict[str, Any]]:
        bounds = self._bounds
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        path = f"/v2/{self._project}/{collection}"
        try:
            async with asyncio.timeout(bounds.seconds):
                while True:
                    query = {"limit": str(LEGACY_PAGE), **({"marker": items[-1]["id"]} if items else {})}
                    page = await self._get(URL(self._base + path).with_query(query), list_key)
                    ids = [item.get("id") for item in page]
                    if not all(isinstance(item_id, str) and item_id for item_id in ids):
                        raise LegacyError(502, f"the legacy endpoint listed an item without an id in GET {path}: "
                                               "its list cannot be paged")
                    new = [item for item, item_id in zip(page, ids, strict=True) if item_id not in seen]
                    if page and len(new) < len(page):  # a marker ignored: the list would never end
                        raise LegacyError(502, f"the legacy endpoint sent items of GET {path} again after marker "
                                               f"{query.get('marker', '(none)')} (it ignores `marker`); the list "
                                               "cannot be completed")
                    items += new
                    seen.update(item["id"] for item in new)
                    if len(items) > bounds.max_items:
                        raise LegacyError(502, f"the legacy endpoint lists more than {bounds.max_items} items in "
                                               f"GET {path}, more than discovery reads (limits.sdrs_list_items)")
                    if len(page) < LEGACY_PAGE:
                        return items
        except TimeoutError:
            raise LegacyError(504, f"the legacy endpoint did not list all of GET {path} in time "
                                   f"({bounds.seconds:g} s, timeouts.sdrs_list)") from None

    async def _get(self, url: URL, list_key: str) -> list[dict[str, Any]]:
        headers: CIMultiDict[str] = CIMultiDict(self._headers)
        if self._key is not None:
            resign(headers, self._key, "GET", url, EMPTY_PAYLOAD_HASH)
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as answer:
                status, body = answer.status, bytearray()
                while len(body) <= self._max_page_bytes and (chunk := await answer.content.read(65536)):
                    body += chunk
        except (aiohttp.ClientError, TimeoutError) as err:
            raise LegacyError(503, f"the legacy endpoint could not be read: {type(err).__name__}") from None
        if len(body) > self._max_page_bytes:
            raise LegacyError(502, f"the legacy endpoint's page of GET {url.path} is larger than "
                                   f"{self._max_page_bytes} bytes (limits.upstream_body_bytes)")
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        items = document.get(list_key) if isinstance(document, dict) else None
        if status != 200 or not isinstance(items, list):
            raise LegacyError(502, f"the legacy endpoint answered GET {url.path} with HTTP {status}")
        return [item for item in items if isinstance(item, dict)]
