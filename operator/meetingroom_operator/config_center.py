"""The operator's live settings from the Nacos config center (docs/nacos.md, "Config
center"), through ``nacos-sdk-python``'s ``NacosConfigService``: the document
``ROOMWIRE_NACOS_CONFIG_DATA_ID`` is read at start and on every change Nacos pushes,
validated whole (``roomwire_contract.live``, with ``Config.problems``) and, when valid,
put in force through ``apply``. An invalid one is refused with a log line,
``roomwire_operator_config_updates_total{outcome="refused"}`` and a Warning Event
``ConfigRefused`` on the operator's pod; the settings in force stay.

Never on the reconcile path: the operator runs on its start-up settings until Nacos
answers and keeps its last settings while Nacos is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import yaml

from meetingroom_operator.config import Config
from meetingroom_operator.metrics import Metric
from roomwire_contract.live import Applied, LiveSettings

log = logging.getLogger("meetingroom_operator")

RETRY_MIN_S, RETRY_MAX_S = 0.5, 5.0


def listen_now(config_service: Any) -> None:
    """Have the SDK send its listen request now, not at its next 5 s cycle: until it
    reaches the server, no change of the document is pushed (the workload's
    ``signaling.discovery.listen_now`` does the same; the operator imports nothing of
    the workload)."""
    proxy = getattr(config_service, "grpc_client_proxy", None)
    channel = getattr(proxy, "execute_config_listen_channel", None)
    if channel is not None:
        channel.put_nowait(None)


class ConfigCenter:
    """The operator's settings in force, moved by its config-center document."""

    def __init__(
        self,
        cfg: Config,
        apply: Callable[[Config], None],
        updates: Metric,
        refused: Callable[[str], Awaitable[None]],
    ) -> None:
        assert cfg.nacos_server, "ConfigCenter needs ROOMWIRE_NACOS_SERVER"
        self.cfg = cfg
        self.live = LiveSettings(cfg, Config.problems)
        self.apply = apply
        self.updates = updates
        self.refused = refused  # tells the cluster (an Event); failures are only logged
        self._client: Any = None
        self._dir = tempfile.mkdtemp(prefix="roomwire-operator-nacos-")

    async def run(self) -> None:
        """Reach Nacos (with back-off), read the document, then listen to it."""
        from v2.nacos import (  # type: ignore[import-untyped]
            ClientConfigBuilder,
            ConfigParam,
            NacosConfigService,
        )

        c = self.cfg
        delay = RETRY_MIN_S
        while True:
            try:
                if self._client is None:
                    builder = (
                        ClientConfigBuilder()
                        .server_address(c.nacos_server)
                        .namespace_id(c.nacos_namespace)
                        .log_level(logging.WARNING)
                        .log_dir(os.path.join(self._dir, "logs"))
                        .cache_dir(os.path.join(self._dir, "cache"))
                    )
                    if c.nacos_username and c.nacos_password:
                        builder = builder.username(c.nacos_username).password(c.nacos_password)
                    self._client = await NacosConfigService.create_config_service(builder.build())
                async with asyncio.timeout(5.0):
                    text = await self._client.get_config(
                        ConfigParam(data_id=c.nacos_config_data_id, group=c.nacos_group)
                    )
                    await self._client.add_listener(
                        c.nacos_config_data_id, c.nacos_group, self._changed
                    )
                listen_now(self._client)
            except Exception as e:  # the SDK raises its own and gRPC's errors
                log.debug("config center not reachable yet: %s", e or type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            await self.offer(text)
            log.info("config center: listening to %s/%s", c.nacos_group, c.nacos_config_data_id)
            return

    async def offer(self, text: str | None) -> None:
        """One version of the document (None or empty: none), taken or refused whole."""
        data_id = self.cfg.nacos_config_data_id
        out = self.live.offer(text, yaml.safe_load)
        if isinstance(out, Applied):
            self.updates.inc(1.0, "applied")
            if out.changed:
                shown = ", ".join(f"{n}={getattr(out.settings, n)!r}" for n in out.changed)
                log.info("config %s applied: %s", data_id, shown)
                self.apply(out.settings)
            return
        self.updates.inc(1.0, "refused")
        why = "; ".join(out.problems)
        log.warning("config %s refused, the settings in force stay: %s", data_id, why)
        try:
            await self.refused(f"config {data_id} refused, the settings in force stay: {why}")
        except Exception as e:  # the Event is a courtesy; the refusal stands without it
            log.warning("could not post the ConfigRefused event: %s", e)

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._client.shutdown()
            self._client = None
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _changed(self, tenant: str, group: str, data_id: str, content: str) -> None:
        await self.offer(content)
