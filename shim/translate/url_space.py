"""The URL space the shim answers itself (pure data): the translated legacy routes and its own
management endpoints. Everything else is streamed to the legacy endpoint.

`build_app` registers its routes from these tables and `shim front-config` sends the same space to
the shim (and the rest straight to the legacy endpoint), so the two cannot disagree.
"""

from __future__ import annotations

from shim.translate.legacy import PAIR_COLLECTION, RCG_COLLECTION

PROJECT_PREFIX = "/v2/{project_id}/"

# Route name -> aiohttp path pattern. Any method: the handlers answer 405 where one is not allowed.
TRANSLATED_ROUTES: dict[str, str] = {
    "rcg-action": PROJECT_PREFIX + RCG_COLLECTION + "/{rcg_id}/action",
    "rcg": PROJECT_PREFIX + RCG_COLLECTION + "/{rcg_id}",
    "rcgs": PROJECT_PREFIX + RCG_COLLECTION,
    "pair": PROJECT_PREFIX + PAIR_COLLECTION + "/{replication_id}",
    "pairs": PROJECT_PREFIX + PAIR_COLLECTION,
}

# The collection names the translated routes live under (the segment after the project id).
TRANSLATED_COLLECTIONS: tuple[str, ...] = tuple(
    dict.fromkeys(path.removeprefix(PROJECT_PREFIX).split("/")[0] for path in TRANSLATED_ROUTES.values())
)

# The migration console's static files (package data, shim/web/static/), served under /migration.
CONSOLE_ASSETS: dict[str, str] = {"/migration/assets/console.js": "console.js",
                                  "/migration/assets/console.css": "console.css"}

# The shim's own endpoints (GET): never passed through, never counted as legacy traffic. `/migration` is
# the migration report (README, Migration): JSON, or the console's page for a browser, with its files.
MANAGEMENT_PATHS: tuple[str, ...] = ("/healthz", "/readyz", "/metrics", "/migration", *CONSOLE_ASSETS)
