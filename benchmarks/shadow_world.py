"""The stand-ins of the shadow benchmark (benchmarks/shadow.py), one side per process: the SDRS
simulator holding one protected protection group, or the legacy EVS stand-in holding its faithful
legacy copy (same RCG id in the mapping, same production disks) and an unmapped group of the same shape.
Neither records requests (the test stand-ins keep every request for assertions).

    python benchmarks/shadow_world.py --side sdrs|legacy [--port 0]

Prints `READY <port>` on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from serving import run, serve_until_signalled  # noqa: E402

from shim.legacy_sim import LegacySimSettings  # noqa: E402
from shim.legacy_sim.server import LegacySimulator  # noqa: E402
from shim.simulator import SdrsSimulator  # noqa: E402

PROJECT = "0970dd7a1300f5672ff2c003c60ae115"
SHADOW_RCG = "5a0e6c1d-2b3f-4d5e-8f60-718293a4b5c6"
SHADOW_GROUP = "6b1f7d2e-3c40-4e5f-9a61-8293a4b5c6d7"
PLAIN_RCG = "7c2a8e3f-4d51-4f60-8b72-93a4b5c6d7e8"  # unmapped: a plain passthrough read of the same shape


class QuietSdrs(SdrsSimulator):
    @web.middleware
    async def _record(self, request: web.Request, handler):  # type: ignore[no-untyped-def, override]
        return await handler(request)


class QuietLegacy(LegacySimulator):
    @web.middleware
    async def _record(self, request: web.Request, handler):  # type: ignore[no-untyped-def, override]
        return await handler(request)


def sdrs_side() -> QuietSdrs:
    sim = QuietSdrs()
    sim.add_protection_group(PROJECT, SHADOW_GROUP, status="protected", name="pg-shadow", pair_count=2)
    return sim


def legacy_side() -> QuietLegacy:
    legacy = QuietLegacy(LegacySimSettings())
    sdrs_pairs = sdrs_side().group(PROJECT, SHADOW_GROUP).pairs  # the same stable disk ids
    for rcg_id, name in ((SHADOW_RCG, "shadow"), (PLAIN_RCG, "plain")):
        copy = legacy.add_group(PROJECT, group_id=rcg_id, name=f"{name}-rcg", pair_count=2)
        if rcg_id == SHADOW_RCG:
            for pair_id, sdrs_pair in zip(copy.replication_ids, sdrs_pairs, strict=True):
                legacy.pair(PROJECT, pair_id).volume_ids = sdrs_pair.volume_ids
    return legacy


async def main(side: str, host: str, port: int) -> None:
    app = sdrs_side().app() if side == "sdrs" else legacy_side().app()
    await serve_until_signalled(web.AppRunner(app, access_log=None, shutdown_timeout=1.0), host, port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", choices=["sdrs", "legacy"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    run(main(args.side, args.host, args.port))
