"""The notifier on oslo.messaging: configuration, envelope, drivers, secrets.

Uses oslo.messaging's own ``test`` notification driver (registered in the
``oslo.messaging.notify.drivers`` namespace like the real ones) and the
``fake://`` transport: nothing leaves the process."""

import datetime
import logging
import warnings

import pytest
from oslo_config import cfg

warnings.filterwarnings("ignore", message=r"(?s)\s*Eventlet is deprecated")

import oslo_messaging  # noqa: E402
from oslo_messaging.notify import _impl_test  # noqa: E402

from instanceha.conf import default as conf_default  # noqa: E402
from instanceha.conf import notifications as conf_notifications  # noqa: E402
from instanceha.exceptions import Action, ConfigError  # noqa: E402
from instanceha.notify import bus, events, notifier  # noqa: E402
from instanceha.notify.exceptions import NotificationSetupError  # noqa: E402
from tests.unit.clock import FakeClock  # noqa: E402
from tests.unit.notify import samples  # noqa: E402

SECRET = "Sup3rS3cret-pw"


def make_conf(tmp_path, text=""):
    path = tmp_path / "instanceha.conf"
    path.write_text("[DEFAULT]\nhost = ctl-1\n"
                    f"transport_url = rabbit://ih:{SECRET}@127.0.0.1:1/\n" + text)
    conf = cfg.ConfigOpts()
    conf_default.register_opts(conf)
    conf_notifications.register_opts(conf)
    conf(["--config-file", str(path)], default_config_files=[])
    return conf


@pytest.fixture
def test_driver():
    _impl_test.reset()
    yield _impl_test
    _impl_test.reset()


@pytest.fixture
def fake_transport(tmp_path):
    conf = make_conf(tmp_path)
    t = oslo_messaging.get_notification_transport(conf, url="fake://")
    yield t
    t.cleanup()


def build(conf, transport, clock=None):
    settings = conf_notifications.bus_settings(conf)
    policy = conf_notifications.delivery_policy(conf)
    kw = {"transport": transport}
    if clock:
        kw["clock"] = clock
    return notifier.make_notifier(conf, settings, policy, **kw)


def sent(test_driver):
    return [m for _, m, _, _ in test_driver.NOTIFICATIONS]


def test_settings_come_from_oslo_messagings_own_options(tmp_path):
    conf = make_conf(tmp_path, "[oslo_messaging_notifications]\ndriver = messagingv2\n"
                               "topics = notifications,vnfm\n")
    s = conf_notifications.bus_settings(conf)
    assert s == bus.BusSettings(drivers=("messagingv2",), topics=("notifications", "vnfm"),
                                publisher_id="instanceha-controller.ctl-1")
    assert s.enabled


def test_no_driver_means_disabled_and_emit_is_a_no_op(tmp_path, fake_transport):
    conf = make_conf(tmp_path)
    n = build(conf, fake_transport)
    assert not n.enabled
    assert n.emit(events.host_failed(host="h", reason="r", incident_id="i")) is None
    assert n.stats().emitted == 0
    assert not bus.BusSettings(drivers=("noop",)).enabled


def test_every_event_reaches_the_driver_in_order_with_a_valid_payload(
        tmp_path, test_driver, fake_transport):
    conf = make_conf(tmp_path, "[oslo_messaging_notifications]\ndriver = test\n")
    n = build(conf, fake_transport)
    lifecycle = samples.lifecycle()
    ids = [n.emit(e) for e in lifecycle]
    assert n.outbox.pump() is None
    got = sent(test_driver)
    assert [m["event_type"] for m in got] == [e.event_type for e in lifecycle]
    assert [m["message_id"] for m in got] == ids and len(set(ids)) == len(ids)
    for m in got:
        assert set(m) == samples.ENVELOPE_KEYS
        assert m["publisher_id"] == "instanceha-controller.ctl-1"
        assert m["priority"] == events.PRIORITIES[m["event_type"]]
        samples.validate(m["event_type"], m["payload"])
    assert [r for _, _, _, r in test_driver.NOTIFICATIONS] == [0] * len(got)  # retry=0
    assert n.close(timeout=0).delivered == len(lifecycle)


def test_the_envelope_is_the_one_oslo_messagings_notifier_builds(
        tmp_path, test_driver, fake_transport):
    conf = make_conf(tmp_path, "[oslo_messaging_notifications]\ndriver = test\n")
    reference = oslo_messaging.Notifier(fake_transport, publisher_id="x", driver="test")
    reference.info({}, events.HOST_FAILED, {"a": 1})
    theirs = sent(test_driver)[0]
    _impl_test.reset()
    n = build(conf, fake_transport)
    n.emit(events.host_failed(host="h", reason="r", incident_id="i"))
    n.outbox.pump()
    ours = sent(test_driver)[0]
    assert set(ours) == set(theirs)
    assert ours["priority"] == theirs["priority"] == "INFO"
    # same timestamp format: str() of a naive UTC datetime
    for m in (ours, theirs):
        datetime.datetime.strptime(m["timestamp"], "%Y-%m-%d %H:%M:%S.%f")


def test_the_timestamp_is_when_the_event_was_emitted(tmp_path, test_driver, fake_transport):
    conf = make_conf(tmp_path, "[oslo_messaging_notifications]\ndriver = test\n")
    settings = conf_notifications.bus_settings(conf)
    n = build(conf, fake_transport)
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=datetime.timezone.utc)
    n2 = notifier.Notifier(n.outbox, settings.publisher_id,
                           clock=FakeClock(wall=when.timestamp()),
                           new_id=lambda: "fixed-id")
    n2.emit(events.host_failed(host="h", reason="r", incident_id="i"))
    n.outbox.pump()
    assert sent(test_driver)[0]["timestamp"] == "2030-01-02 03:04:05.600000"
    assert sent(test_driver)[0]["message_id"] == "fixed-id"


class BrokenTransport:
    def __init__(self):
        self.calls = []
        self.up = False

    def _send_notification(self, target, ctxt, message, version, retry):
        self.calls.append((target.topic, version, retry, message["message_id"]))
        if not self.up:
            raise oslo_messaging.MessageDeliveryFailure("Unable to connect to AMQP server")

    def cleanup(self):
        pass


def test_oslo_messagingv2_swallows_errors_ours_raises_them(tmp_path, caplog):
    conf = make_conf(tmp_path)
    t = BrokenTransport()
    msg = {"message_id": "m", "payload": {"p": 1}}
    from oslo_messaging.notify.messaging import MessagingV2Driver
    MessagingV2Driver(conf, topics=["notifications"], transport=t).notify({}, msg, "INFO", 0)
    with pytest.raises(oslo_messaging.MessageDeliveryFailure):
        bus.StrictMessagingV2Driver(conf, topics=["notifications"], transport=t).notify(
            {}, msg, "INFO", 0)
    assert t.calls[-1] == ("notifications.info", 2.0, 0, "m")


def test_broker_down_then_up_through_the_real_driver_stack(tmp_path):
    conf = make_conf(tmp_path, "[oslo_messaging_notifications]\ndriver = messagingv2\n"
                               "topics = notifications,vnfm\n")
    t = BrokenTransport()
    clock = FakeClock(now=0.0)
    n = build(conf, t, clock=clock)
    mid = n.emit(events.host_failed(host="h", reason="r", incident_id="i"))
    clock.advance(n.outbox.pump())
    clock.advance(n.outbox.pump())
    t.up = True
    assert n.outbox.pump() is None
    assert [c for c in t.calls if c[0] == "notifications.info"] == [
        ("notifications.info", 2.0, 0, mid)] * 3
    assert t.calls[-1] == ("vnfm.info", 2.0, 0, mid)
    assert n.stats().delivered == 1 and n.stats().failed_attempts == 2


def test_unknown_driver_refuses_with_a_clear_message(tmp_path, fake_transport):
    conf = make_conf(tmp_path, "[oslo_messaging_notifications]\ndriver = carrier-pigeon\n")
    with pytest.raises(NotificationSetupError) as e:
        build(conf, fake_transport)
    assert "carrier-pigeon" in str(e.value) and e.value.action is Action.ESCALATE


def test_a_bad_transport_url_never_shows_the_password(tmp_path):
    conf = make_conf(tmp_path, "[oslo_messaging_notifications]\ndriver = messagingv2\n"
                               f"transport_url = nosuchscheme://ih:{SECRET}@127.0.0.1:1/\n")
    with pytest.raises(NotificationSetupError) as e:
        build(conf, None)
    assert SECRET not in str(e.value) and SECRET not in repr(e.value.kwargs)
    assert e.value.__cause__ is None and e.value.__suppress_context__


@pytest.mark.parametrize("text, expected", [
    ("rabbit://u:pw@h:5672/", "rabbit://***@h:5672/"),
    ("x rabbit://u:p@w@h1:5672,u:pw@h2:5672/v y", "x rabbit://***@h2:5672/v y"),
    ("no url here", "no url here"),
    ("Connection refused 127.0.0.1:5672", "Connection refused 127.0.0.1:5672"),
])
def test_redact(text, expected):
    assert bus.redact(text) == expected


def test_transport_url_options_are_secret(tmp_path, caplog):
    """Both URLs are secret options: oslo.config masks them where it prints the
    configuration (``log_opt_values``, what a daemon logs at start)."""
    conf = make_conf(tmp_path, "[oslo_messaging_notifications]\n"
                               f"transport_url = rabbit://n:{SECRET}@127.0.0.1:2/\n")
    conf_notifications.register_oslo_messaging_opts(conf)
    assert SECRET in conf.transport_url
    assert SECRET in conf.oslo_messaging_notifications.transport_url
    log = logging.getLogger("test_bus.options")
    with caplog.at_level(logging.INFO, logger=log.name):
        conf.log_opt_values(log, logging.INFO)
    shown = {m.split(" = ")[0].strip(): m.split(" = ")[1] for m in caplog.messages
             if " = " in m}
    assert shown["transport_url"] == "****"
    assert shown["oslo_messaging_notifications.transport_url"] == "****"
    assert SECRET not in caplog.text


def test_delivery_options_become_the_policy(tmp_path):
    conf = make_conf(tmp_path, "[notifications]\ndelivery_deadline = 30\nretry_interval = 0.1\n"
                               "retry_max_interval = 2\nmax_pending = 50\n")
    p = conf_notifications.delivery_policy(conf)
    assert (p.deadline, p.retry_interval, p.retry_max_interval, p.max_pending) == (
        30.0, 0.1, 2.0, 50)


def test_contradicting_intervals_name_both_options_and_the_file(tmp_path):
    conf = make_conf(tmp_path, "[notifications]\nretry_interval = 3\nretry_max_interval = 1\n")
    with pytest.raises(ConfigError) as e:
        conf_notifications.delivery_policy(conf)
    msg = str(e.value)
    assert "retry_max_interval" in msg and "retry_interval" in msg and str(tmp_path) in msg


def test_out_of_bounds_deadline_is_refused_by_oslo_config(tmp_path):
    conf = make_conf(tmp_path, "[notifications]\ndelivery_deadline = 0\n")
    with pytest.raises(ValueError):
        conf_notifications.delivery_policy(conf)
