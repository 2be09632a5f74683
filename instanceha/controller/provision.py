"""The leader provisions a slot for every host it may have to protect.

An agent may join only a slot a controller made for its host (see
``coordination.zk_layout``): the leader makes one for every host of its fencing
inventory and every nova-compute host Nova knows, a batch at a time. A slot
whose agent never joined is not monitored: provisioning never makes a host
look failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from instanceha import exceptions
from instanceha.coordination import ClusterSnapshot, Coordinator

LOG = logging.getLogger(__name__)


class Provisioner:
    def __init__(self, coordinator: Coordinator, desired: Callable[[], Iterable[str]],
                 batch: int = 200) -> None:
        self.coordinator = coordinator
        self.desired = desired
        self.batch = batch
        self.made = 0
        self._refused: set[str] = set()

    def tick(self, snapshot: ClusterSnapshot) -> int:
        """Provision up to ``batch`` missing hosts; returns how many were made."""
        missing = sorted(set(self.desired()) - set(snapshot.provisioned) - self._refused)
        made = 0
        for host in missing[:self.batch]:
            try:
                if self.coordinator.provision_host(host):
                    made += 1
            except ValueError as e:
                self._refused.add(host)
                LOG.error("host %s cannot be provisioned in the coordinator: %s", host, e)
            except exceptions.CoordinationError as e:
                LOG.warning("provisioning %s: %s; %s", host, e, e.action.value)
                break
        if made:
            self.made += made
            LOG.info("provisioned %d host slot(s) in the coordinator (%d still missing)",
                     made, max(0, len(missing) - made))
        return made
