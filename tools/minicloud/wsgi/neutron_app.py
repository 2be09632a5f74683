# gunicorn's own CLI args would be parsed by oslo.config (sys.argv[1:]) and
# rejected ("unrecognized arguments"), so hide them before importing the app.
import sys

sys.argv = sys.argv[:1]
from neutron.wsgi.api import application  # noqa: E402,F401

# neutron's get_ports() touches the backref Port.port_forwardings as a class
# attribute before any query has configured the ORM mappers; with a fresh
# process the very first GET /v2.0/ports (which is what nova does first)
# fails with "AttributeError: type object 'Port' has no attribute
# 'port_forwardings'" -> HTTP 500.  Configure mappers eagerly.
from sqlalchemy import orm  # noqa: E402

orm.configure_mappers()
