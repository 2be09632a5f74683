"""The feed of Nova's notifications: only while leading, started and stopped
in the background, a failed start tried again later, each notification waking
the evacuation of its instance."""

import threading

from instanceha.compute.waiting import CompletionWatch, Waker
from instanceha.controller.executor import BaseActuator, Executor
from instanceha.controller.nova_events import NovaEventFeed, instance_uuid
from instanceha.engine.model import HostView, Phase
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeLeadership

REBUILT = {"nova_object.name": "InstanceActionPayload",
           "nova_object.data": {"uuid": "u1", "state": "active", "task_state": None}}


class FakeListener:
    def __init__(self, on_event, fail=None):
        self.on_event, self.fail = on_event, fail
        self.started = self.stopped = 0

    def start(self):
        if self.fail:
            raise self.fail
        self.started += 1

    def stop(self):
        self.stopped += 1


def settle(feed):
    assert feed.settle(timeout=10), "a start or stop of the listener never ended"


def make(fail=None):
    made = []

    def factory(on_event):
        made.append(FakeListener(on_event, fail))
        return made[-1]

    clock = FakeClock()
    watch = CompletionWatch()
    return NovaEventFeed(factory, watch, clock=clock, retry=10.0), made, clock, watch


def test_listens_only_while_leading():
    feed, made, _, _ = make()
    feed.ensure()
    settle(feed)
    assert feed.listening and made[0].started == 1
    feed.ensure()  # every tick: nothing more
    settle(feed)
    assert len(made) == 1
    feed.stop()
    settle(feed)
    assert not feed.listening and made[0].stopped == 1
    feed.close()


def test_a_failed_start_is_tried_again_after_retry_seconds():
    feed, made, clock, _ = make(fail=ConnectionError("broker down"))
    feed.ensure()
    settle(feed)
    assert not feed.listening and "broker down" in feed.error
    feed.ensure()
    settle(feed)
    assert len(made) == 1  # within the retry window: not again
    clock.advance(10.0)
    feed.ensure()
    settle(feed)
    assert len(made) == 2
    feed.close()


def test_a_notification_wakes_the_evacuation_of_its_instance():
    feed, _, _, watch = make()
    waker = Waker()
    watch.subscribe(["u1"], waker)
    seen = waker.mark()
    feed.on_event("instance.rebuild.end", REBUILT)
    feed.on_event("instance.rebuild.end", {"nova_object.data": {"uuid": "other"}})
    feed.on_event("instance.update", "not a payload")
    assert waker.wait(0.0, since=seen) is True
    assert (feed.received, feed.woke) == (3, 1)
    seen = waker.mark()
    feed.on_event("instance.update", REBUILT)  # progress: wakes nothing
    feed.on_event("instance.rebuild.start", REBUILT)
    assert waker.wait(0.0, since=seen) is False and feed.woke == 1
    assert instance_uuid(REBUILT) == "u1" and instance_uuid({}) is None
    feed.close()


class Recorder(BaseActuator):
    def __init__(self):
        self.acted = self.idled = 0

    def act(self, views, allowed, verify):
        self.acted += 1

    def idle(self):
        self.idled += 1


def test_the_executor_tells_the_actuator_when_it_is_not_given_the_tick():
    leadership = FakeLeadership(leader=True)
    actuator = Recorder()
    ex = Executor(leadership, actuator, clock=FakeClock(wall=0.0))
    views = {"c1": HostView("c1", Phase.HEALTHY, 0.0, "ok", "alive")}
    ex.act(views, now=1.0)
    assert (actuator.acted, actuator.idled) == (1, 0)
    ex.act(views, now=2.0, control={"paused": "ops"})
    assert (actuator.acted, actuator.idled) == (1, 1)
    leadership.leader_flag = False
    ex.act(views, now=3.0)
    assert (actuator.acted, actuator.idled) == (1, 2)


def test_the_nova_listener_has_its_own_queue_durability_and_the_rest_of_the_bus():
    from instanceha.cmd import common
    from instanceha.conf import notifications, nova_notifications

    conf = common.make_conf()
    conf([], project="instanceha", default_config_files=[], default_config_dirs=[])
    notifications.register_oslo_messaging_opts(conf)
    from oslo_messaging import opts as om_opts
    for group, opts in om_opts.list_opts():
        conf.register_opts(opts, group=group)
    conf.set_override("amqp_durable_queues", True, group="oslo_messaging_rabbit")
    conf.set_override("heartbeat_timeout_threshold", 17, group="oslo_messaging_rabbit")
    conf.set_override("transport_url", "rabbit://u:secret@127.0.0.1:5672/")
    bus = nova_notifications.listener_conf(conf)
    assert bus.oslo_messaging_rabbit.amqp_durable_queues is False  # as Nova's default
    assert bus.oslo_messaging_rabbit.heartbeat_timeout_threshold == 17
    assert bus.transport_url == "rabbit://u:secret@127.0.0.1:5672/"
    assert conf.oslo_messaging_rabbit.amqp_durable_queues is True  # ours untouched


def test_a_start_that_never_reaches_its_broker_does_not_keep_the_controller_alive():
    """oslo.messaging's start() keeps trying a broker that is down: close()
    waits at most close_timeout, and the thread left behind is a daemon (the
    interpreter joins a ThreadPoolExecutor's threads at exit: the controller
    never exited on SIGTERM)."""
    release = threading.Event()

    class Connecting(FakeListener):
        def start(self):
            release.wait()
            super().start()

    made = []
    feed = NovaEventFeed(lambda on_event: made.append(Connecting(on_event)) or made[-1],
                         CompletionWatch(), clock=FakeClock(), close_timeout=0.0)
    feed.ensure()
    assert feed.settle(timeout=0.0) is False  # still connecting
    worker = feed._worker._thread
    assert worker is not None and worker.daemon
    feed.close()  # returns at once
    assert worker.is_alive()
    release.set()  # the broker answers after all: started, then stopped at once
    worker.join(10)
    assert not worker.is_alive()
    assert made[0].started == 1 and made[0].stopped == 1 and not feed.listening

