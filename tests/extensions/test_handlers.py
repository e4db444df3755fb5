"""The /gpulab/ REST handlers in a real (in-process) Jupyter server, through jp_fetch:
every route, every bad input answered 4xx with a message (never a 500), nothing started
by a refused request."""

import asyncio
import json

import pytest
from tornado.httpclient import HTTPClientError

from gpulab import clusters


async def call(jp_fetch, method, *parts, body=None, raw=None, headers=None):
    """(status, JSON or None) of one request; 4xx/5xx are answers here, not exceptions."""
    kwargs = {"method": method, "headers": dict(headers or {})}
    if raw is not None or body is not None:
        kwargs["body"] = raw if raw is not None else json.dumps(body)
        kwargs["headers"].setdefault("Content-Type", "application/json")
    elif method in ("POST", "PATCH"):
        kwargs["body"] = b""
    try:
        response = await jp_fetch("gpulab", *parts, **kwargs)
    except HTTPClientError as e:
        response = e.response
    text = response.body.decode() if response.body else ""
    return response.code, (json.loads(text) if text else None)


async def wait_running(jp_fetch, cluster_id, workers):
    for _ in range(600):
        status, body = await call(jp_fetch, "GET", "clusters", cluster_id)
        assert status == 200, body
        if body["status"] == "running" and len(body["workers"]) == workers:
            return body
        assert body["status"] in ("starting", "running"), body
        await asyncio.sleep(0.05)
    raise AssertionError(f"cluster {cluster_id} never ran {workers} workers")


async def test_allocation_of_a_cpu_server_outside_the_hub(jp_fetch, registry, monkeypatch):
    monkeypatch.setenv("GPULAB_MAX_DASK_WORKERS", "4")
    status, body = await call(jp_fetch, "GET", "allocation")
    assert status == 200
    assert body["gpus"] == [] and body["quota"] is None
    assert body["dask_workers"]["limit"] == 4
    assert body["user"]


async def test_create_list_scale_stop_a_cluster(jp_fetch, registry):
    status, created = await call(jp_fetch, "POST", "clusters",
                                 body={"name": "prep", "workers": 1})
    assert status == 202, created
    assert created["status"] == "starting" and created["name"] == "prep"
    assert created["owner"]["kind"] == "server"
    running = await wait_running(jp_fetch, created["id"], 1)
    assert running["dashboard_link"].startswith("proxy/")

    status, listed = await call(jp_fetch, "GET", "clusters")
    assert status == 200 and [c["id"] for c in listed["clusters"]] == [created["id"]]

    status, scaled = await call(jp_fetch, "PATCH", "clusters", created["id"], body={"workers": 2})
    assert status == 200 and scaled["workers_requested"] == 2
    await wait_running(jp_fetch, created["id"], 2)

    status, body = await call(jp_fetch, "DELETE", "clusters", created["id"])
    assert (status, body) == (204, None)
    status, body = await call(jp_fetch, "GET", "clusters", created["id"])
    assert status == 404 and "no cluster" in body["message"]
    assert clusters.list(registry=registry) == []


BAD_CREATES = [
    ({"workers": -1}, 400, "workers"),
    ({"workers": "two"}, 400, "workers"),
    ({"workers": 1.5}, 400, "workers"),
    ({"workers": 1, "color": "red"}, 400, "color"),
    ({"workers": 1, "gpus_per_worker": 1}, 403, None),  # a CPU server: no GPU to give
    ({"workers": 1, "protocol": "http"}, 400, "protocol"),
    ({"workers": 1, "memory_limit": "much"}, 400, "memory_limit"),
    ({"workers": 1, "name": "<img src=x onerror=alert(1)>"}, 400, "name"),
    ([1, 2], 400, "body"),
    ("workers", 400, "body"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_CREATES)
async def test_bad_creates_are_4xx_with_a_message_and_start_nothing(
        jp_fetch, registry, body, status, field):
    got, answer = await call(jp_fetch, "POST", "clusters", body=body)
    assert got == status, answer
    assert answer["message"]
    if field:
        assert answer["field"] == field and field in answer["message"] or field == "body"
    assert registry.records() == []


async def test_over_the_worker_limit_says_limit_and_use(jp_fetch, registry, monkeypatch):
    monkeypatch.setenv("GPULAB_MAX_DASK_WORKERS", "2")
    status, answer = await call(jp_fetch, "POST", "clusters", body={"workers": 3})
    assert status == 403
    assert answer["reason"] == "max_dask_workers"
    assert (answer["limit"], answer["in_use"]) == (2, 0)
    assert "your limit is 2 at once" in answer["message"]
    assert registry.records() == []


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b"null", b""])
async def test_bodies_that_are_not_json_objects(jp_fetch, registry, raw):
    status, answer = await call(jp_fetch, "POST", "clusters", raw=raw)
    assert status == 400 and answer["field"] == "body", answer


async def test_a_10_mb_body_is_refused(jp_fetch, registry):
    huge = json.dumps({"workers": 1, "name": "x" * (10 * 1024 * 1024)})
    status, answer = await call(jp_fetch, "POST", "clusters", raw=huge)
    assert status == 413 and "bytes" in answer["message"]
    assert registry.records() == []


async def test_a_form_body_is_refused(jp_fetch, registry):
    status, answer = await call(jp_fetch, "POST", "clusters", raw="workers=1",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "JSON" in answer["message"]


async def test_bad_scales_and_unknown_ids(jp_fetch, registry):
    status, created = await call(jp_fetch, "POST", "clusters", body={"workers": 1})
    assert status == 202
    await wait_running(jp_fetch, created["id"], 1)
    cases = [
        ({"workers": -1}, 400, "workers"),
        ({"workers": "3"}, 400, "workers"),
        ({"workers": 1000}, 400, "workers"),
        ({}, 400, "workers"),
        ({"workers": 1, "name": "x"}, 400, "name"),
        ([], 400, "body"),
    ]
    try:
        for body, want, field in cases:
            status, answer = await call(jp_fetch, "PATCH", "clusters", created["id"], body=body)
            assert (status, answer.get("field")) == (want, field), (body, answer)
        for method in ("GET", "PATCH", "DELETE"):
            body = {"workers": 1} if method == "PATCH" else None
            for bad_id in ("000000000000", "..%2F..%2Fetc", "x"):
                status, answer = await call(jp_fetch, method, "clusters", bad_id, body=body)
                assert status == 404 and answer["message"], (method, bad_id, answer)
    finally:
        status, _ = await call(jp_fetch, "DELETE", "clusters", created["id"])
    assert status == 204


async def test_every_route_needs_authentication(jp_fetch, registry):
    for method, parts in [("GET", ["allocation"]), ("GET", ["clusters"]),
                          ("POST", ["clusters"]), ("GET", ["clusters", "000000000000"]),
                          ("PATCH", ["clusters", "000000000000"]),
                          ("DELETE", ["clusters", "000000000000"])]:
        body = {"workers": 1} if method in ("POST", "PATCH") else None
        status, _ = await call(jp_fetch, method, *parts, body=body,
                               headers={"Authorization": "token wrong"})
        assert status == 403, (method, parts)
    assert registry.records() == []
