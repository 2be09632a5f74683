# gunicorn's own CLI args would be parsed by oslo.config (sys.argv[1:]) and
# rejected ("unrecognized arguments"), so hide them before importing the app.
# Unlike nova's and placement's, cinder's app does not read
# OS_CINDER_CONFIG_DIR: hand it the config file as its only argument.
import os
import sys

sys.argv = sys.argv[:1] + [
    "--config-file", os.path.join(os.environ["OS_CINDER_CONFIG_DIR"], "cinder.conf")]
from cinder.wsgi.api import application  # noqa: E402,F401
