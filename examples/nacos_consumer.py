"""Another service choosing a signaling pod through Nacos (docs/nacos.md).

    python examples/nacos_consumer.py --nacos 127.0.0.1:8848 \
        --fallback ws://127.0.0.1:8080/ws --room demo --peer bot

It asks the picker for a pod (drawn by weight among the healthy, non-draining
instances of ``roomwire-signaling``; the fallback URL, the Kubernetes Service's, when
Nacos cannot be reached or lists none), joins a room there and prints who is in it.
"""

from __future__ import annotations

import argparse
import asyncio

from signaling.client import Client
from signaling.discovery import NacosPicker


async def main(nacos: str, fallback: str, room: str, peer: str, wait_s: float) -> None:
    picker = NacosPicker(nacos, fallback_url=fallback)
    await picker.start()
    try:
        # Give Nacos a moment to answer; the picker never blocks or fails without it.
        try:
            await asyncio.wait_for(picker.changed.wait(), wait_s)
        except TimeoutError:
            pass
        url = picker.pick_url()
        print(f"picked {url} ({'from Nacos' if url != fallback else 'the fallback'})")
        client = Client(url)
        await client.connect()
        joined = await client.join(room, peer)
        print(f"joined {room} as {peer}; peers there: {joined.get('peers')}")
        await client.close()
    finally:
        await picker.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nacos", default="127.0.0.1:8848", help="Nacos HOST:PORT (HTTP port)")
    p.add_argument("--fallback", default="ws://127.0.0.1:8080/ws", help="the Service's URL")
    p.add_argument("--room", default="demo")
    p.add_argument("--peer", default="nacos-consumer")
    p.add_argument("--wait", type=float, default=3.0, help="seconds to wait for Nacos")
    a = p.parse_args()
    asyncio.run(main(a.nacos, a.fallback, a.room, a.peer, a.wait))
