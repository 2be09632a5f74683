"""Operator subcommands for the coordination store's security.

    instanceha coordination credentials new-key [--output F]
    instanceha coordination credentials agent HOST [--output F]
    instanceha coordination credentials operator [--output F]
    instanceha coordination check [--format table|json]
    instanceha host provision HOST [HOST...]

``credentials`` writes a credentials file (mode 0600; standard output when no
``--output``): a new controllers' key, or, from the controllers' key named by
``[coordination] credentials_file``, the file of one agent or of the
operators. ``check`` walks the whole tree with the controllers' credentials
and lists every node whose ACL grants more than the model allows (or that the
layout does not know); exit 1 when it finds any. ``host provision`` creates
hosts' slots (the leading controller does it for its inventory's hosts).
"""

from __future__ import annotations

import json
import os
import sys

from instanceha import exceptions
from instanceha.cmd import common, ops_cli
from instanceha.coordination import credentials as cr


def _controller_credentials(conf) -> cr.Credentials:
    path = conf.coordination.credentials_file
    if not path:
        raise exceptions.ConfigError(group="coordination", option="credentials_file",
                                     file="(not set)",
                                     reason="name the controllers' credentials file (their key)")
    creds = cr.load(path)
    if creds.role != cr.CONTROLLER:
        raise exceptions.CredentialsError(
            file=path, reason=f"holds role {creds.role}: only the controllers' key derives "
                              "the other identities")
    return creds


def _emit(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    if os.path.exists(output):
        raise exceptions.CredentialsError(file=output, reason="exists already: not overwritten")
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"wrote {output} (mode 0600)", file=sys.stderr)


def _credentials(args, conf) -> int:
    try:
        if args.what == "new-key":
            from instanceha.secret import Secret

            creds = cr.for_controller((Secret(cr.new_key()),))
        else:
            key = _controller_credentials(conf).keys[0]
            if args.what == "agent":
                if not args.host:
                    print("error: name the agent's host", file=sys.stderr)
                    return 2
                creds = cr.for_agent(key, cr.check_host(args.host))
            else:
                creds = cr.for_operator(key)
        _emit(cr.render(creds), args.output)
    except (exceptions.InstanceHAError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _check(args, conf) -> int:
    from instanceha.coordination.zk_audit import audit_tree

    return ops_cli.run_connected(conf, lambda coord: _report(args, *audit_tree(coord)),
                                 role=cr.CONTROLLER)


def _report(args, findings, walked: int) -> int:
    if args.format == "json":
        print(json.dumps({"nodes": walked, "findings": [f._asdict() for f in findings]},
                         indent=2, sort_keys=True))
    else:
        if findings:
            rows = [("NODE", "KIND", "FINDING")] + [(f.path, f.kind or "?", f.finding)
                                                    for f in findings]
            print("\n".join(common.table_lines(rows)))
        print(f"{walked} node(s) checked, {len(findings)} wider than the model")
    return 1 if findings else 0


def _provision(args, conf) -> int:
    try:  # every name checked before any is made
        hosts = [cr.check_host(host) for host in args.hosts]
    except ValueError as e:
        print(f"error: {e}; nothing provisioned", file=sys.stderr)
        return 2

    def body(coord) -> int:
        for host in hosts:
            made = coord.provision_host(host)
            print(f"{host}: {'provisioned' if made else 'already provisioned'}")
        return 0

    return ops_cli.run_connected(conf, body, role=cr.CONTROLLER)


def register(sub) -> None:
    p = sub.add_parser("coordination", help="the coordination store's security")
    csub = p.add_subparsers(dest="coordination_cmd", required=True)
    c = csub.add_parser("credentials", help="write a credentials file (mode 0600)")
    c.add_argument("what", choices=("new-key", "agent", "operator"))
    c.add_argument("host", nargs="?", help="the agent's host (with 'agent')")
    c.add_argument("--output", help="the file to write (refused if it exists); default stdout")
    c.set_defaults(handler=_credentials)
    k = csub.add_parser("check", help="list every node whose ACL is wider than the model "
                        "(controllers' credentials)")
    k.add_argument("--format", choices=("table", "json"), default="table")
    k.set_defaults(handler=_check)


def register_host(hsub) -> None:
    p = hsub.add_parser("provision", help="create hosts' slots so that their agents may join "
                        "(controllers' credentials)")
    p.add_argument("hosts", nargs="+")
    p.set_defaults(handler=_provision)
