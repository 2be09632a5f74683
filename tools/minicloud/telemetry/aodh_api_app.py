# Aodh's API for gunicorn: the config file comes from AODH_CONFIG_FILE, and
# gunicorn's own arguments are hidden from oslo.config (it parses sys.argv).
import os
import sys

sys.argv = sys.argv[:1]
from aodh.api import app  # noqa: E402

application = app.build_wsgi_app(argv=["--config-file", os.environ["AODH_CONFIG_FILE"]])
