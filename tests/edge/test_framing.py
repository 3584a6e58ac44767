"""The edge link's framing, pure: every message built and parsed back, batches cut under
the cap and flattened in order, bad messages refused with FramingError. No I/O."""

from __future__ import annotations

import orjson
import pytest

from signaling.edge import framing as f


def test_each_message_parses_back() -> None:
    assert f.decode(f.attach("d1", "screen")) == [f.Attach("d1", "screen")]
    assert f.decode(f.attach("d1", "participant", "tok", 7, 3)) == [
        f.Attach("d1", "participant", "tok", 7, 3)
    ]
    up = f.dev_up("d1", 5, '{"type":"offer","to":"r","data":{}}')
    assert f.decode(up) == [f.DevFrame("d1", {"type": "offer", "to": "r", "data": {}}, 5)]
    down = f.dev_down(orjson.dumps("d1").decode(), '{"type":"ack","id":1}')
    assert f.decode(down) == [f.DevFrame("d1", {"type": "ack", "id": 1}, None)]
    assert f.decode(f.attached("d1", 9)) == [f.Attached("d1", 9)]
    assert f.decode(f.got({"d1": 3, "d2": 4})) == [f.Got({"d1": 3, "d2": 4})]
    assert f.decode(f.detached("d1", 4001, "replaced")) == [f.Detached("d1", 4001, "replaced")]
    assert f.decode(f.migrate("ws://p:8080/ws")) == [f.Migrate("ws://p:8080/ws")]
    assert f.decode(f.reconnect(250)) == [f.Reconnect(250)]


def test_device_ids_are_escaped() -> None:
    up = f.dev_up('a"b', 1, "{}")
    assert f.decode(up) == [f.DevFrame('a"b', {}, 1)]


def test_batches_keep_order_and_stay_under_the_cap() -> None:
    msgs = [
        f.dev_up("d", i, f'{{"type":"candidate","to":"r","data":{{"c":"{i}"}}}}')
        for i in range(100)
    ]
    out = f.batches(msgs, 1000)
    assert len(out) > 1
    assert all(len(b) <= 1000 + 40 for b in out)
    flat = [m for b in out for m in f.decode(b)]
    assert [m.u for m in flat if isinstance(m, f.DevFrame)] == list(range(100))
    # One message alone is sent as it is; one larger than the cap goes alone.
    assert f.batches(msgs[:1], 1000) == msgs[:1]
    big = f.dev_up("d", 1, orjson.dumps({"data": "x" * 2000}).decode())
    assert f.batches([msgs[0], big, msgs[1]], 1000) == [msgs[0], big, msgs[1]]


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "[]",
        '{"type":"batch"}',
        '{"type":"dev","dev":"d"}',
        '{"type":"dev","dev":"","frame":{}}',
        '{"type":"dev","dev":"d","u":-1,"frame":{}}',
        '{"type":"attach","dev":"d"}',
        '{"type":"attach","dev":"d","role":"screen","resume":5}',
        '{"type":"got","u":{"d":"x"}}',
        '{"type":"attached","dev":"d"}',
        '{"type":"detached","dev":"d","code":true}',
        '{"type":"whatever"}',
    ],
)
def test_bad_messages_are_refused(text: str) -> None:
    with pytest.raises(f.FramingError):
        f.decode(text)


def test_the_asyncapi_document_has_every_link_message() -> None:
    from pathlib import Path

    import yaml

    doc = yaml.safe_load((Path(__file__).parents[2] / "docs" / "asyncapi.yaml").read_text())
    assert doc["channels"]["edge"]["address"] == "/edge"
    consts = {
        m["payload"]["properties"]["type"].get("const")
        for name, m in doc["components"]["messages"].items()
        if name.startswith("edge")
    }
    assert consts == {
        f.ATTACH,
        f.DEV,
        f.ATTACHED,
        f.GOT,
        f.DETACHED,
        f.MIGRATE,
        f.RECONNECT,
        f.BATCH,
    }
