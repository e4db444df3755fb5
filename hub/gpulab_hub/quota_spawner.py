"""A spawner mixin that puts every spawn through gpulab's quota.

Works over any base spawner (the local one now; KubeSpawner and batchspawner later):

- the spawn form lists the profiles of this node for this user, unavailable ones greyed
  with their reason;
- ``start()`` validates the options, asks the ledger to admit the request (atomic: no
  device is granted twice), hands the server ``CUDA_VISIBLE_DEVICES`` (device UUIDs) and
  its allocation, then starts the base spawner; a start that fails releases the grant;
- ``stop()`` and a ``poll()`` that finds the server gone release the allocation (and so
  close the Dask clusters the ledger counts for that server).

The server's environment (``get_env``), beside JupyterHub's own:

- ``CUDA_VISIBLE_DEVICES`` and ``GPULAB_ALLOCATED_DEVICES``: the granted device UUIDs,
  comma-separated (empty for a CPU server); ``GPULAB_GPUS``: how many;
- ``GPULAB_GPU_INFO``: a JSON list of those devices as the hub's inventory describes them
  (uuid, name, memory_bytes, MIG parent and profile);
- ``GPULAB_ALLOCATION_ID``: the ledger row of the server's allocation;
- ``GPULAB_MAX_DASK_WORKERS``: the user's ``max_dask_workers`` at spawn ("" for no limit);
  the quota service enforces the limit current when a cluster starts;
- ``GPULAB_QUOTA_URL``: the quota service as the server reaches it (its ``url`` from
  ``c.JupyterHub.services`` plus its prefix, ending in ``/services/gpulab-quota/``), which
  the server calls with its own ``JUPYTERHUB_API_TOKEN`` (that token needs
  ``access:services!service=gpulab-quota`` in ``c.Spawner.server_token_scopes``); unset
  where the hub runs no quota service.

A denied request is an HTTP 4xx whose message the hub shows on the spawn form (and the
REST API returns); it never reaches the base spawner.
"""

from __future__ import annotations

import asyncio
import json

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from tornado import web
from traitlets import HasTraits, Integer, default

from gpulab.quota.ledger import QuotaDenied
from gpulab.quota.profiles import (
    BadSpawnOptions,
    build_profiles,
    offered_profiles,
    parse_spawn_options,
    render_form,
    with_reservations,
)
from gpulab_hub.course import add_course_material
from gpulab_hub.quota import QUOTA_SERVICE_NAME, GpulabQuota

# The ledger's database can't be reached (down, restarting, unreachable, or its lock held
# past the busy timeout): spawns fail closed with LEDGER_UNREACHABLE_MESSAGE (HTTP 503).
LEDGER_UNREACHABLE = (OperationalError, InterfaceError, PoolTimeoutError)
LEDGER_UNREACHABLE_MESSAGE = (
    "The quota ledger is unreachable, so no server can be started right now (gpulab "
    "starts no server it cannot account for). Try again in a minute; if this persists, "
    "tell your operator."
)


def user_facing_error(status: int, message: str) -> web.HTTPError:
    error = web.HTTPError(status, "%s", message)  # message may hold a '%' of its own
    error.jupyterhub_message = message  # what the hub shows on the form and pending page
    return error


class QuotaSpawnerMixin(HasTraits):
    """Mix in before the base spawner: ``class S(QuotaSpawnerMixin, LocalProcessSpawner)``.

    A HasTraits so that its traits and ``@default`` handlers are set up in the spawner
    class (traitlets only initialises descriptors of classes built by its metaclass).
    """

    allocation_id = Integer(None, allow_none=True)  # the ledger row of the running server
    granted_devices = ()
    _spawn_policy = None  # the user's policy when start() admitted the server

    @property
    def quota(self) -> GpulabQuota:
        return GpulabQuota.instance(config=self.config)

    def _policy(self):
        return self.quota.policy_for(self.user.name, [g.name for g in self.user.groups])

    def _offered(self, policy):
        return offered_profiles(policy, len(self.quota.whole_gpus()), self.quota.mig_slices())

    def _profiles(self):
        policy = self._policy()
        capacity = self.quota.capacity_for(self.user.name, policy)
        # Greyed as the ledger's reservations would refuse them ("reserved for workshop G").
        return with_reservations(
            build_profiles(policy, capacity), self.quota.ledger, capacity, policy=policy,
            groups=[g.name for g in self.user.groups],
        )

    @default("options_form")
    def _default_options_form(self):
        # A callable: the form is rebuilt at each visit, with what is free right now.
        # With a single choice (a CPU-only node) there is nothing to ask: no form.
        def form(spawner):
            try:
                profiles = spawner._profiles()
            except LEDGER_UNREACHABLE as e:
                raise spawner._ledger_unreachable(e) from None
            return render_form(profiles) if len(profiles) > 1 else ""

        return form

    def options_from_form(self, formdata):
        options = {
            k: v[0] if isinstance(v, list) and len(v) == 1 else v
            for k, v in formdata.items()
            if k != "_xsrf"
        }
        try:
            parse_spawn_options(options, self._offered(self._policy()))
        except BadSpawnOptions as e:
            raise user_facing_error(400, str(e)) from None
        return options

    def get_env(self):
        env = super().get_env()
        # Empty for a CPU server: CUDA then sees no device at all.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(self.granted_devices)
        env["GPULAB_GPUS"] = str(len(self.granted_devices))
        env["GPULAB_ALLOCATED_DEVICES"] = ",".join(self.granted_devices)
        # What the hub knows of those devices (name, memory): a server on a node whose
        # inventory is static config (no NVML) can't look them up itself.
        env["GPULAB_GPU_INFO"] = json.dumps([
            gpu.to_dict() for gpu in map(self.quota.inventory.by_uuid, self.granted_devices)
            if gpu is not None
        ])
        if self.allocation_id is not None:
            env["GPULAB_ALLOCATION_ID"] = str(self.allocation_id)
        policy = self._spawn_policy or self._policy()
        limit = policy.max_dask_workers
        env["GPULAB_MAX_DASK_WORKERS"] = "" if limit is None else str(limit)
        url = self.quota_service_url()
        if url:
            env["GPULAB_QUOTA_URL"] = url
        # The dashboards service: its runs root, whether links are on, its URL.
        from gpulab_hub.dashboards_env import dashboards_env

        env.update(dashboards_env(getattr(self.user, "settings", {}) or {}))
        return env

    def quota_service_url(self) -> str:
        """The quota service's URL as the server reaches it: the service's own ``url``
        (c.JupyterHub.services) and its prefix, e.g.
        ``http://127.0.0.1:PORT/services/gpulab-quota/`` (it serves under its prefix when
        called directly too). "" when the hub runs no quota service with a URL."""
        services = getattr(self.user, "settings", {}).get("services") or {}
        service = services.get(QUOTA_SERVICE_NAME)
        if service is None or not service.url:
            return ""
        return service.url.rstrip("/") + service.prefix

    async def start(self):
        try:
            policy = self._policy()
            profile = parse_spawn_options(self.user_options or {}, self._offered(policy))
        except BadSpawnOptions as e:
            raise user_facing_error(400, str(e)) from None
        except LEDGER_UNREACHABLE as e:
            raise self._ledger_unreachable(e) from None
        quota = self.quota
        try:
            # The hub starts a server only when it is not running, so an open allocation
            # left for this server (a hub killed before it could release) is stale.
            await self._release_lost()
            grant = await asyncio.to_thread(
                quota.ledger.admit,
                user=self.user.name,
                server=self.name,
                gpus=profile.gpus,
                policy=policy,
                devices=quota.device_pool(profile),
                actor=self.user.name,
                # Reservations: members of a workshop group draw on its reserved GPUs.
                groups=[g.name for g in self.user.groups],
                mig=profile.mig,
            )
        except QuotaDenied as e:
            raise user_facing_error(e.status_code, str(e)) from None
        except LEDGER_UNREACHABLE as e:
            raise self._ledger_unreachable(e) from None
        self.allocation_id = grant.allocation_id
        self.granted_devices = tuple(grant.device_uuids)
        self._spawn_policy = policy
        try:
            # The workshops' notebooks the student lacks (gpulab_hub.course); never raises
            # for a course problem.
            await add_course_material(self)
            return await super().start()
        except BaseException:
            await self._release("start_failed")
            raise

    _stopping = False

    async def stop(self, now=False):
        # The base stop() polls as it waits; that poll must not release as "exited".
        self._stopping = True
        try:
            await super().stop(now=now)
        finally:
            self._stopping = False
        await self._release("stopped")

    async def poll(self):
        status = await super().poll()
        if status is not None and not self._stopping:
            if self.allocation_id is None and not self._start_pending:
                # Gone, and no allocation in our state: the hub lost it (killed during
                # this server's spawn, before JupyterHub saved the state; its restart
                # polls the server, finds it gone and stops it). Close what the ledger
                # still holds for this server now, rather than at the quota service's
                # reconciliation or this server's next spawn.
                try:
                    await self._release_lost()
                except LEDGER_UNREACHABLE as e:
                    self.log.warning("Quota ledger unreachable, polling %s: %s", self._log_name, e)
            await self._release("exited")
        return status

    async def _release(self, reason: str):
        if self.allocation_id is None:
            return
        allocation_id, self.allocation_id = self.allocation_id, None
        self.granted_devices = ()
        self._spawn_policy = None
        try:
            await asyncio.to_thread(self.quota.ledger.release, allocation_id, reason=reason)
        except LEDGER_UNREACHABLE as e:
            # The server is gone all the same; its row stays open until the ledger is back,
            # then the next spawn of this server or the quota service's reconciliation
            # closes it (as "reconciled").
            self.log.warning(
                "Allocation %s of %s stays open: the quota ledger is unreachable (%s)",
                allocation_id,
                self._log_name,
                e,
            )

    async def _release_lost(self):
        """Release the open allocation the ledger holds for this server, if any (one this
        spawner's state does not know of)."""
        ledger = self.quota.ledger
        lost = await asyncio.to_thread(ledger.find_open, self.user.name, self.name)
        if lost is not None:
            await asyncio.to_thread(ledger.release, lost.id, reason="reconciled")

    def _ledger_unreachable(self, error: Exception) -> web.HTTPError:
        self.log.error("Quota ledger unreachable, refusing %s: %s", self._log_name, error)
        return user_facing_error(503, LEDGER_UNREACHABLE_MESSAGE)

    def get_state(self):
        state = super().get_state()
        if self.allocation_id is not None:
            state["gpulab_allocation_id"] = self.allocation_id
            state["gpulab_devices"] = list(self.granted_devices)
        return state

    def load_state(self, state):
        super().load_state(state)
        self.allocation_id = state.get("gpulab_allocation_id")
        self.granted_devices = tuple(state.get("gpulab_devices", ()))
