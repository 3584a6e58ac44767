"""Choosing a signaling pod from Nacos, for other Python services (docs/nacos.md).

``NacosPicker`` keeps the signaling service's instances as Nacos pushes them
(``nacos-sdk-python``'s subscription, plus a slow poll in case a push is lost) and picks
one at random in proportion to its weight, among the healthy, enabled ones with weight
above 0 that are not draining (``roomwire_contract.discovery.pick``). When Nacos cannot
be reached, or lists no such instance, ``pick_url`` answers the fallback URL, the
Kubernetes Service's; a consumer never fails for want of Nacos::

    picker = NacosPicker("nacos:8848", fallback_url="ws://signaling.roomwire/ws")
    await picker.start()          # returns at once; Nacos is reached in the background
    url = picker.pick_url()       # a pod's ws://ip:port/ws, or the fallback
    await picker.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterable
from typing import Any

from roomwire_contract import discovery
from roomwire_contract.discovery import Endpoint

log = logging.getLogger("signaling.discovery")

CHECK_S = 1.0  # how often the client's connection to Nacos is looked at
CALL_TIMEOUT_S = 5.0


def _not_from_the_sdk(record: logging.LogRecord) -> bool:
    return f"{os.sep}v2{os.sep}nacos{os.sep}" not in record.pathname


def quiet_client_root_logs() -> None:
    """Drop what ``nacos-sdk-python`` logs on the ROOT logger (an error every few seconds
    while it reconnects); its own loggers write to files in its log folder, and ours say
    when Nacos is lost and found again. Idempotent."""
    root = logging.getLogger()
    if _not_from_the_sdk not in root.filters:
        root.addFilter(_not_from_the_sdk)


def client_config(
    server: str, namespace: str, username: str | None, password: str | None, folder: str
) -> Any:
    """The ``nacos-sdk-python`` client configuration every Nacos client of ours uses: its
    logs and cache in ``folder``, quiet below warnings, no cached answers at start."""
    from v2.nacos import ClientConfigBuilder  # type: ignore[import-untyped]

    builder = (
        ClientConfigBuilder()
        .server_address(server)
        .namespace_id(namespace)
        .log_level(logging.WARNING)
        .log_dir(os.path.join(folder, "logs"))
        .cache_dir(os.path.join(folder, "cache"))
    )
    if username and password:
        builder = builder.username(username).password(password)
    config = builder.build()
    config.load_cache_at_start = False
    return config


def listen_now(config_service: Any) -> None:
    """Have a ``NacosConfigService`` send its listen request now rather than at its next
    5 s cycle: until that request reaches the server, the server pushes no change of a
    document just listened to (a first change could take 5 s to arrive). The SDK keeps
    the trigger on its gRPC proxy; an SDK without it only waits for the cycle."""
    proxy = getattr(config_service, "grpc_client_proxy", None)
    channel = getattr(proxy, "execute_config_listen_channel", None)
    if channel is not None:
        channel.put_nowait(None)


def endpoint(instance: Any) -> Endpoint:
    """A Nacos SDK ``Instance`` as an ``Endpoint``."""
    return Endpoint(
        host=str(instance.ip),
        port=int(instance.port),
        weight=float(instance.weight),
        healthy=bool(instance.healthy),
        enabled=bool(instance.enabled),
        metadata={str(k): str(v) for k, v in (instance.metadata or {}).items()},
    )


class NacosPicker:
    """Weighted random choice among the signaling service's instances in Nacos."""

    def __init__(
        self,
        server: str,
        fallback_url: str,
        *,
        service: str = discovery.SERVICE,
        group: str = discovery.GROUP,
        namespace: str = "",
        username: str | None = None,
        password: str | None = None,
        refresh_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.server = server
        self.fallback_url = fallback_url
        self.service = service
        self.group = group
        self.namespace = namespace
        self.username = username
        self.password = password
        self.refresh_s = refresh_s
        self.rng = rng or random.Random()
        self.endpoints: list[Endpoint] = []
        self.reachable = False  # Nacos answered the last look and the list is current
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._dir = tempfile.mkdtemp(prefix="roomwire-nacos-picker-")
        self.changed = asyncio.Event()  # set at every new list (tests and consumers wait on it)

    async def start(self) -> None:
        """Returns at once; until Nacos answers, ``pick_url`` gives the fallback."""
        quiet_client_root_logs()
        self._task = asyncio.create_task(self._run(), name="nacos-picker")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    await self._client.shutdown()
            self._client = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def pick(self) -> Endpoint | None:
        """An eligible endpoint drawn by weight; None when Nacos is unreachable or lists
        none."""
        if not self.reachable:
            return None
        return discovery.pick(self.endpoints, self.rng)

    def pick_url(self) -> str:
        """A pod's WebSocket URL drawn by weight, else the fallback URL."""
        chosen = self.pick()
        return chosen.ws_url if chosen is not None else self.fallback_url

    # --- background -------------------------------------------------------------------

    def _set(self, instances: Iterable[Any], reachable: bool = True) -> None:
        self.endpoints = [endpoint(i) for i in instances]
        self.reachable = reachable
        self.changed.set()

    def _lost(self, why: object) -> None:
        if self.reachable:
            log.warning("nacos unreachable (%s): picking the fallback %s", why, self.fallback_url)
        self.reachable = False
        self.changed.set()

    async def _on_push(self, instances: list[Any]) -> None:
        self._set(instances)

    async def _run(self) -> None:
        from v2.nacos import (
            ListInstanceParam,
            NacosNamingService,
            SubscribeServiceParam,
        )

        config = client_config(self.server, self.namespace, self.username, self.password, self._dir)
        self._client = await NacosNamingService.create_naming_service(config)
        subscribed, since_poll = False, self.refresh_s
        while True:
            try:
                if not await self._client.server_health():
                    raise ConnectionError("no connection to the server")
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    if not subscribed:
                        await self._client.subscribe(
                            SubscribeServiceParam(
                                service_name=self.service,
                                group_name=self.group,
                                subscribe_callback=self._on_push,
                            )
                        )
                        subscribed = True
                    if since_poll >= self.refresh_s or not self.reachable:
                        instances = await self._client.list_instances(
                            ListInstanceParam(
                                service_name=self.service,
                                group_name=self.group,
                                subscribe=False,
                                healthy_only=None,
                            )
                        )
                        self._set(instances)
                        since_poll = 0.0
            except Exception as e:  # the SDK raises its own and gRPC's errors
                self._lost(e or type(e).__name__)
            await asyncio.sleep(CHECK_S)
            since_poll += CHECK_S


NACOS_SCHEME = "nacos://"


def picker_from_url(url: str) -> NacosPicker:
    """A picker for ``nacos://HOST:PORT[,HOST:PORT...][?fallback=WS_URL&namespace=..&group=..
    &service=..&username=..&password=..]``: the Nacos servers (their HTTP ports), and the
    URL to use while Nacos cannot be reached or lists no pod (none: nothing to fall back
    on). What an edge's ``--upstream`` takes besides plain ``ws://`` URLs."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "nacos" or not parts.netloc:
        raise ValueError(f"not a nacos://HOST:PORT URL: {url!r}")
    q = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
    return NacosPicker(
        parts.netloc,
        q.get("fallback", ""),
        service=q.get("service", discovery.SERVICE),
        group=q.get("group", discovery.GROUP),
        namespace=q.get("namespace", ""),
        username=q.get("username"),
        password=q.get("password"),
    )
