"""One "lab" per driver: BMCs on demand, with a way to read the real power
behind the BMC (the emulator's own state), so a test never trusts the driver
it is testing."""

from __future__ import annotations

import os
import socket
import uuid

import requests
from harness import fenceagents, procs
from harness.bmc import GarbageUDP, IpmiSimBMC, PyghmiBMC, QuirkyRedfish, SushyEmulator
from harness.fenceagents import fence_ipmilan, fence_redfish
from harness.snmppdu import ApcPDU

from instanceha.fencing import PowerState, fake
from instanceha.fencing import exceptions as exc

SLOW_DELAY = 3  # seconds a slow BMC takes to apply a power change


class FakeLab:
    driver = "fake"
    # what the behaviour suite expects of this driver (fence agents say less)
    auth_errors = (exc.AuthFailed,)
    down_errors = (exc.BMCUnreachable,)
    garbage_errors = (exc.GarbageReply,)

    def wrong_password(self, entry, wrong):
        return dict(entry, password=wrong)

    def __init__(self, base_dir):
        fake.REGISTRY.reset()

    def bmc(self, on=True, slow=False):
        address = f"fake-bmc-{uuid.uuid4().hex[:8]}"
        bmc = fake.REGISTRY.bmc(address)
        bmc.password = "password"
        bmc.set_state(PowerState.ON if on else PowerState.OFF)
        if slow:
            bmc.power_delay = SLOW_DELAY
        entry = {"driver": "fake", "address": address, "username": "admin",
                 "password": "password"}
        return entry, lambda: bmc.state is PowerState.ON

    def down(self):
        entry, _ = self.bmc()
        fake.REGISTRY.bmc(entry["address"]).down = True
        return entry

    def garbage(self):
        entry, _ = self.bmc()
        fake.REGISTRY.bmc(entry["address"]).garbage = True
        return entry

    def close(self):
        fake.REGISTRY.reset()


class IpmiLab(FakeLab):
    driver = "ipmi"
    bmc_class = IpmiSimBMC

    def __init__(self, base_dir):
        self.base_dir = base_dir
        self.started = []

    def bmc(self, on=True, slow=False):
        b = self.bmc_class(self.base_dir, name=f"bmc{len(self.started)}", initial_on=on,
                           power_delay=SLOW_DELAY if slow else 0)
        self.started.append(b)
        b.start()
        return b.entry(), b.powered_on

    def down(self):
        return {"driver": "ipmi", "address": "127.0.0.1",
                "port": procs.free_port(socket.SOCK_DGRAM), "username": "admin",
                "password": "password"}

    def garbage(self):
        g = GarbageUDP().start()
        self.started.append(g)
        return g.entry()

    def close(self):
        for b in self.started:
            b.stop()


class PyghmiLab(IpmiLab):
    bmc_class = PyghmiBMC


class RedfishLab(FakeLab):
    driver = "redfish"
    SYSTEMS = [f"node{i}" for i in range(12)]

    def __init__(self, base_dir):
        self.base_dir = base_dir
        self.emulator = SushyEmulator(base_dir, systems=self.SYSTEMS, name="sushy").start()
        self.slow_emulator = None
        self.free = list(self.SYSTEMS)
        self.others = []

    def _set(self, emulator, name, reset):
        r = requests.post(f"{emulator.url}{emulator.system_path(name)}/Actions/"
                          "ComputerSystem.Reset", json={"ResetType": reset},
                          verify=emulator.cert, auth=(emulator.user, emulator.password),
                          timeout=10)
        assert r.status_code in (200, 204), r.text

    def bmc(self, on=True, slow=False):
        if slow:
            if self.slow_emulator is None:
                self.slow_emulator = SushyEmulator(self.base_dir, systems=["slow"],
                                                   name="sushy-slow",
                                                   power_delay=SLOW_DELAY).start()
            em, name = self.slow_emulator, "slow"
        else:
            em, name = self.emulator, self.free.pop(0)
            if not on:
                self._set(em, name, "ForceOff")  # no delay: applied at the next read
                assert em.power_state(name) == "Off"
        return em.entry(name), lambda: em.power_state(name) == "On"

    def others_on(self) -> bool:
        """Every system not handed out yet still reads On."""
        return all(self.emulator.power_state(n) == "On" for n in self.free)

    def down(self):
        return dict(self.emulator.entry("node0"), port=procs.free_port())

    def garbage(self):
        q = QuirkyRedfish(self.base_dir, "garbage").start()
        self.others.append(q)
        return q.entry()

    def close(self):
        for x in [self.emulator, self.slow_emulator, *self.others]:
            if x is not None:
                x.stop()


# -- the fence_agent driver: ClusterLabs agents against the same emulators --------

class AgentLabMixin:
    """The misbehaving agents on PATH; what fence agents can say about a fault."""

    driver = "fence_agent"
    # fence_ipmilan and fence_redfish say the same for a wrong password as for a
    # wrong plug; a dead device makes them wait longer than the short deadline
    auth_errors = (exc.AgentFailed, exc.AgentLoginFailed, exc.AuthFailed)
    down_errors = (exc.AgentTimeout, exc.BMCUnreachable)
    garbage_errors = (exc.GarbageReply,)

    def _agents(self, base_dir):
        self.agents_dir = fenceagents.install(os.path.join(base_dir, "agents"))
        self._path = os.environ.get("PATH", "")
        os.environ["PATH"] = f"{self._path}:{self.agents_dir}"

    def garbage(self):
        return {"driver": "fence_agent", "agent": "fence_garbage", "address": "127.0.0.1"}

    def close(self):
        os.environ["PATH"] = self._path
        super().close()


class FenceIpmilanLab(AgentLabMixin, IpmiLab):
    def __init__(self, base_dir):
        super().__init__(base_dir)
        self._agents(base_dir)

    def bmc(self, on=True, slow=False):
        entry, powered_on = super().bmc(on=on, slow=slow)
        return fence_ipmilan(entry), powered_on

    def down(self):
        return fence_ipmilan(super().down())


class FenceRedfishLab(AgentLabMixin, RedfishLab):
    def __init__(self, base_dir):
        super().__init__(base_dir)
        self._agents(base_dir)

    def bmc(self, on=True, slow=False):
        entry, powered_on = super().bmc(on=on, slow=slow)
        return fence_redfish(entry), powered_on

    def down(self):
        return fence_redfish(super().down())


class ApcPduLab(AgentLabMixin, FakeLab):
    """fence_apc_snmp against snmpsim serving an APC outlet table: one outlet per host."""

    # a PDU does not answer a wrong community at all: silence, as when it is down
    auth_errors = (exc.AgentTimeout, exc.BMCUnreachable)

    def __init__(self, base_dir):
        self._agents(base_dir)
        self.base_dir = base_dir
        self.pdu = ApcPDU(base_dir, name="pdu", outlets=12).start()
        self.slow_pdu = None
        self.free = list(range(1, 13))

    def bmc(self, on=True, slow=False):
        if slow:
            if self.slow_pdu is None:
                self.slow_pdu = ApcPDU(self.base_dir, name="pdu-slow", outlets=1,
                                       power_delay=SLOW_DELAY).start()
            pdu, outlet = self.slow_pdu, 1
        else:
            pdu, outlet = self.pdu, self.free.pop(0)
        pdu.set_power(outlet, on)
        return pdu.entry(outlet), lambda: pdu.powered_on(outlet)

    def wrong_password(self, entry, wrong):
        # the PDU's secret is its community; a PDU does not answer another one
        return dict(entry, options=dict(entry["options"], community=wrong), deadline=3)

    def down(self):
        return dict(self.pdu.entry(1), port=procs.free_port(socket.SOCK_DGRAM))

    def close(self):
        for p in (self.pdu, self.slow_pdu):
            if p is not None:
                p.stop()
        super().close()


LABS = {"fake": FakeLab, "ipmi_sim": IpmiLab, "pyghmi": PyghmiLab, "redfish": RedfishLab,
        "fence_ipmilan": FenceIpmilanLab, "fence_redfish": FenceRedfishLab,
        "fence_apc_snmp": ApcPduLab}


def secret_in_any_cmdline(secret: str) -> list[int]:
    """PIDs whose command line holds the secret (it must be none)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if secret.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found
