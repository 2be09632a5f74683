"""The controller's feed of Nova's notifications: only on a configured bus."""

import logging

import pytest

from instanceha.cmd import common
from instanceha.cmd import controller as cmd
from instanceha.controller.nova_events import NovaEventFeed

BUS = "rabbit://user:secret@127.0.0.1:5672/"


def conf(nova_url=None, default_url=None, enabled=True):
    c = common.make_conf()
    c([], default_config_files=[])
    c.set_override("enabled", enabled, "nova_notifications")
    if nova_url:
        c.set_override("transport_url", nova_url, "nova_notifications")
    if default_url:
        from oslo_messaging import opts as om_opts
        for group, opts in om_opts.list_opts():
            c.register_opts(opts, group=group)
        c.set_override("transport_url", default_url)
    return c


def test_no_bus_configured_no_listener_and_it_says_so(caplog):
    """Neither [nova_notifications] nor [DEFAULT] names a bus: oslo.messaging
    would try rabbit://guest@localhost:5672 for ever (and the controller did
    not stop on SIGTERM while it tried)."""
    with caplog.at_level(logging.WARNING):
        assert cmd._nova_events(conf(), watch=None) is None
    assert "no bus configured" in caplog.text and "secret" not in caplog.text


@pytest.mark.parametrize("nova_url,default_url", [(BUS, None), (None, BUS), (BUS, "rabbit://")])
def test_a_bus_of_its_own_or_the_default_one_is_listened_to(nova_url, default_url):
    assert isinstance(cmd._nova_events(conf(nova_url, default_url), watch=None), NovaEventFeed)


@pytest.mark.parametrize("url,named", [(None, False), ("", False), ("rabbit://", False),
                                       ("rabbit://guest:guest@/", False), (BUS, True),
                                       ("rabbit://a:b@h1:5672,a:b@h2:5672/vhost", True)])
def test_names_a_broker(url, named):
    assert cmd._names_a_broker(url) is named


def test_disabled_no_listener():
    assert cmd._nova_events(conf(enabled=False), watch=None) is None
