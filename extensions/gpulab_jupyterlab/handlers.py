"""REST handlers under ``/gpulab/``: the allocation, and this server's Dask clusters.

Each handler parses and checks its input, calls one ``gpulab`` core function (in a thread:
they block on files, Dask and the quota service) and shapes the answer. Every verb is
``@web.authenticated`` and ``@authorized`` (Jupyter server's auth); writes are XSRF-checked
by Jupyter server's APIHandler (a request authenticated by a token header is exempt, as
everywhere in Jupyter server). Errors are JSON ``{"message": ..., "field"?: ...}`` with a
4xx status; the written description is ``openapi.yaml`` next to this file.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from gpulab import allocation, clusters

AUTH_RESOURCE = "gpulab"
MAX_BODY_BYTES = 16 * 1024  # the largest legitimate body (a cluster spec) is ~300 bytes
CLUSTER_ID = r"(?P<cluster_id>[^/]+)"


def _answers_errors(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Turns the core's refusals into JSON 4xx answers with their message."""

    @functools.wraps(method)
    async def wrapper(self: GpulabHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except clusters.SpecError as e:
            self.reply(400, e.to_json())
        except clusters.ClusterLimitError as e:
            self.reply(403, e.to_json())
        except clusters.ClusterNotFound as e:
            self.reply(404, {"message": str(e)})
        except clusters.ClusterBusy as e:
            self.reply(409, {"message": str(e)})
        except clusters.GatewayError as e:  # the configured Dask Gateway refused or is down
            self.reply(502, {"message": str(e)})

    return wrapper


class GpulabHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def prepare(self) -> Any:
        # Before authentication: an oversized body is refused without reading it twice.
        if len(self.request.body or b"") > MAX_BODY_BYTES:
            raise web.HTTPError(413, f"the request body is over {MAX_BODY_BYTES} bytes")
        return super().prepare()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:  # RFC 9110: a 405 lists the methods the route has
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        super().write_error(status_code, **kwargs)

    @classmethod
    def allowed_methods(cls) -> list[str]:
        return [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
                if getattr(cls, m.lower()) is not getattr(web.RequestHandler, m.lower())]

    def reply(self, status: int, body: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def body_json(self) -> Any:
        """The request body as JSON; a 400 naming ``body`` when it is not JSON."""
        if self.request.headers.get("Content-Type", "application/json").split(";")[0].strip() \
                not in ("application/json", ""):
            raise clusters.SpecError("the body must be JSON (Content-Type: application/json)",
                                     field="body")
        try:
            return json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise clusters.SpecError("the body is not valid JSON", field="body") from None

    @staticmethod
    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)


class AllocationHandler(GpulabHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(200, await self.call(allocation.describe))


class ClustersHandler(GpulabHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        found = await self.call(clusters.list_clusters)
        self.reply(200, {"clusters": [c.to_json() for c in found]})

    @web.authenticated
    @authorized
    @_answers_errors
    async def post(self) -> None:
        spec = clusters.ClusterSpec.from_json(self.body_json())
        # Admitted (or refused) before the answer; the start goes on in the background and
        # the sidebar follows it by polling the cluster.
        cluster = await self.call(clusters.start, spec, wait=False, progress=False,
                                  owner_kind="server")
        self.set_header("Location", self.request.path.rstrip("/") + "/" + cluster.id)
        self.reply(202, cluster.to_json())


class ClusterHandler(GpulabHandler):
    @web.authenticated
    @authorized
    @_answers_errors
    async def get(self, cluster_id: str) -> None:
        self.reply(200, (await self.call(clusters.get, cluster_id)).to_json())

    @web.authenticated
    @authorized
    @_answers_errors
    async def patch(self, cluster_id: str) -> None:
        body = self.body_json()
        if not isinstance(body, dict):
            raise clusters.SpecError("the body must be a JSON object", field="body")
        unknown = sorted(set(body) - {"workers"})
        if unknown:
            raise clusters.SpecError(f"unknown field {unknown[0]!r}; only 'workers' can "
                                     "change", field=str(unknown[0]))
        if "workers" not in body:
            raise clusters.SpecError("workers is required", field="workers")
        cluster = await self.call(clusters.scale, cluster_id, body["workers"])
        self.reply(200, cluster.to_json())

    @web.authenticated
    @authorized
    @_answers_errors
    async def delete(self, cluster_id: str) -> None:
        await self.call(clusters.stop, cluster_id)
        self.set_status(204)
        self.finish()


def handlers(base_url: str) -> list[tuple[str, type[GpulabHandler]]]:
    from jupyter_server.utils import url_path_join

    return [
        (url_path_join(base_url, "gpulab", "allocation"), AllocationHandler),
        (url_path_join(base_url, "gpulab", "clusters"), ClustersHandler),
        (url_path_join(base_url, "gpulab", "clusters", CLUSTER_ID), ClusterHandler),
    ]
