"""This pod's instance in Nacos (docs/nacos.md), through ``nacos-sdk-python`` (the 2.x
gRPC client): registered as an ephemeral instance of the signaling service with its
address, weight and metadata; updated when its connections or draining change; weight 0
as soon as it drains, then deregistered on the way out.

Nacos is never on the pod's critical path: nothing here touches readiness, a join or a
frame. While Nacos does not answer, the instance is retried with back-off (at most
``nacos_interval_s`` apart) and registered again once it does; the client's own gRPC
reconnection also re-registers what it last sent.

The instance's weight follows ``roomwire_contract.discovery``: 100 (``WEIGHT_FULL``)
while serving, 0 while draining, never exactly 1.0. The operator's weights arrive as
its ``weight`` command (``hub.commands``) through ``set_weight``: this pod stays the one
writer of its instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roomwire_contract import discovery

from .config import Settings
from .discovery import client_config, quiet_client_root_logs

log = logging.getLogger("signaling.nacos")

RETRY_MIN_S = 0.5
REFRESH_EVERY = 6  # intervals between updates of an unchanged instance
CALL_TIMEOUT_S = 5.0  # one register/update/deregister call


@dataclass(frozen=True, slots=True)
class PodLoad:
    """What the pod tells Nacos about itself at one moment."""

    connections: int
    draining: bool


@dataclass(frozen=True, slots=True)
class Published:
    """What Nacos was last told: the instance's weight and metadata."""

    weight: float
    metadata: dict[str, str]


def version() -> str:
    try:
        return importlib.metadata.version("roomwire-signaling")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def instance_ip(settings: Settings) -> str:
    """The address other services reach this pod on: ``--nacos-ip``, else ``--host``, else
    (listening on every interface) the host name's address."""
    if settings.nacos_ip:
        return settings.nacos_ip
    if settings.host not in ("", "0.0.0.0", "::"):
        return settings.host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class NacosInstance:
    """The pod's one instance in Nacos, kept in step with ``load()`` in the background."""

    def __init__(self, settings: Settings, load: Callable[[], PodLoad]) -> None:
        assert settings.nacos_server, "NacosInstance needs --nacos-server"
        self.settings = settings
        self.load = load
        self.ip = instance_ip(settings)
        self.port = settings.port
        self.weight = discovery.WEIGHT_FULL  # the operator's weight, once it sets one
        self.published: Published | None = None  # None: not registered (as far as we know)
        self.registered_at: float | None = None  # monotonic time of the first registration
        self.started_at = time.monotonic()
        self._client: Any = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dir = settings.nacos_dir or tempfile.mkdtemp(prefix="roomwire-nacos-")
        self._own_dir = not settings.nacos_dir
        self._withdrawn = False

    # --- what the pod calls -----------------------------------------------------------

    def start(self) -> None:
        """Returns at once; Nacos is reached in the background."""
        quiet_client_root_logs()
        self._task = asyncio.create_task(self._run(), name="nacos-instance")

    def wake(self) -> None:
        """Publish now rather than at the next interval (draining started, a new weight)."""
        self._wake.set()

    def set_weight(self, weight: float) -> None:
        """The weight (0..100) to publish while serving; draining always publishes 0."""
        self.weight = weight
        self.wake()

    async def withdraw(self, timeout_s: float = CALL_TIMEOUT_S) -> None:
        """Leave Nacos: weight 0 first (if not yet published), then deregistered. Bounded;
        a Nacos that does not answer only makes it give up (the instance then expires
        with the client's connection)."""
        if self._withdrawn:
            return
        self._withdrawn = True
        await self._stop_task()
        if self._client is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                if self.published is not None and self.published.weight > 0:
                    await self._publish(self._desired(PodLoad(self.load().connections, True)))
                if self.published is not None:
                    await self._deregister()
                    log.info("nacos: deregistered %s:%d", self.ip, self.port)

    async def close(self) -> None:
        """Deregister (bounded) and stop the client; the pod is stopping."""
        await self.withdraw()
        if self._client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    await self._client.shutdown()
            self._client = None
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    # --- the loop ---------------------------------------------------------------------

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _desired(self, load: PodLoad) -> Published:
        s = self.settings
        weight = 0.0 if load.draining else discovery.registry_weight(self.weight)
        metadata = {
            discovery.META_POD: s.pod_id,
            discovery.META_NAMESPACE: s.pod_namespace,
            discovery.META_VERSION: version(),
            discovery.META_ZONE: s.nacos_zone,
            discovery.META_CONNECTIONS: str(load.connections),
            discovery.META_DRAINING: "true" if load.draining else "false",
            discovery.META_WS_PATH: "/ws",
        }
        return Published(weight, metadata)

    async def _run(self) -> None:
        interval = self.settings.nacos_interval_s
        retry_s, failing, since_refresh = RETRY_MIN_S, False, 0
        while True:
            desired = self._desired(self.load())
            delay = interval
            if desired != self.published or since_refresh >= REFRESH_EVERY:
                try:
                    # Created once: it returns after a few tries whether or not Nacos
                    # answers, and reconnects on its own from then on.
                    if self._client is None:
                        self._client = await self._connect()
                    async with asyncio.timeout(CALL_TIMEOUT_S):
                        await self._publish(desired)
                except Exception as e:  # the SDK raises its own and gRPC's errors
                    self.published = None
                    if not failing:
                        log.warning("nacos unreachable: %s (retrying)", e or type(e).__name__)
                    failing, delay = True, retry_s
                    retry_s = min(retry_s * 2, interval)
                else:
                    since_refresh = 0
                    if failing:
                        log.info("nacos reachable again: instance registered")
                    failing, retry_s = False, RETRY_MIN_S
            since_refresh += 1
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    # --- the SDK ----------------------------------------------------------------------

    async def _connect(self) -> Any:
        from v2.nacos import NacosNamingService  # type: ignore[import-untyped]

        s = self.settings
        config = client_config(
            s.nacos_server or "", s.nacos_namespace, s.nacos_username, s.nacos_password, self._dir
        )
        return await NacosNamingService.create_naming_service(config)

    async def _publish(self, desired: Published) -> None:
        from v2.nacos import RegisterInstanceParam

        s = self.settings
        param = RegisterInstanceParam(
            ip=self.ip,
            port=self.port,
            weight=desired.weight,
            metadata=dict(desired.metadata),
            service_name=s.nacos_service,
            group_name=s.nacos_group,
            ephemeral=True,
        )
        first = self.published is None
        if first:
            ok = await self._client.register_instance(param)
        else:
            ok = await self._client.update_instance(param)
        if not ok:
            raise RuntimeError("nacos refused the instance")
        self.published = desired
        if self.registered_at is None:
            self.registered_at = time.monotonic()
            log.info(
                "nacos: registered %s:%d in %s/%s after %.2fs",
                self.ip,
                self.port,
                s.nacos_group,
                s.nacos_service,
                self.registered_at - self.started_at,
            )

    async def _deregister(self) -> None:
        from v2.nacos import DeregisterInstanceParam

        s = self.settings
        await self._client.deregister_instance(
            DeregisterInstanceParam(
                ip=self.ip,
                port=self.port,
                service_name=s.nacos_service,
                group_name=s.nacos_group,
                ephemeral=True,
            )
        )
        self.published = None
