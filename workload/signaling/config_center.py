"""This pod's live settings from the Nacos config center (docs/nacos.md, "Config
center"), through ``nacos-sdk-python``'s ``NacosConfigService``: the document
``--nacos-config-data-id`` in ``--nacos-group`` is read at start and on every change
Nacos pushes, validated whole (``roomwire_contract.live``) and, when valid, handed to
``apply``; an invalid one is refused with a log line and ``roomwire_config_updates_total
{outcome="refused"}``, and the settings in force stay.

Like the pod's instance, the config center is never on the pod's critical path: the pod
serves on its start-up settings until Nacos answers, and keeps its last settings while
Nacos is away (the SDK reconnects and listens again on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import yaml

from roomwire_contract.live import Applied, LiveSettings

from .config import Settings
from .discovery import client_config, listen_now, quiet_client_root_logs
from .metrics import LabelledCounter

log = logging.getLogger("signaling.config")

RETRY_MIN_S, RETRY_MAX_S = 0.5, 5.0


class ConfigCenter:
    """Settings in force, moved by the config center's document."""

    def __init__(
        self,
        settings: Settings,
        apply: Callable[[Settings, tuple[str, ...]], None],
        updates: LabelledCounter,
    ) -> None:
        assert settings.nacos_server and settings.nacos_config_data_id
        self.settings = settings
        self.live = LiveSettings(settings, Settings.problems)
        self.apply = apply
        self.updates = updates
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._dir = tempfile.mkdtemp(prefix="roomwire-nacos-config-")

    def start(self) -> None:
        """Returns at once; Nacos is reached in the background."""
        quiet_client_root_logs()
        self._task = asyncio.create_task(self._run(), name="config-center")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._client.shutdown()
            self._client = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def offer(self, text: str | None) -> None:
        """One version of the document (None or empty: none), taken or refused whole."""
        data_id = self.settings.nacos_config_data_id
        out = self.live.offer(text, yaml.safe_load)
        if isinstance(out, Applied):
            self.updates.inc("applied")
            if out.changed:
                shown = ", ".join(f"{n}={getattr(out.settings, n)!r}" for n in out.changed)
                log.info("config %s applied: %s", data_id, shown)
                self.apply(out.settings, out.changed)
            return
        self.updates.inc("refused")
        log.warning(
            "config %s refused, the settings in force stay: %s", data_id, "; ".join(out.problems)
        )

    async def _run(self) -> None:
        from v2.nacos import ConfigParam, NacosConfigService  # type: ignore[import-untyped]

        s = self.settings
        delay = RETRY_MIN_S
        while True:  # until the first read and the listener are in place
            try:
                if self._client is None:
                    config = client_config(
                        s.nacos_server or "",
                        s.nacos_namespace,
                        s.nacos_username,
                        s.nacos_password,
                        self._dir,
                    )
                    self._client = await NacosConfigService.create_config_service(config)
                async with asyncio.timeout(5.0):
                    text = await self._client.get_config(
                        ConfigParam(data_id=s.nacos_config_data_id, group=s.nacos_group)
                    )
                    await self._client.add_listener(
                        s.nacos_config_data_id, s.nacos_group, self._changed
                    )
                listen_now(self._client)
            except Exception as e:  # the SDK raises its own and gRPC's errors
                log.debug("config center not reachable yet: %s", e or type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            self.offer(text)
            log.info("config center: listening to %s/%s", s.nacos_group, s.nacos_config_data_id)
            return

    async def _changed(self, tenant: str, group: str, data_id: str, content: str) -> None:
        self.offer(content)
