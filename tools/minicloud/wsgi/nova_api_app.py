# gunicorn's own CLI args would be parsed by oslo.config (sys.argv[1:]) and
# rejected ("unrecognized arguments"), so hide them before importing the app.
import sys

sys.argv = sys.argv[:1]
from nova.wsgi.osapi_compute import application  # noqa: E402,F401
