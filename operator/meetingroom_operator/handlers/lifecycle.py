"""Operator start-up and shutdown: configuration (fail fast; live settings from the
config center when there is one), kopf settings, clients, the pod cache, ``/metrics``
and the balance loop."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

import kopf

from meetingroom_operator import constants as c
from meetingroom_operator.config import Config
from meetingroom_operator.config_center import ConfigCenter
from meetingroom_operator.errors import ConfigError, OperatorError
from meetingroom_operator.handlers import balance
from meetingroom_operator.handlers.state import PodMemory, State, state_of
from meetingroom_operator.kube import Kube
from meetingroom_operator.metrics import Metrics, serve
from meetingroom_operator.store import Store

log = logging.getLogger("meetingroom_operator")

# back-off while Redis or the API do not answer: short, so that the operator is ready
# within seconds of their return (the pods use the same bounds)
RETRY_MIN_S, RETRY_MAX_S = 0.5, 2.0
READY_PING_S = 1.0


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
    """Returns without waiting for Redis: kopf's liveness endpoint is served from the
    start, and a Redis outage never restarts the operator. It reaches Redis in the
    background and is ready (``/readyz`` on the metrics port) once it has."""
    configure(settings)
    try:
        cfg = Config.from_env()
    except ConfigError as e:
        log.error("%s", e)
        raise kopf.PermanentError(str(e)) from e
    state = State(
        cfg=cfg,
        store=Store(cfg.redis_url, cfg.redis_tls),
        kube=Kube(cfg.namespace),
        metrics=Metrics(),
    )
    memo.state = state
    if cfg.metrics_port:
        state.metrics_runner = await serve(
            state.metrics, cfg.metrics_port, cfg.metrics_host, ready=partial(ready, state)
        )
    if cfg.nacos_server:
        state.config_center = ConfigCenter(
            cfg,
            partial(setattr, state, "cfg"),
            state.metrics.config_updates,
            partial(state.kube.post_event, "Pod", "v1", cfg.pod_name, "ConfigRefused"),
        )
        state.spawn(state.config_center.run())
    state.spawn(come_up(state))


async def come_up(state: State) -> None:
    """Observe Redis and the API (retrying with back-off), then run the balance loop."""
    delay, reported = RETRY_MIN_S, False
    while True:
        try:
            if not await state.store.ping():
                raise OperatorError("Redis is not reachable")
            await observe(state)
            break
        except OperatorError as e:
            if not reported:
                log.warning("%s; not ready, retrying", e)
                reported = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
    state.spawn(balance.run(state))
    log.info(
        "operator up: namespace %s, deployment %s, %d pods, %d placed rooms",
        state.cfg.namespace,
        state.cfg.deployment,
        len(state.pods),
        len(state.homes),
    )


async def observe(state: State) -> None:
    """Placement from Redis, rooms and pods from the API: what the loop starts from."""
    homes = await state.store.placement()
    known = await state.kube.list_room_ids()
    stale = [r for r in homes if r not in known]
    if stale:  # rooms deleted while the operator was away
        await state.store.write_placement({}, removed=stale)
        for r in stale:
            homes.pop(r, None)
    for info in await state.kube.list_pods(f"{c.APP_LABEL}={c.APP_NAME}"):
        # the watch may have told of a pod already, and more recently than this list
        state.pods.setdefault(info.name, info)
        state.pod_memory.setdefault(info.name, PodMemory(info.uid, info.restarts, info.running))
    state.homes = homes
    state.redis_synced.set()
    state.pods_synced.set()


async def ready(state: State) -> bool:
    """Ready while Redis answers, once the start-up observation is done."""
    if not state.redis_synced.is_set():
        return False
    try:
        return await asyncio.wait_for(state.store.ping(), READY_PING_S)
    except TimeoutError:
        return False


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
    if state.config_center is not None:
        await state.config_center.close()
    await state.store.close()
