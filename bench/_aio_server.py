"""A sidecar whose Route runs in grpc.aio's event-loop thread: no hand-off to a worker.

For bench.static_serving's comparison of threading models only. It is built by
the real ``build()`` (store, table, embedder, the same servicers), but served
by ``grpc.aio`` with async handlers that call the servicers inline, instead of
the sync server's completion-queue thread handing each call to a pool thread.
It carries no admission or auth interceptors, so it does a little less work
per call than the product.

    python -m bench._aio_server --listen HOST:PORT --db PATH --embedder DIR
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from uniroute.v1 import registry_pb2_grpc, router_pb2_grpc

from sidecar._server import ServerConfig, build
from sidecar._servicers import RegistryServicer, RouterServicer


def _inline(method: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    async def handler(request: Any, context: Any) -> Any:
        return method(request, context)

    return handler


class InlineRouter(router_pb2_grpc.RouterServicer):
    def __init__(self, sync: RouterServicer) -> None:
        self.Route = _inline(sync.Route)
        self.RouteBatch = _inline(sync.RouteBatch)


class InlineRegistry(registry_pb2_grpc.RegistryServicer):
    def __init__(self, sync: RegistryServicer) -> None:
        self.RegisterModel = _inline(sync.RegisterModel)
        self.GetStatus = _inline(sync.GetStatus)


async def serve(listen: str, db: Path, embedder: Path) -> None:
    sidecar = build(ServerConfig(listen="127.0.0.1:0", db_path=db, embedder_dir=embedder))
    sidecar.router.warm_up()
    registry = RegistryServicer(
        sidecar.registry,
        tables=sidecar.tables,
        embedder_fingerprint=sidecar.router.embedder.fingerprint,
        hub=sidecar.hub,
        follower=None,
        metrics=sidecar.metrics,
    )
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServicer_to_server(
        InlineRouter(RouterServicer(sidecar.router, sidecar.metrics)), server
    )
    registry_pb2_grpc.add_RegistryServicer_to_server(InlineRegistry(registry), server)
    health = health_aio.HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(listen)
    await server.start()
    print(f"aio sidecar on {listen}", flush=True)
    await server.wait_for_termination()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._aio_server", description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--embedder", type=Path, required=True)
    args = parser.parse_args(argv)
    sys.setswitchinterval(0.0002)  # as `sidecar serve` sets it
    asyncio.run(serve(args.listen, args.db, args.embedder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
