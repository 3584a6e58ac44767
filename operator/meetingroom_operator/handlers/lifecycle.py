"""Operator start-up and shutdown: configuration (fail fast), kopf settings, clients,
the pod cache, ``/metrics`` and the balance loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from meetingroom_operator import constants as c
from meetingroom_operator.config import Config
from meetingroom_operator.errors import ConfigError, OperatorError
from meetingroom_operator.handlers import balance
from meetingroom_operator.handlers.state import PodMemory, State, state_of
from meetingroom_operator.kube import Kube
from meetingroom_operator.metrics import Metrics, serve
from meetingroom_operator.store import Store

log = logging.getLogger("meetingroom_operator")


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings: no peering (one operator per namespace), no cluster-wide
    scanning of namespaces and CRDs (the operator serves one namespace and its RBAC is
    namespaced), Events only for warnings and our own messages. Only event handlers are
    used, so kopf keeps no finalizers or bookkeeping annotations on the objects."""
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30


async def startup(settings: kopf.OperatorSettings, memo: Any) -> None:
    configure(settings)
    try:
        cfg = Config.from_env()
    except ConfigError as e:
        log.error("%s", e)
        raise kopf.PermanentError(str(e)) from e
    store = Store(cfg.redis_url)
    if not await store.ping():
        raise kopf.TemporaryError("Redis is not reachable yet", delay=2)
    kube = Kube(cfg.namespace)
    state = State(cfg=cfg, store=store, kube=kube, metrics=Metrics())
    try:
        state.homes = await store.placement()
        known = await kube.list_room_ids()
        stale = [r for r in state.homes if r not in known]
        if stale:  # rooms deleted while the operator was away
            await store.write_placement({}, removed=stale)
            for r in stale:
                state.homes.pop(r, None)
        for info in await kube.list_pods(f"{c.APP_LABEL}={c.APP_NAME}"):
            state.pods[info.name] = info
            state.pod_memory[info.name] = PodMemory(info.uid, info.restarts, info.running)
    except OperatorError as e:
        raise kopf.TemporaryError(f"start-up observation failed: {e}", delay=2) from e
    state.pods_synced.set()
    if cfg.metrics_port:
        state.metrics_runner = await serve(state.metrics, cfg.metrics_port, cfg.metrics_host)
    memo.state = state
    state.spawn(balance.run(state))
    log.info(
        "operator up: namespace %s, deployment %s, %d pods, %d placed rooms",
        cfg.namespace,
        cfg.deployment,
        len(state.pods),
        len(state.homes),
    )


async def cleanup(memo: Any) -> None:
    try:
        state = state_of(memo)
    except RuntimeError:
        return
    for task in list(state.tasks):
        task.cancel()
    await asyncio.gather(*state.tasks, return_exceptions=True)
    if state.metrics_runner is not None:
        await state.metrics_runner.cleanup()
    await state.store.close()
