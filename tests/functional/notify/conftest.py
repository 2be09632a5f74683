"""A real RabbitMQ for the notification tests (the project's harness), and
helpers to configure emitters and consumers on it."""

import itertools
import os
import secrets
import warnings

import pytest

warnings.filterwarnings("ignore", message=r"(?s)\s*Eventlet is deprecated")

from harness import rabbitmq as rmq  # noqa: E402
from oslo_config import cfg  # noqa: E402

from instanceha.conf import default as conf_default  # noqa: E402
from instanceha.conf import notifications as conf_notifications  # noqa: E402

_N = itertools.count(1)
RUN = secrets.token_hex(3)


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory):
    broker = rmq.rabbitmq(str(tmp_path_factory.mktemp("rabbitmq")))
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def own_rabbitmq(rabbitmq, tmp_path_factory):
    """A broker the test may stop and start: the session one if we own it."""
    if rabbitmq.owned:
        yield rabbitmq
        return
    broker = rmq.RabbitMQServer(str(tmp_path_factory.mktemp("rabbitmq-own"))).start()
    yield broker
    broker.close()


class Bus:
    """One test's corner of a broker: its own control exchange and topic, so
    tests never see each other's events, even on a shared broker."""

    def __init__(self, broker, workdir):
        n = next(_N)
        self.broker = broker
        self.workdir = workdir
        self.exchange = f"ih-test-{RUN}-{n}"
        self.topic = f"ih-notifications-{RUN}-{n}"

    def conf_file(self, name="instanceha.conf", **groups):
        sections = {
            "DEFAULT": {"host": "ctl-1", "transport_url": self.broker.url,
                        "control_exchange": self.exchange},
            "oslo_messaging_notifications": {"driver": "messagingv2", "topics": self.topic},
            "oslo_messaging_rabbit": {
                # pools survive a broker restart; reconnect fast in tests
                "amqp_durable_queues": "true", "rabbit_retry_interval": "1",
                "rabbit_retry_backoff": "1", "rabbit_interval_max": "1",
                "kombu_reconnect_delay": "0.1"},
            "notifications": {"retry_interval": "0.1", "retry_max_interval": "0.5"},
        }
        for group, values in groups.items():
            sections.setdefault(group, {}).update(values)
        path = os.path.join(self.workdir, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            for group, values in sections.items():
                f.write(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
        return path

    def conf(self, **groups):
        c = cfg.ConfigOpts()
        conf_default.register_opts(c)
        conf_notifications.register_opts(c)
        c(["--config-file", self.conf_file(**groups)], default_config_files=[])
        conf_notifications.register_oslo_messaging_opts(c)
        return c

    def notifier(self, **groups):
        from instanceha.notify import notifier

        c = self.conf(**groups)
        return notifier.make_notifier(c, conf_notifications.bus_settings(c),
                                      conf_notifications.delivery_policy(c)).start()


@pytest.fixture
def bus(rabbitmq, tmp_path):
    return Bus(rabbitmq, str(tmp_path))


@pytest.fixture
def own_bus(own_rabbitmq, tmp_path):
    yield Bus(own_rabbitmq, str(tmp_path))
    if not own_rabbitmq.running:  # a test that failed with the broker down
        own_rabbitmq.start()
