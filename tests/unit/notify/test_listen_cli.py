"""``instanceha listen``: arguments, rendering, --count/--timeout, queue clean-up.

The oslo.messaging listener is replaced by a fake that delivers canned
events; the real one is exercised in tests/functional/notify."""

import argparse
import json
import warnings

import pytest

warnings.filterwarnings("ignore", message=r"(?s)\s*Eventlet is deprecated")

from instanceha.cmd import common, listen_cli  # noqa: E402
from instanceha.notify import listener  # noqa: E402
from tests.unit.notify import samples  # noqa: E402


def received(event, i=0):
    return listener.Received(event_type=event.event_type, priority=event.priority,
                             publisher_id="instanceha-controller.ctl-1",
                             payload=event.payload_dict(), message_id=f"id-{i}",
                             timestamp=f"2030-01-01 00:00:0{i % 10}.000000")


class FakeListener:
    instances = []
    deliver = []
    start_error = None
    never_starts = False

    def __init__(self, conf, topics, pool, on_event, event_type_pattern):
        self.topics, self.pool, self.on_event = topics, pool, on_event
        self.pattern = event_type_pattern
        self.stopped = False
        FakeListener.instances.append(self)

    def start(self):
        if self.start_error:
            raise self.start_error
        if self.never_starts:
            import threading
            threading.Event().wait()  # like oslo retrying a dead broker forever
        for r in self.deliver:
            self.on_event(r)
        return self

    def stop(self):
        self.stopped = True


@pytest.fixture
def fake(monkeypatch):
    FakeListener.instances = []
    FakeListener.deliver = [received(e, i) for i, e in enumerate(samples.lifecycle(1)[:3])]
    FakeListener.start_error = None
    FakeListener.never_starts = False
    monkeypatch.setattr(listener, "Listener", FakeListener)
    deleted = []
    monkeypatch.setattr(listen_cli, "delete_queue", lambda conf, pool, bus: deleted.append(pool))
    monkeypatch.setattr(common, "on_stop_signals", lambda cb: None)
    FakeListener.deleted = deleted
    return FakeListener


def parse(*argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    listen_cli.register(sub)
    return p.parse_args(["listen", *argv])


@pytest.fixture
def conf():
    c = common.make_conf()
    c([], default_config_files=[])
    return c


def test_register_adds_listen_with_its_handler():
    args = parse()
    assert args.handler is listen_cli.run_listen
    assert (args.format, args.pool, args.count, args.timeout) == ("text", None, 0, 0.0)
    assert args.event_type == r"^instanceha\."
    with pytest.raises(SystemExit):
        parse("--format", "xml")


def test_text_lines_one_per_event_in_order(fake, conf, capsys):
    assert listen_cli.run_listen(parse("--count", "3"), conf) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert [ln.split()[2] for ln in lines] == [r.event_type for r in fake.deliver]
    assert "host=compute1" in lines[0] and 'reason="membership lost' in lines[0]


def test_json_lines_carry_the_whole_notification(fake, conf, capsys):
    assert listen_cli.run_listen(parse("--count", "3", "--format", "json"), conf) == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [r["message_id"] for r in rows] == ["id-0", "id-1", "id-2"]
    for r in rows:
        samples.validate(r["event_type"], r["payload"])
        assert r["publisher_id"] == "instanceha-controller.ctl-1"


def test_default_pool_is_private_and_deleted_named_pool_is_kept(fake, conf):
    listen_cli.run_listen(parse("--count", "3"), conf)
    listen_cli.run_listen(parse("--count", "3", "--pool", "vnfm-a", "--topic", "t1"), conf)
    first, second = fake.instances
    assert first.pool.startswith("instanceha-listen.") and first.topics == ("notifications",)
    assert (second.pool, second.topics) == ("vnfm-a", ("t1",))
    assert fake.deleted == [first.pool]
    assert first.stopped and second.stopped


def test_count_not_reached_within_timeout_exits_1(fake, conf, capsys):
    assert listen_cli.run_listen(parse("--count", "5", "--timeout", "0.01"), conf) == 1
    assert "3 of 5 events" in capsys.readouterr().err


def test_unreachable_bus_exits_1_without_hanging(fake, conf, capsys):
    fake.never_starts = True
    assert listen_cli.run_listen(parse("--count", "1", "--timeout", "0.01"), conf) == 1
    assert "unreachable" in capsys.readouterr().err


def test_subscribe_error_is_reported_without_credentials(fake, conf, capsys):
    fake.start_error = RuntimeError("cannot reach rabbit://ih:pw123@127.0.0.1:1/")
    assert listen_cli.run_listen(parse("--timeout", "5"), conf) == 1
    err = capsys.readouterr().err
    assert "pw123" not in err and "rabbit://***@127.0.0.1:1/" in err


def test_bad_event_type_regex_exits_2(fake, conf):
    assert listen_cli.run_listen(parse("--event-type", "("), conf) == 2


def test_standalone_main_puts_config_file_first():
    argv = ["--format", "json", "--config-file", "a.conf", "--count", "1"]
    assert listen_cli.config_file_first(argv) \
        == ["--config-file", "a.conf", "listen", "--format", "json", "--count", "1"]


@pytest.mark.parametrize("payload, expected", [
    ({"version": "1.0", "host": "h", "incident_id": "i", "dry_run": False},
     "host=h incident_id=i dry_run=false"),
    ({"version": "1.0", "hosts": ["a", "b"], "incident_id": None, "rule": "r"},
     'incident_id=null hosts=["a", "b"] rule=r'),
])
def test_format_text(payload, expected):
    r = listener.Received("instanceha.x", "INFO", "p", payload, "m", "T")
    assert listener.format_text(r) == f"T instanceha.x {expected}"
