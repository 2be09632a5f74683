import pytest

from instanceha.fencing import FencePolicy, Fencer, inventory

from .labs import LABS

# generous for the normal cases (they end in well under a second); the cases
# meant to fail get a short per-host deadline in their inventory entry
POLICY = FencePolicy(deadline=20.0, poll_interval=0.2, retry_backoff=0.2, retry_backoff_max=1.0)
SHORT = 1.5  # seconds: the deadline of the cases that must fail


@pytest.fixture(scope="module", params=sorted(LABS))
def lab(request, tmp_path_factory):
    lab = LABS[request.param](str(tmp_path_factory.mktemp(request.param)))
    yield lab
    lab.close()


@pytest.fixture
def fencer_for():
    made = []

    def make(entries, policy=POLICY):
        inv = inventory.from_data({"hosts": entries}, "<functional test>")
        f = Fencer(inv, policy)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()
