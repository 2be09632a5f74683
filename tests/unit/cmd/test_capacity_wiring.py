"""The capacity monitor and dispatcher as the controller wires them: on the
recovery actuator's Nova view, phases, notifications and bus."""

from instanceha.cmd import common, controller_parts
from instanceha.controller.capacity import CapacityMonitor
from instanceha.controller.capacity_dispatch import Dispatcher
from tests.unit.controller import test_recovery_actuator as ra


def conf(**capacity):
    c = common.make_conf()
    c([], default_config_files=[])
    for name, value in capacity.items():
        c.set_override(name, value, "capacity")
    return c


def test_the_monitor_reads_the_actuators_nova_view_and_the_dispatcher_is_set():
    log = ra.Log()
    act, nova, bus = ra.make(log, [ra.svc("compute1", up=True), ra.svc("compute2", up=True)])
    closers = []
    monitor = controller_parts.capacity(conf(), act, closers)
    assert isinstance(monitor, CapacityMonitor) and monitor.close in closers
    assert isinstance(act.ctx.dispatcher, Dispatcher) and act.ctx.dispatcher.monitor is monitor
    assert act.ctx.dispatcher.groups_read is not None
    assert monitor.reader.services() is act.nova_view.services
    assert set(monitor.reader.services()) == {"compute1", "compute2"}
    assert monitor.reader.phases() == act.ctx.phases()
    act.close()


def test_disabled_keeps_the_priority_order_and_the_throttle():
    log = ra.Log()
    act, nova, bus = ra.make(log, [ra.svc("compute1", up=True)])
    assert controller_parts.capacity(conf(enabled=False), act, []) is None
    assert act.ctx.dispatcher.monitor is None and act.ctx.dispatcher.throttle.overall == 64
    act.close()


def test_no_recovery_actuator_no_monitor():
    assert controller_parts.capacity(conf(), None, []) is None
