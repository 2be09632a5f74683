"""Coordination backends, loaded by stevedore from the URL scheme.

``zookeeper://`` is the production backend. A backend is an entry point in
the ``instanceha.coordination.backends`` namespace whose name is the scheme.
"""

from __future__ import annotations

import typing
import urllib.parse

from stevedore import driver
from stevedore import exception as sd_exc

from instanceha import exceptions
from instanceha.coordination.base import (  # noqa: F401  (the public API)
    ClusterSnapshot,
    ConnectionState,
    Coordinator,
    HostRecord,
    Leadership,
    MemberRecord,
    SessionCredentials,
)

NAMESPACE = "instanceha.coordination.backends"


def backend_names() -> list[str]:
    from stevedore import ExtensionManager

    return sorted(ExtensionManager(NAMESPACE).names())


def backend_class(url: str) -> type[Coordinator]:
    scheme = urllib.parse.urlsplit(url).scheme
    try:
        return typing.cast(type[Coordinator],
                           driver.DriverManager(NAMESPACE, scheme, invoke_on_load=False).driver)
    except sd_exc.NoMatches:
        raise exceptions.UnknownBackend(
            scheme=scheme, url_option="[coordination] backend_url", known=", ".join(backend_names())
        )


def get_coordinator(url: str, **kwargs) -> Coordinator:
    """Build (not start) the coordinator the URL's scheme names."""
    return backend_class(url)(url, **kwargs)
