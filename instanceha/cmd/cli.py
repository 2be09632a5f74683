"""instanceha: the operator CLI.

    instanceha --version
    instanceha [--config-file F] config check
    instanceha [--config-file F] status | incidents | pause | resume | guard ... | host ...

Subcommand modules expose ``register(subparsers)``; each parser sets
``handler(args, conf) -> exit code``.
"""

from __future__ import annotations

import argparse
import sys

from instanceha import exceptions
from instanceha.cmd import common, fencing_cli, incidents_cli, listen_cli, ops_cli
from instanceha.conf import policy
from instanceha.version import __version__

PROG = "instanceha"


def _config_check(args, conf) -> int:
    try:
        policy.detection_policy(conf)
        policy.check_backend(conf)
        warnings = _fencing_check(conf)
    except exceptions.InstanceHAError as e:
        print(f"config check: FAILED: {e}", file=sys.stderr)
        return 2
    for text in warnings:
        print(f"config check: WARNING: {text}", file=sys.stderr)
    files = ", ".join(conf.config_file) or "(no config file: defaults)"
    print(f"config check: OK ({files})")
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
    c = csub.add_parser("check", help="validate the configuration and exit")
    c.set_defaults(handler=_config_check)


REGISTRARS = [_register_config, ops_cli.register, incidents_cli.register, fencing_cli.register,
              listen_cli.register]


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
