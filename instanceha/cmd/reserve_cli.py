"""``instanceha host reserve|unreserve HOST``: keep a compute host as a spare.

A reserved spare is a compute host whose nova-compute runs but is disabled
with instanceha's marker ``instanceha:v1:reserved`` (so Nova schedules
nothing there); with ``[recovery] method = reserved_hosts`` the leader
enables one when a host fails and evacuates to it. These commands write or
remove that marker through Nova (the ``[nova]`` credentials of the config
file); ``openstack compute service set --disable --disable-reason
instanceha:v1:reserved HOST nova-compute`` does the same by hand.

Exit codes: 0 done, 2 refused or failed (the message says why).
"""

from __future__ import annotations

import datetime
import getpass
import sys

from instanceha import exceptions
from instanceha.engine import marker as mk


def nova_client(conf):
    """The Nova client of the ``[nova]`` section; a ConfigError naming the
    option when it holds no credentials."""
    from instanceha.conf import nova as nova_conf
    from instanceha.conf import policy

    if not conf.nova.auth_type:
        raise policy.config_error(conf, "nova", "auth_type", "the [nova] keystone "
                                  "credentials are needed (auth_type = password, ...)")
    return nova_conf.nova_client(conf)


def _run(conf, body) -> int:
    try:
        return body(nova_client(conf))
    except exceptions.InstanceHAError as e:
        print(f"error: {e} ({e.action.value})", file=sys.stderr)
        return 2


def _reserve(args, conf) -> int:
    def body(nova) -> int:
        svc = nova.service(args.host)
        m = svc.marker
        if m is not None and m.state is not mk.MarkerState.RESERVED:
            print(f"error: {args.host} is in instanceha's recovery ({m.raw}); not reserved",
                  file=sys.stderr)
            return 2
        if svc.disabled and m is None and not args.force:
            print(f"error: {args.host} is disabled by an operator "
                  f"({svc.disabled_reason or 'no reason'}); --force to reserve it anyway",
                  file=sys.stderr)
            return 2
        if svc.forced_down:
            print(f"error: {args.host} is forced down: a spare must be able to run "
                  "instances", file=sys.stderr)
            return 2
        note = args.note or f"spare reserved by {getpass.getuser()}"
        now = datetime.datetime.now(datetime.timezone.utc)
        reason = mk.encode(mk.MarkerState.RESERVED, at=now, note=note)
        nova.disable(args.host, reason)
        servers = nova.servers_on_host(args.host)
        print(f"{args.host} reserved ({reason}): Nova places nothing there; the leader "
              "enables it when a host fails and [recovery] method = reserved_hosts")
        if not svc.up:
            print(f"warning: Nova reports {args.host}'s nova-compute down: it is not "
                  "chosen until it is up", file=sys.stderr)
        if servers:
            print(f"warning: {len(servers)} server(s) still run on {args.host}; they keep "
                  "running, but they take room a failed host's instances may need",
                  file=sys.stderr)
        return 0

    return _run(conf, body)


def _unreserve(args, conf) -> int:
    def body(nova) -> int:
        svc = nova.service(args.host)
        m = svc.marker
        if not svc.disabled or m is None or m.state is not mk.MarkerState.RESERVED:
            print(f"error: {args.host} is not reserved (status {svc.status}, reason "
                  f"{svc.disabled_reason or '-'})", file=sys.stderr)
            return 2
        nova.enable(args.host, unset_forced_down=False)
        print(f"{args.host} no longer reserved: enabled, Nova may place instances there")
        return 0

    return _run(conf, body)


def register(host_subparsers) -> None:
    """Adds ``reserve`` and ``unreserve`` to the ``instanceha host`` subcommands."""
    r = host_subparsers.add_parser(
        "reserve", help="keep a compute host as a spare: disable its nova-compute with "
        "instanceha's reserved marker (enabled on demand when a host fails)")
    r.add_argument("host")
    r.add_argument("--note", default="", help="free text kept in the marker")
    r.add_argument("--force", action="store_true",
                   help="also reserve a host an operator disabled for another reason")
    r.set_defaults(handler=_reserve)
    u = host_subparsers.add_parser("unreserve",
                                   help="put a reserved spare into service (enable it)")
    u.add_argument("host")
    u.set_defaults(handler=_unreserve)
