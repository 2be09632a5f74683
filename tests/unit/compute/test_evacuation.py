"""The Evacuator against a scripted Nova: verification, retries, restored state."""

import dataclasses

import pytest

from instanceha.compute import exceptions as exc
from instanceha.compute.evacuation import EvacuationSettings, Evacuator, Outcome
from instanceha.exceptions import Action
from tests.unit.clock import FakeClock

from .fakes import FakeNova, Script, server

SETTINGS = EvacuationSettings(concurrency=1, attempts=3, timeout=60.0, poll_interval=1.0)


def run(servers, scripts=None, settings=SETTINGS, target=None):
    nova = FakeNova(servers, scripts)
    clock = FakeClock()
    reported = []
    ev = Evacuator(nova, settings, clock=clock, on_result=reported.append)
    results = ev.evacuate_host("dead", servers, target_host=target)
    assert reported == results
    return nova, {r.server_id: r for r in results}


@pytest.mark.parametrize("vm_state, task_state, want_status, resets, stops", [
    ("active", None, "ACTIVE", 0, 0),
    ("stopped", None, "SHUTOFF", 0, 0),  # stays SHUTOFF
    ("error", None, "ACTIVE", 1, 0),  # reset, then evacuated
    ("active", "rebooting", "ACTIVE", 1, 0),  # stuck task from the dead host
    ("stopped", "powering-on", "SHUTOFF", 1, 1),  # reset to active, stopped again after
    ("paused", None, "ACTIVE", 1, 0),  # Nova refuses to evacuate paused servers
])
def test_each_state_ends_where_it_should(vm_state, task_state, want_status, resets, stops):
    s = server("a", vm_state=vm_state, task_state=task_state)
    nova, results = run([s])
    r = results["a"]
    assert (r.outcome, r.attempts, r.dest_host, r.status) == (
        Outcome.EVACUATED, 1, "spare", want_status)
    assert (r.migration_id, r.migration_status) == (1, "done")
    assert sum(c[0] == "reset_state" for c in nova.calls) == resets
    assert sum(c[0] == "stop" for c in nova.calls) == stops
    assert [c for c in nova.calls if c[0] == "evacuate"] == [("evacuate", "a", None)]


def test_not_counted_before_the_migration_is_done():
    # the evacuation runs for 5 reads: the host's records are read until the record
    # says done; the server is read once, then, to see it landed
    nova, results = run([server("a")], {"a": Script(polls_to_finish=5)})
    assert results["a"].ok and results["a"].migration_status == "done"
    assert sum(c[0] == "evacuations" for c in nova.calls) >= 6
    assert sum(c[0] == "server" for c in nova.calls) == 1


def test_conflicts_are_retried_within_the_attempt():
    nova, results = run([server("a")], {"a": Script(conflicts=3)})
    assert results["a"].ok and results["a"].attempts == 1
    assert sum(c[0] == "evacuate" for c in nova.calls) == 4


def test_failed_attempt_is_retried_after_a_reset():
    nova, results = run([server("a")], {"a": Script(fail_migration=1)})
    r = results["a"]
    assert (r.outcome, r.attempts, r.migration_id) == (Outcome.EVACUATED, 2, 2)
    assert ("reset_state", "a", "active") in nova.calls  # the ERROR left by attempt 1


def test_no_capacity_after_every_attempt():
    nova, results = run([server("a"), server("b")], {"a": Script(no_valid_host=5)})
    r = results["a"]
    assert (r.outcome, r.attempts) == (Outcome.NO_CAPACITY, 3)
    assert isinstance(r.error, exc.NoCapacity) and r.error.action is Action.ESCALATE
    assert "No valid host" in str(r.error)
    assert results["b"].ok  # the rest continue


def test_a_target_without_room_is_not_asked_again():
    """No valid host on the one host asked for: the attempts left would ask it
    again (each leaving the server in ERROR); the caller sends it without one."""
    nova, results = run([server("a")], {"a": Script(no_valid_host=5)}, target="spare")
    r = results["a"]
    assert (r.outcome, r.attempts) == (Outcome.NO_CAPACITY, 1)
    assert [c for c in nova.calls if c[0] == "evacuate"] == [("evacuate", "a", "spare")]


def test_failure_without_fault_is_not_no_capacity():
    _, results = run([server("a")], {"a": Script(fail_migration=5)},
                     EvacuationSettings(concurrency=1, attempts=2, timeout=60, poll_interval=1))
    r = results["a"]
    assert (r.outcome, r.attempts) == (Outcome.FAILED, 2)
    assert type(r.error) is exc.EvacuationFailed


def test_timeout_per_attempt():
    nova, results = run([server("a")], {"a": Script(never_finishes=True)},
                        EvacuationSettings(concurrency=1, attempts=1, timeout=10, poll_interval=1))
    r = results["a"]
    assert r.outcome is Outcome.FAILED and "timed out" in str(r.error)
    assert r.seconds >= 10


def test_in_progress_evacuation_is_awaited_not_repeated():
    nova = FakeNova([server("a")])
    nova.evacuate("a")  # an earlier controller asked, then died
    clock = FakeClock()
    r = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(
        nova.servers["a"], "dead")  # read after it asked: rebuilding
    assert r.ok and r.migration_id == 1
    assert sum(c[0] == "evacuate" for c in nova.calls) == 1


def test_in_progress_evacuation_seen_through_a_stale_read_is_not_repeated():
    # the caller read the server before an earlier controller asked, and that
    # request's record is too new for the host's changes-since read: the POST
    # Nova refuses (409, task_state) is the only one; the server's own records
    # show the running evacuation, which is awaited
    nova = FakeNova([server("a")])
    nova.evacuate("a")
    stale = dataclasses.replace(nova.servers["a"], task_state=None, status="ACTIVE")
    clock = FakeClock()
    r = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(
        stale, "dead")
    assert r.ok and r.migration_id == 1 and len(nova.migrations) == 1


def test_evacuate_whose_answer_was_lost_is_not_sent_again():
    # Nova accepted it, the answer timed out, and the accepted record has no
    # updated_at yet (invisible to changes-since): the server's own records say so
    nova = FakeNova([server("a")], {"a": Script(lost_answers=1)})
    clock = FakeClock()
    r = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(
        server("a"), "dead")
    assert r.ok and r.attempts == 1 and r.migration_id == 1
    assert sum(c[0] == "evacuate" for c in nova.calls) == 1


def test_an_unanswered_evacuate_nova_acts_on_late_is_not_sent_again():
    # nova-api takes the request in only after several reads of the records (it
    # was queued there): sending again before would make Nova rebuild twice
    nova = FakeNova([server("a")], {"a": Script(queued_reads=6)})
    clock = FakeClock()
    r = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(
        server("a"), "dead")
    assert r.ok and r.attempts == 1 and len(nova.migrations) == 1
    assert sum(c[0] == "evacuate" for c in nova.calls) == 1


def test_an_evacuate_lost_on_the_way_is_sent_again_after_the_grace():
    nova = FakeNova([server("a")], {"a": Script(dropped=1)})
    clock = FakeClock()
    settings = dataclasses.replace(SETTINGS, lost_write_grace=10.0)
    r = Evacuator(nova, settings, clock=clock).evacuate_server(
        server("a"), "dead")
    assert r.ok and r.attempts == 1 and len(nova.migrations) == 1
    assert sum(c[0] == "evacuate" for c in nova.calls) == 2
    assert r.seconds >= 10.0  # not before the grace ran out


def test_already_evacuated_is_verified_not_repeated():
    nova, results = run([server("a")])
    clock = FakeClock()
    again = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(
        server("a"), "dead")
    assert again.ok and again.migration_id == results["a"].migration_id
    assert sum(c[0] == "evacuate" for c in nova.calls) == 1


def test_escalating_error_stops_at_once():
    class Gone(FakeNova):
        def server(self, sid):
            raise exc.NovaNotFound(operation="show server", status=404, reason="gone")

    clock = FakeClock()
    r = Evacuator(Gone([server("a")]), SETTINGS, clock=clock
                  ).evacuate_server(server("a"), "dead")
    assert (r.outcome, r.attempts) == (Outcome.FAILED, 1)
    assert isinstance(r.error, exc.NovaNotFound)


def test_retryable_read_error_is_retried_within_the_attempt():
    class Flaky(FakeNova):
        failures = 2

        def evacuations(self, sid=None, source_host=None, changes_since=None):
            if self.failures:
                self.failures -= 1
                raise exc.NovaServerError(operation="list", status=503, reason="busy")
            return super().evacuations(sid, source_host, changes_since)

    clock = FakeClock()
    r = Evacuator(Flaky([server("a")]), SETTINGS, clock=clock
                  ).evacuate_server(server("a"), "dead")
    assert r.ok and r.attempts == 1



def test_server_errors_on_evacuate_are_retried_with_backoff():
    # found by the chaos suite: three 500s within 0.4 s used up the 3 attempts and
    # left the server on the dead host for good ("0 evacuated, 1 failed")
    class Blip(FakeNova):
        blips = 3

        def evacuate(self, sid, host=None):
            if self.blips:
                self.blips -= 1
                self.calls.append(("evacuate", sid, host))
                raise exc.NovaServerError(operation="evacuate", status=500, reason="oops")
            super().evacuate(sid, host)

    clock = FakeClock()
    nova = Blip([server("a")])
    r = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(
        server("a"), "dead")
    assert r.ok and r.attempts == 1 and r.migration_id == 1
    assert sum(c[0] == "evacuate" for c in nova.calls) == 4
    assert clock.waits[:3] == [1.0, 2.0, 4.0]  # back-off from poll_interval, doubling
    assert len(nova.migrations) == 1


@pytest.mark.parametrize("error", [
    exc.NovaUnavailable(operation="evacuate", reason="ConnectTimeout"),  # answer lost
    exc.NovaServerError(operation="evacuate", status=502, reason="bad gateway"),
    # a transport retry of the accepted request, once the evacuation is over
    exc.NovaBadRequest(operation="evacuate", status=400,
                       reason="Compute service of spare is still in use."),
])
def test_evacuate_accepted_despite_an_error_is_not_sent_again(error):
    class LostAnswer(FakeNova):
        def evacuate(self, sid, host=None):
            super().evacuate(sid, host)  # Nova did it ...
            raise error  # ... the caller saw a failure

    clock = FakeClock()
    nova = LostAnswer([server("a")])
    r = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(
        server("a"), "dead")
    assert r.ok and r.attempts == 1 and r.migration_id == 1
    assert sum(c[0] == "evacuate" for c in nova.calls) == 1 and len(nova.migrations) == 1


def test_nova_away_past_the_deadline_uses_the_next_attempt():
    class Away(FakeNova):
        until = None

        def evacuate(self, sid, host=None):
            self.calls.append(("evacuate-tried", sid))
            if clock() < self.until:
                raise exc.NovaUnavailable(operation="evacuate", reason="ConnectFailure",
                                          unsent=True)  # connection refused
            super().evacuate(sid, host)

    clock = FakeClock()
    nova = Away([server("a")])
    nova.until = clock() + SETTINGS.timeout + 5
    r = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(
        server("a"), "dead")
    assert r.ok and r.attempts == 2
    # bounded by the back-off: a handful of tries per minute, not a busy loop
    assert sum(c[0] == "evacuate-tried" for c in nova.calls) <= 12
    assert max(clock.waits) <= 30.0


def test_target_host_is_passed():
    nova, results = run([server("a")], target="spare")
    assert ("evacuate", "a", "spare") in nova.calls


def test_concurrency_is_bounded():
    servers = [server(str(i)) for i in range(8)]
    settings = EvacuationSettings(concurrency=3, attempts=1, timeout=60, poll_interval=1)
    nova, results = run(servers, settings=settings)
    assert all(r.ok for r in results.values()) and len(results) == 8
    assert 1 <= nova.max_inflight <= 3


def test_hook_failure_does_not_stop_the_rest():
    def hook(result):
        raise RuntimeError("metrics down")

    clock = FakeClock()
    nova = FakeNova([server("a"), server("b")])
    results = Evacuator(nova, SETTINGS, clock=clock, on_result=hook
                        ).evacuate_host("dead", [server("a"), server("b")])
    assert [r.ok for r in results] == [True, True]


def test_nothing_to_do():
    assert Evacuator(FakeNova([]), SETTINGS).evacuate_host("dead", []) == []


def test_conflict_after_an_accepted_request_is_not_repeated():
    class RetriedPost(FakeNova):
        def evacuate(self, sid, host=None):
            super().evacuate(sid, host)  # accepted, but the answer was lost ...
            raise exc.NovaConflict(operation="evacuate", status=409,  # ... and the retry
                                   reason="Cannot 'evacuate' while in task_state rebuilding")

    clock = FakeClock()
    nova = RetriedPost([server("a")])
    r = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(
        server("a"), "dead")
    assert r.ok and r.attempts == 1 and r.migration_id == 1
    assert sum(c[0] == "evacuate" for c in nova.calls) == 1
