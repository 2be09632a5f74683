"""The guest-failure queue and restart records in ZooKeeper.

Layout::

    <root>/guest-events/e-0000000042     persistent sequential: one guest failure
                                         (JSON) an agent saw; the leader deletes it
                                         once handled
    <root>/guest-restarts/<instance id>  persistent: {"restarts": [epoch s, ...]}

The agent's write is one ``create``: the failure is durable before the agent
moves on, and survives the agent, the controllers and a leader change (the
next leader finds what the previous one did not delete). The leader reads the
queue through a children watch: a tick costs no round trip while nothing
changes; a connection loss (kazoo drops watches) re-reads it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping

from kazoo import exceptions as kz_exc
from kazoo.protocol.states import EventType

PREFIX = "e-"


def _dumps(data: Mapping[str, object]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _loads(raw: bytes | None) -> dict:
    try:
        value = json.loads(raw.decode()) if raw else {}
    except (UnicodeDecodeError, ValueError):
        return {"_undecodable": True}
    return value if isinstance(value, dict) else {"_undecodable": True}


class ZooKeeperGuestEventStore:
    def __init__(self, client, events_path: str, restarts_path: str) -> None:
        self.client = client
        self.path = events_path
        self.restarts_path = restarts_path
        self._lock = threading.Lock()
        self._dirty = True
        self._cache: dict[str, dict] = {}
        client.add_listener(self._on_state)

    # watches and listeners: record facts only, never block
    def _on_state(self, state) -> None:
        self._dirty = True

    def _on_children(self, event) -> None:
        if event.type != EventType.NONE:
            self._dirty = True

    def put(self, event: Mapping[str, object]) -> str:
        node = self.client.create(f"{self.path}/{PREFIX}", _dumps(event), sequence=True,
                                  makepath=True)
        return node.rsplit("/", 1)[1]

    def pending(self) -> list[tuple[str, Mapping[str, object]]]:
        if self._dirty:
            self._dirty = False
            try:
                self._reload()
            except Exception:
                self._dirty = True
                raise
        with self._lock:
            return sorted(self._cache.items())

    def _reload(self) -> None:
        try:
            names = set(self.client.get_children(self.path, watch=self._on_children))
        except kz_exc.NoNodeError:
            self.client.ensure_path(self.path)
            names = set(self.client.get_children(self.path, watch=self._on_children))
        names = {n for n in names if n.startswith(PREFIX)}
        with self._lock:
            for gone in set(self._cache) - names:
                del self._cache[gone]
            new = names - set(self._cache)
        pending = {n: self.client.get_async(f"{self.path}/{n}") for n in new}
        for name, result in pending.items():
            try:
                raw, _ = result.get()
            except kz_exc.NoNodeError:
                continue  # handled meanwhile (another leader)
            with self._lock:
                self._cache[name] = _loads(raw)

    def delete(self, event_id: str) -> None:
        if not event_id.startswith(PREFIX) or "/" in event_id:
            return
        try:
            self.client.delete(f"{self.path}/{event_id}")
        except kz_exc.NoNodeError:
            pass
        with self._lock:
            self._cache.pop(event_id, None)

    def _restart_node(self, instance_id: str) -> str:
        if not instance_id or "/" in instance_id or instance_id in (".", ".."):
            raise ValueError(f"not an instance id: {instance_id!r}")
        return f"{self.restarts_path}/{instance_id}"

    def restarts(self, instance_id: str) -> list[float]:
        try:
            raw, _ = self.client.get(self._restart_node(instance_id))
        except kz_exc.NoNodeError:
            return []
        times = _loads(raw).get("restarts")
        return [t for t in times if isinstance(t, (int, float)) and not isinstance(t, bool)] \
            if isinstance(times, list) else []

    def record_restart(self, instance_id: str, at: float, keep: int = 20) -> None:
        node = self._restart_node(instance_id)
        while True:
            try:
                raw, stat = self.client.get(node)
            except kz_exc.NoNodeError:
                try:
                    self.client.create(node, _dumps({"restarts": [at]}), makepath=True)
                    return
                except kz_exc.NodeExistsError:
                    continue
            times = _loads(raw).get("restarts")
            times = [t for t in times if isinstance(t, (int, float))] \
                if isinstance(times, list) else []
            try:
                self.client.set(node, _dumps({"restarts": (times + [at])[-keep:]}),
                                version=stat.version)
                return
            except kz_exc.BadVersionError:
                continue  # another writer meanwhile: merge again
