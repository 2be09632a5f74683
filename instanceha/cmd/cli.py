"""instanceha: the operator CLI.

    instanceha --version
    instanceha [--config-file F] config check
    instanceha [--config-file F] status | capacity | incidents | pause | resume | guard ...
    instanceha [--config-file F] host ...

Subcommand modules expose ``register(subparsers)``; each parser sets
``handler(args, conf) -> exit code``.
"""

from __future__ import annotations

import argparse
import sys

from instanceha import exceptions
from instanceha.cmd import (
    capacity_cli,
    common,
    coordination_cli,
    fencing_cli,
    incidents_cli,
    listen_cli,
    ops_cli,
)
from instanceha.conf import policy
from instanceha.version import __version__

PROG = "instanceha"


def _role(args, conf) -> str:
    if args.role:
        return args.role
    from instanceha.coordination import credentials as cr

    if conf.coordination.credentials_file:
        try:
            return cr.load(conf.coordination.credentials_file).role
        except exceptions.InstanceHAError:
            pass  # reported by the coordination check below
    return cr.CONTROLLER if conf.fencing.inventory_file else cr.OPERATOR


def _controller_checks(conf):
    from instanceha.conf import fencing as fencing_conf

    yield "mass-failure guard", lambda: policy.guard_policy(conf)
    yield "recovery policy", lambda: (policy.recovery_policy(conf), policy.target_policy(conf),
                                      policy.journal_retention(conf))
    if not conf.fencing.inventory_file:
        return
    yield "fencing options", lambda: fencing_conf.fence_policy(conf)

    def inventory():
        try:  # the controller's own loader: a 'fake' driver refused without its switch
            fencing_conf.inventory_loader(conf)(conf.fencing.inventory_file)
        except exceptions.ConfigError:
            raise
        except exceptions.InstanceHAError as e:
            raise policy.config_error(conf, "fencing", "inventory_file", str(e)) from None

    yield f"fencing inventory {conf.fencing.inventory_file}", inventory

    def nova():
        if not conf.nova.auth_type:
            raise policy.config_error(conf, "nova", "auth_type",
                                      "fencing is configured but Nova is not: set the [nova] "
                                      "keystone credentials (auth_type = password, ...)")

    yield "Nova credentials", nova


def _agent_checks(conf):
    def monitor():
        if conf.guest.monitor:
            try:
                import libvirt  # noqa: F401
            except ImportError as e:
                raise policy.config_error(conf, "guest", "monitor", f"the libvirt python "
                                          f"binding is missing ({e})") from None

    yield "instance monitor", monitor


def _config_check(args, conf) -> int:
    """What the daemon of ``role`` checks at start, without starting anything."""
    role = _role(args, conf)
    checks = [("detection windows", lambda: policy.detection_policy(conf)),
              ("coordination backend", lambda: policy.check_backend(conf)),
              (f"coordination security (as {role})",
               lambda: policy.coordination_security(conf, role))]
    if role == "controller":
        checks += list(_controller_checks(conf))
    elif role == "agent":
        checks += list(_agent_checks(conf))
    failed = 0
    for what, check in checks:
        try:
            check()
            print(f"ok      {what}")
        except exceptions.InstanceHAError as e:
            failed += 1
            print(f"FAILED  {what}: {e}", file=sys.stderr)
    warnings = [w for w in [policy.insecure_warning(conf)] if w]
    if role == "controller" and not failed:
        warnings += _fencing_check(conf)
    for text in warnings:
        print(f"config check: WARNING: {text}", file=sys.stderr)
    files = ", ".join(conf.config_file) or "(no config file: defaults)"
    if failed:
        print(f"config check: FAILED ({failed} problem(s); {files})", file=sys.stderr)
        return 2
    print(f"config check: OK as {role} ({files})")
    return 0


def _fencing_check(conf) -> list[str]:
    """The fencing inventory, as the controller loads it (a ``fake`` driver is
    refused unless the test-only switch is set; then it is a warning)."""
    from instanceha.conf import fencing as fencing_conf

    path = conf.fencing.inventory_file
    if not path:
        return []
    fakes = fencing_conf.fake_hosts(fencing_conf.inventory_loader(conf)(path))
    if not fakes:
        return []
    return [f"[fencing] test_only_allow_fake_driver is set: {len(fakes)} host(s) of {path} "
            f"({', '.join(fakes[:5])}) use the 'fake' fencing driver and are NEVER powered "
            "off (their instances would run twice): TEST ONLY, never in production"]


def _register_config(sub) -> None:
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_cmd", required=True)
    c = csub.add_parser("check", help="check the configuration as the daemon would at start, "
                        "and exit")
    c.add_argument("--role", choices=("controller", "agent", "operator"),
                   help="whose start to check (default: the role of [coordination] "
                        "credentials_file, else controller when a fencing inventory is set, "
                        "else operator)")
    c.set_defaults(handler=_config_check)


REGISTRARS = [_register_config, ops_cli.register, capacity_cli.register, incidents_cli.register,
              fencing_cli.register, listen_cli.register, coordination_cli.register]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="instanceha operator CLI")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument("--config-file", action="append", default=[], metavar="PATH",
                   help="configuration file (repeatable); default /etc/instanceha/instanceha.conf")
    p.add_argument("--config-dir", action="append", default=[], metavar="DIR")
    sub = p.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(sub)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    conf = common.make_conf()
    oslo_argv = [a for f in args.config_file for a in ("--config-file", f)]
    oslo_argv += [a for d in args.config_dir for a in ("--config-dir", d)]
    common.load(conf, oslo_argv, PROG, with_logging=False)
    return args.handler(args, conf)


if __name__ == "__main__":
    sys.exit(main())
