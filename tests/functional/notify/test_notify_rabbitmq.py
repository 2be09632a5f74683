"""Failure notifications on a real RabbitMQ (started by tools/harness/rabbitmq.py).

* ``instanceha listen`` receives every event of a failure, in order, with
  payloads valid against their schemas, and leaves no queue behind;
* the broker stops in the middle of a failure and starts again: nothing is
  lost, nothing overtakes, ``emit()`` never waited;
* past the deadline a notification is lost, logged and counted;
* the worked example hook runs once per notify-only instance.
"""

import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest
from harness import procs

from instanceha.notify import events
from instanceha.notify.notifier import Notifier
from tests.unit.notify import samples

pytestmark = pytest.mark.functional

TOP = samples.TOP


def wait_until(predicate, timeout, what):
    return procs.wait_for(predicate, timeout, what, interval=0.05)


class Collector:
    def __init__(self):
        self.received = []
        self.lock = threading.Lock()

    def __call__(self, r):
        with self.lock:
            self.received.append(r)

    def ids(self):
        with self.lock:
            return [r.message_id for r in self.received]


def unique_in_order(ids):
    seen, out = set(), []
    for i in ids:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def start_listen(bus, *args):
    conf = bus.conf_file()
    out = open(os.path.join(bus.workdir, "listen.out"), "w+")
    err = open(os.path.join(bus.workdir, "listen.err"), "w+")
    argv = [sys.executable, "-m", "instanceha.cmd.listen_cli", "--config-file", conf, *args]
    proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=TOP,
                            start_new_session=True)
    wait_until(lambda: "listening on" in open(err.name).read() or proc.poll() is not None,
               60, "instanceha listen to subscribe")
    assert proc.poll() is None, open(err.name).read()
    return proc, argv, out.name, err.name


def test_listen_receives_every_event_of_a_failure_in_order(bus, caplog):
    lifecycle = samples.lifecycle(instances=3)
    proc, argv, out, err = start_listen(bus, "--format", "json", "--count",
                                        str(len(lifecycle)), "--timeout", "60")
    try:
        notifier = bus.notifier()
        with caplog.at_level(logging.DEBUG):
            ids = [notifier.emit(e) for e in lifecycle]
            assert proc.wait(90) == 0, open(err).read()
            stats = notifier.close()
    finally:
        procs.stop(proc)
    rows = [json.loads(line) for line in open(out).read().splitlines()]
    assert [r["message_id"] for r in rows] == ids
    assert [r["event_type"] for r in rows] == [e.event_type for e in lifecycle]
    for row, event in zip(rows, lifecycle, strict=True):
        samples.validate(row["event_type"], row["payload"])
        assert row["payload"] == event.payload_dict()
        assert row["publisher_id"] == "instanceha-controller.ctl-1"
        assert row["priority"] == event.priority
    assert (stats.delivered, stats.lost) == (len(lifecycle), 0)
    password = getattr(bus.broker, "password", None)
    if password:
        for text in (open(out).read(), open(err).read(), " ".join(argv), caplog.text):
            assert password not in text
    if bus.broker.owned:  # the run's own queue is gone
        pool_queues = [q for q in bus.broker.queues() if q.startswith("instanceha-listen.")]
        assert pool_queues == []


def test_broker_restart_during_a_failure_loses_nothing(own_bus):
    from instanceha.notify import listener

    broker = own_bus.broker
    lifecycle = samples.lifecycle(instances=3)
    first, rest = lifecycle[:5], lifecycle[5:]
    got = Collector()
    lst = listener.Listener(own_bus.conf(), (own_bus.topic,), f"vnfm-{own_bus.exchange}",
                            got).start()
    notifier = own_bus.notifier()
    try:
        ids = [notifier.emit(e) for e in first]
        wait_until(lambda: len(got.ids()) >= len(first), 30, "the first events")

        broker.stop()
        t0 = time.monotonic()
        ids += [notifier.emit(e) for e in rest]
        emit_seconds = time.monotonic() - t0
        # emit() returned although nothing can be delivered
        assert notifier.stats().pending == len(rest)
        wait_until(lambda: notifier.stats().failed_attempts >= 2, 30, "failed attempts")
        assert notifier.stats().delivered == len(first)

        broker.start()
        wait_until(lambda: notifier.stats().pending == 0, 60, "the outbox to drain")
        wait_until(lambda: len(set(got.ids())) >= len(ids), 60, "every event")
    finally:
        stats = notifier.close()
        lst.stop()
    assert unique_in_order(got.ids()) == ids  # nothing lost, nothing overtook
    for r in got.received:
        samples.validate(r.event_type, r.payload)
    assert stats.lost == 0 and stats.delivered == len(lifecycle)
    print(f"emit() of {len(rest)} events with the broker down took {emit_seconds * 1000:.1f} ms;"
          f" {stats.failed_attempts} failed attempts;"
          f" {len(got.ids()) - len(ids)} duplicates")


def test_past_the_deadline_the_loss_is_logged_and_counted(own_bus, caplog):
    broker = own_bus.broker
    notifier = own_bus.notifier(notifications={"delivery_deadline": "1"})
    try:
        broker.stop()
        with caplog.at_level(logging.ERROR, logger="instanceha.notify.outbox"):
            mid = notifier.emit(events.host_failed(host="compute9", reason="r",
                                                   incident_id="inc-9"))
            wait_until(lambda: notifier.stats().lost_deadline == 1, 30, "the deadline")
    finally:
        broker.start()
        stats = notifier.close()
    assert (stats.lost_deadline, stats.delivered, stats.pending) == (1, 0, 0)
    assert any(mid in r.getMessage() and "lost" in r.getMessage() for r in caplog.records)


def test_worked_example_hook_runs_once_per_notify_only_instance(bus):
    record = os.path.join(bus.workdir, "healed.txt")
    hook = os.path.join(bus.workdir, "hook.sh")
    with open(hook, "w") as f:
        f.write('#!/bin/sh\nread -r json\n'
                f'echo "$INSTANCE_ID $PROJECT_ID $FAILED_HOST $INCIDENT_ID" >> {record}\n')
    os.chmod(hook, 0o755)
    log = os.path.join(bus.workdir, "example.log")
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(TOP, "examples", "custom_recovery_hook.py"),
             "--config-file", bus.conf_file(), "--pool", f"vnfm-{bus.exchange}",
             "--project", "tenant-b", "--", hook],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        wait_until(lambda: "waiting for" in open(log).read() or proc.poll() is not None, 60,
                   "the example to subscribe")
        assert proc.poll() is None, open(log).read()
        lifecycle = samples.lifecycle(instances=3)
        notifier = bus.notifier()
        for e in lifecycle:
            notifier.emit(e)
        # the same notification twice (at-least-once delivery): handled once
        dup = events.recovery_required(host="compute1", incident_id="i2",
                                       instance_id="dup-vm", project_id="tenant-b")
        twin = Notifier(notifier.outbox, notifier.publisher_id, new_id=lambda: "dup-message-id")
        twin.emit(dup)
        twin.emit(dup)
        expected = [e.payload["instance_id"] for e in lifecycle
                    if e.event_type == events.RECOVERY_REQUIRED] + ["dup-vm"]
        wait_until(lambda: os.path.exists(record) and len(open(record).read().splitlines())
                   >= len(expected) and "duplicate" in open(log).read(), 60, "the hook runs")
        notifier.close()
    finally:
        procs.stop(proc)
    lines = [ln.split() for ln in open(record).read().splitlines()]
    assert [ln[0] for ln in lines] == expected
    assert all(ln[1] == "tenant-b" and ln[2] == "compute1" for ln in lines)

