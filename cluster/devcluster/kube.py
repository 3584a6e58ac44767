"""A small, typed Kubernetes API client: JSON in, JSON out, plus list-then-watch.

All API traffic of devcluster goes through here. It speaks HTTPS with the credentials of a
kubeconfig (client certificate or bearer token), keeps one connection per thread, and raises
``ApiError`` for any non-2xx answer.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"{status} {reason}: {body[:500]}")
        self.status = status
        self.reason = reason
        self.body = body

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are."""

    server: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    insecure: bool = False
    context: str = ""


def _materialize(data_b64: str | None, path: str | None, base: Path, suffix: str) -> str | None:
    if data_b64:
        fd, name = tempfile.mkstemp(prefix="devcluster-", suffix=suffix)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(data_b64))
        return name
    if path:
        return str((base / path).resolve())
    return None


def load_kubeconfig(path: str | Path, context: str | None = None) -> Credentials:
    """Read a kubeconfig: its current (or the named) context's cluster and user."""
    path = Path(path)
    cfg = yaml.safe_load(path.read_text()) or {}
    ctx_name = context or cfg.get("current-context", "")
    contexts = {c["name"]: c.get("context", {}) for c in cfg.get("contexts") or []}
    if ctx_name not in contexts:
        raise ValueError(f"{path}: no context {ctx_name!r}")
    ctx = contexts[ctx_name]
    clusters = {c["name"]: c.get("cluster", {}) for c in cfg.get("clusters") or []}
    users = {u["name"]: u.get("user", {}) for u in cfg.get("users") or []}
    cluster = clusters[ctx["cluster"]]
    user = users.get(ctx.get("user", ""), {})
    base = path.parent
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (base / user["tokenFile"]).read_text().strip()
    return Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=_materialize(
            cluster.get("certificate-authority-data"),
            cluster.get("certificate-authority"),
            base,
            ".crt",
        ),
        cert_file=_materialize(
            user.get("client-certificate-data"), user.get("client-certificate"), base, ".crt"
        ),
        key_file=_materialize(user.get("client-key-data"), user.get("client-key"), base, ".key"),
        token=token,
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        context=ctx_name,
    )


class Kube:
    """JSON requests against one API server; safe to share between threads."""

    def __init__(self, creds: Credentials, timeout: float = 30.0) -> None:
        self.creds = creds
        self.timeout = timeout
        url = urllib.parse.urlsplit(creds.server)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 443
        self._prefix = url.path.rstrip("/")
        ctx = ssl.create_default_context(cafile=creds.ca_file)
        if creds.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if creds.cert_file:
            ctx.load_cert_chain(creds.cert_file, creds.key_file)
        self._ssl = ctx
        self._local = threading.local()

    @classmethod
    def from_kubeconfig(cls, path: str | Path, context: str | None = None) -> Kube:
        return cls(load_kubeconfig(path, context))

    def _connect(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self._host, self._port, context=self._ssl, timeout=timeout
        )

    def _headers(self, content_type: str | None) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": "devcluster"}
        if content_type:
            h["Content-Type"] = content_type
        if self.creds.token:
            h["Authorization"] = f"Bearer {self.creds.token}"
        return h

    def request_raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str | int | bool] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; return (status, body) whatever the status."""
        url = self._prefix + path
        if query:
            url += "?" + urllib.parse.urlencode(
                {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in query.items()}
            )
        data = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._connect(self.timeout)
                self._local.conn = conn
            try:
                conn.request(
                    method,
                    url,
                    body=data,
                    headers=self._headers(content_type if data is not None else None),
                )
                resp = conn.getresponse()
                payload = resp.read()
                return resp.status, payload
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str | int | bool] | None = None,
    ) -> Obj:
        status, payload = self.request_raw(method, path, body, content_type, query)
        if status >= 300:
            text = payload.decode(errors="replace")
            reason = ""
            try:
                reason = str(json.loads(text).get("reason", ""))
            except ValueError:
                pass
            raise ApiError(status, reason, text)
        if not payload:
            return {}
        result: Obj = json.loads(payload)
        return result

    def get(self, path: str, **query: str | int | bool) -> Obj:
        return self.request("GET", path, query=query or None)

    def get_or_none(self, path: str) -> Obj | None:
        try:
            return self.get(path)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    def post(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body)

    def put(self, path: str, body: Obj) -> Obj:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Obj, kind: str = "merge") -> Obj:
        ctype = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[kind]
        return self.request("PATCH", path, body, content_type=ctype)

    def delete(self, path: str, body: Obj | None = None) -> Obj | None:
        try:
            return self.request("DELETE", path, body)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    def apply(self, obj: Obj, path: str, manager: str = "devcluster") -> Obj:
        """Server-side apply of ``obj`` at its object path."""
        return self.request(
            "PATCH",
            path,
            obj,
            content_type="application/apply-patch+yaml",
            query={"fieldManager": manager, "force": True},
        )

    def watch(
        self,
        path: str,
        resource_version: str,
        timeout_seconds: int = 240,
        stop: threading.Event | None = None,
    ) -> Iterator[Obj]:
        """Stream watch events (dicts with ``type`` and ``object``) until the server ends."""
        query = urllib.parse.urlencode(
            {
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(timeout_seconds),
            }
        )
        conn = self._connect(timeout_seconds + 30)
        try:
            conn.request("GET", f"{self._prefix}{path}?{query}", headers=self._headers(None))
            resp = conn.getresponse()
            if resp.status >= 300:
                raise ApiError(resp.status, "", resp.read().decode(errors="replace"))
            while stop is None or not stop.is_set():
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    event: Obj = json.loads(line)
                    yield event
        finally:
            conn.close()


def obj_key(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


class Informer:
    """List then watch one collection in a thread; keeps a cache and calls ``handler``.

    ``handler(event_type, obj)`` gets ADDED/MODIFIED/DELETED, also for objects that
    disappeared between a watch ending and the next relist.
    """

    def __init__(
        self,
        kube: Kube,
        path: str,
        handler: Callable[[str, Obj], None],
        stop: threading.Event,
        name: str = "",
    ) -> None:
        self.kube = kube
        self.path = path
        self.handler = handler
        self.stop = stop
        self.cache: dict[str, Obj] = {}
        self.synced = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(
            target=self._run, name=name or f"informer {path}", daemon=True
        )

    def start(self) -> Informer:
        self.thread.start()
        return self

    def _emit(self, kind: str, obj: Obj) -> None:
        key = obj_key(obj)
        with self.lock:
            if kind == "DELETED":
                self.cache.pop(key, None)
            else:
                self.cache[key] = obj
        try:
            self.handler(kind, obj)
        except Exception:  # a handler bug must not stop the informer
            import traceback

            traceback.print_exc()

    def _relist(self) -> str:
        listing = self.kube.get(self.path)
        seen: set[str] = set()
        for item in listing.get("items", []):
            key = obj_key(item)
            seen.add(key)
            old = self.cache.get(key)
            if old is None:
                self._emit("ADDED", item)
            elif old["metadata"].get("resourceVersion") != item["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", item)
        for key in list(self.cache):
            if key not in seen:
                self._emit("DELETED", self.cache[key])
        self.synced.set()
        return str(listing["metadata"]["resourceVersion"])

    def _run(self) -> None:
        rv = ""
        while not self.stop.is_set():
            try:
                if not rv:
                    rv = self._relist()
                for event in self.kube.watch(self.path, rv, stop=self.stop):
                    kind = event.get("type")
                    obj = event.get("object", {})
                    if kind == "ERROR":
                        rv = ""  # 410 Gone or similar: relist
                        break
                    rv = str(obj.get("metadata", {}).get("resourceVersion", rv))
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._emit(str(kind), obj)
            except (OSError, http.client.HTTPException, ApiError, ValueError):
                rv = ""
                self.stop.wait(0.5)

    def items(self) -> list[Obj]:
        with self.lock:
            return list(self.cache.values())


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, ApiError) as e:
            last_error = e
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for {what}"
                + (f" (last error: {last_error})" if last_error else "")
            )
        time.sleep(every)
