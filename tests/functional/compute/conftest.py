"""The compute tests run on the real mini-cloud: its fixtures (``minicloud``,
``nova``, ``admin``, ``servers``, ``healthy_cloud``) live in
tests/functional/cloud.py, shared with the chaos suite through
tests/functional/conftest.py, so one session brings up one cloud.

To iterate quickly, start one by hand and point the tests at it; it is then
left running::

    tools/minicloud/up.sh
    INSTANCEHA_MINICLOUD_RUN_DIR=.run/minicloud/run pytest tests/functional/compute
"""

import pytest

from tests.functional.cloud import Servers, ensure_healthy, wait_for  # noqa: F401

pytestmark = pytest.mark.functional
