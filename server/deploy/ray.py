"""gguf-serve on Ray Serve: every replica a whole gguf-serve (registry, scheduler, engine, APIs).

Ray is an optional extra (`pip install 'gguf-serve[ray]'`); this is the only module besides
ray_router.py that imports it. Two ways in:

    gguf-serve ray --replicas 2                       # the CLI (server/cli/scale.py)
    serve run server.deploy.ray:app_builder replicas=2 # Ray's own CLI or a Serve config file

Each replica builds the existing FastAPI app with `create_app` at replica start (Serve's
late-bound `@serve.ingress`), so its lifespan (preload, unload at shutdown) runs as usual, and
streams (SSE, NDJSON) go through Ray's proxy chunk by chunk; a client that disconnects gets
its request cancelled in the replica, which frees the slot.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.app import create_app
from server.errors import ModelNotFound
from server.registry import Registry
from server.settings import Settings, load_settings

logger = logging.getLogger(__name__)

REPLICA_HEADER = "x-gguf-serve-replica"
NODE_HEADER = "x-gguf-serve-node"
_NOT_SHIPPED = {"hf_token"}  # secrets stay out of Ray's actor arguments; replicas read their own


class ReplicaHeader:
    """Names the replica and Ray node that answered: routing is visible to clients."""

    def __init__(self, app: ASGIApp, replica: str, node: str) -> None:
        self.app = app
        self.headers = [
            (REPLICA_HEADER.encode(), replica.encode()),
            (NODE_HEADER.encode(), node.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, tagged)


def pinned(settings: Settings, resources: dict[str, float]) -> Settings:
    """Settings for a replica given Ray `resources`: its CPUs become llama.cpp threads, a GPU
    share offloads every layer."""
    load: dict[str, Any] = {"n_threads": max(1, int(resources.get("CPU", 0) or 1))}
    if resources.get("GPU", 0) > 0:
        load["n_gpu_layers"] = -1
    return settings.model_copy(update={"load": settings.load.model_copy(update=load)})


class GGUFServeReplica:
    """One replica: settings pinned to what Ray gave it, the default model pulled if missing."""

    def __init__(self, settings: dict[str, Any]) -> None:
        base = load_settings(**settings)
        self.settings = pinned(base, ray.get_runtime_context().get_assigned_resources())
        registry = Registry(self.settings)
        name = self.settings.default_model
        try:
            registry.resolve(name)
        except ModelNotFound:  # a node with a store of its own: fill it on first use
            logger.info("replica store has no %s; pulling it", name)
            registry.pull(name)

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = create_app(self.settings)
        replica = serve.get_replica_context().replica_id.unique_id
        node = ray.get_runtime_context().get_node_id()
        app.add_middleware(ReplicaHeader, replica=replica, node=node)
        return app


def deployment_name(router: str) -> str:
    """The Serve deployment's name, one per request router.

    A Serve handle (the proxy's among them) builds its request router once and keeps it: a
    redeploy that changes only `request_router_config` updates the replicas but not the
    router that routes to them (Ray 2.60, `Router.update_deployment_config`), so switching
    routers in place silently keeps the old one. A new name is a new deployment, for which
    the proxy builds a new handle and so the new router.
    """
    return f"GGUFServe-{router}"


def deployment_options(settings: Settings) -> dict[str, Any]:
    """Serve deployment options from our settings (pure: no cluster needed)."""
    opts = settings.ray
    slots = settings.load.n_parallel
    out: dict[str, Any] = {
        "name": deployment_name(opts.router),
        # A replica takes its slots plus its queue; beyond that Ray routes elsewhere or waits.
        "max_ongoing_requests": slots + settings.max_queue,
        "ray_actor_options": {"num_cpus": opts.cpus_per_replica, "num_gpus": opts.gpus_per_replica},
        "graceful_shutdown_timeout_s": 10,
    }
    if opts.replicas == "auto":
        out["autoscaling_config"] = {
            "min_replicas": opts.min_replicas,
            "initial_replicas": max(opts.min_replicas, 1),
            "max_replicas": opts.max_replicas,
            "target_ongoing_requests": opts.target_ongoing_requests or slots,
        }
    else:
        out["num_replicas"] = opts.replicas
    if opts.router == "affinity":
        from server.deploy.ray_router import ConversationAffinityRouter

        out["request_router_config"] = RequestRouterConfig(
            request_router_class=ConversationAffinityRouter,
            request_router_kwargs={"busy_at": slots},
        )
    return out


def build(settings: Settings) -> Application:
    """The Serve application for `settings` (bind it with serve.run)."""
    ingress = serve.ingress()(GGUFServeReplica)
    deployment = serve.deployment(ingress, **deployment_options(settings))
    shipped = settings.model_dump(mode="json", exclude=_NOT_SHIPPED)
    return deployment.bind(shipped)


def app_builder(args: dict[str, Any]) -> Application:
    """`serve run server.deploy.ray:app_builder key=value ...`: keys are `ray` settings
    (replicas, router, ...) or, with a dot, any setting (`load.n_parallel=8`)."""
    overrides: dict[str, Any] = {"ray": {}}
    for key, value in args.items():
        section, _, field = key.rpartition(".")
        if section:
            overrides.setdefault(section, {})[field] = value
        elif key in Settings.model_fields:
            overrides[key] = value
        else:
            overrides["ray"][key] = value
    base = load_settings()
    for section in ("ray", "load"):
        if section in overrides:
            overrides[section] = {**getattr(base, section).model_dump(), **overrides[section]}
    return build(load_settings(**overrides))


def run(settings: Settings) -> None:
    """Join (or start) a Ray cluster, start Serve's HTTP proxy, deploy, and serve until Ctrl-C."""
    opts = settings.ray
    ray.init(address=None if opts.address == "auto" else opts.address, ignore_reinit_error=True)
    serve.start(http_options={"host": opts.http_host, "port": opts.http_port})
    serve.run(build(settings), name=opts.app_name, route_prefix="/", blocking=True)


@contextmanager
def simulated_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[Any]:
    """A Ray cluster of `nodes` nodes on this machine, all on loopback; the driver joins it.

    For trying replicas (and for the tests and benchmarks) without other hosts. Ray resolves
    "this node" to the machine's outward address unless told not to, so loopback is forced
    for this process and the Ray processes it starts.
    """
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # inherited by Ray's processes
    # Ray starts workers at nice 15; replicas are the workload here, not background tasks.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process: node address = 127.0.0.1
    node = {
        "num_cpus": cpus_per_node,
        "object_store_memory": 80 << 20,
        "node_ip_address": "127.0.0.1",
    }
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node)
        ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
        yield cluster
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
