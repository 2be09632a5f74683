"""One reconciliation tick: observe every host, decide, act."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping

from instanceha.controller import observe
from instanceha.controller.executor import Executor
from instanceha.coordination import Coordinator
from instanceha.engine import detection
from instanceha.engine.model import DetectionPolicy, HostView

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Transition:
    host: str
    before: HostView | None
    after: HostView
    at: float


class Reconciler:
    def __init__(
        self,
        coordinator: Coordinator,
        policy: DetectionPolicy,
        executor: Executor,
        nova_states: Callable[[], Mapping[str, bool]] | None = None,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.policy = policy
        self.executor = executor
        self.nova_states = nova_states
        self.on_transition = on_transition
        self.views: dict[str, HostView] = {}
        self.last_snapshot = None

    def tick(self, act: bool = True) -> list[Transition]:
        snap = self.coordinator.snapshot()
        self.last_snapshot = snap
        nova = self.nova_states() if self.nova_states else None
        ctl = observe.controller(snap)
        observations = observe.hosts(snap, nova)
        new = detection.decide_all(self.views, observations, ctl, self.policy, snap.taken_at)
        transitions = []
        for host, view in new.items():
            old = self.views.get(host)
            if old is None or old.phase is not view.phase or view.rejoined:
                t = Transition(host, old, view, snap.taken_at)
                transitions.append(t)
                LOG.info(
                    "host=%s phase=%s->%s rule=%s reason=%s",
                    host,
                    old.phase.value if old else "NEW",
                    view.phase.value,
                    view.rule,
                    view.reason,
                )
                if self.on_transition:
                    self.on_transition(t)
        for gone in set(self.views) - set(new):
            LOG.info("host=%s phase=%s->FORGOTTEN reason=no longer registered", gone,
                     self.views[gone].phase.value)
        self.views = new
        if act:
            self.executor.act(new, snap.taken_at, snap.control)
        return transitions
