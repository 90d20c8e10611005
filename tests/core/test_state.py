"""The pure state machine: the table is the only source of legal transitions."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sse_sm import (
    TRANSITIONS,
    CloseReason,
    State,
    StateMachine,
    Transition,
    TransitionError,
    Trigger,
)
from sse_sm._state import CLEAN_END_REASONS, INITIAL_STATE, LATE_REPORTS, Arc, _index

LEGAL = {(arc.source, arc.trigger): arc for arc in TRANSITIONS}


def fake_clock() -> tuple[list[float], StateMachine]:
    now = [0.0]
    return now, StateMachine(clock=lambda: now[0])


def machine_in(state: State) -> StateMachine:
    """A machine driven to ``state`` along legal arcs only."""
    paths = {
        State.OPEN: [],
        State.STREAMING: [Trigger.STARTED],
        State.DRAINING: [Trigger.STARTED, Trigger.SHUTDOWN_REQUESTED],
        State.CLOSED: [Trigger.STARTED, Trigger.SOURCE_EXHAUSTED],
    }
    machine = StateMachine()
    for trigger in paths[state]:
        machine.fire(trigger)
    assert machine.state is state
    return machine


@pytest.mark.parametrize(
    ("state", "trigger"),
    list(itertools.product(State, Trigger)),
    ids=lambda v: v.name,
)
def test_every_pair_follows_the_table_or_raises_unchanged(state: State, trigger: Trigger) -> None:
    machine = machine_in(state)
    history_before = machine.history
    arc = LEGAL.get((state, trigger))
    if arc is None and state is State.CLOSED and trigger in LATE_REPORTS:
        assert machine.fire(trigger, "raced the close") is None
        assert machine.state is State.CLOSED
        assert machine.history == history_before
        assert machine.close_reason is CloseReason.COMPLETED
    elif arc is None:
        with pytest.raises(TransitionError) as caught:
            machine.fire(trigger, "should not happen")
        assert caught.value.state is state
        assert caught.value.trigger is trigger
        assert f"can't handle trigger {trigger.name} in state {state.name}" in str(caught.value)
        assert machine.state is state
        assert machine.history == history_before
    else:
        assert machine.fire(trigger, "a reason") is arc
        assert machine.state is arc.target
        assert machine.allows(trigger) or arc.target is not state


def _name(value: object) -> str:
    return str(getattr(value, "name", value))


def test_closed_has_no_outgoing_rows() -> None:
    assert not [arc for arc in TRANSITIONS if arc.source is State.CLOSED]


@pytest.mark.parametrize("trigger", sorted(LATE_REPORTS, key=_name), ids=_name)
@pytest.mark.parametrize(
    "reason",
    [CloseReason.COMPLETED, CloseReason.CLIENT_DISCONNECTED, CloseReason.ERROR],
    ids=_name,
)
def test_a_late_report_leaves_a_closed_machine_as_it_was(
    trigger: Trigger, reason: CloseReason
) -> None:
    """Whichever close won, a report that raced it changes nothing and calls no listener."""
    closing = {
        CloseReason.COMPLETED: Trigger.SOURCE_EXHAUSTED,
        CloseReason.CLIENT_DISCONNECTED: Trigger.DISCONNECTED,
        CloseReason.ERROR: Trigger.FAILED,
    }[reason]
    machine = machine_in(State.STREAMING)
    machine.fire(closing, "the close that won")
    seen: list[Transition] = []
    machine.add_listener(seen.append)
    history = machine.history
    counts = {t: machine.count(t) for t in Trigger}
    assert machine.fire(trigger, "late") is None
    assert machine.state is State.CLOSED
    assert machine.close_reason is reason
    assert machine.history == history
    assert {t: machine.count(t) for t in Trigger} == counts
    assert seen == []


@pytest.mark.parametrize("trigger", sorted(set(Trigger) - LATE_REPORTS, key=_name), ids=_name)
def test_any_other_report_after_the_close_is_a_bug(trigger: Trigger) -> None:
    machine = machine_in(State.CLOSED)
    with pytest.raises(TransitionError, match=f"{trigger.name} in state CLOSED"):
        machine.fire(trigger)


def test_late_reports_are_only_facts_another_task_can_detect() -> None:
    """The rule covers reports that can race a close, never the machine's own steps."""
    assert {arc.trigger for arc in TRANSITIONS} >= LATE_REPORTS
    assert Trigger.STARTED not in LATE_REPORTS
    assert Trigger.HEAD_ANSWERED not in LATE_REPORTS
    assert Trigger.CANCELLED not in LATE_REPORTS
    machine = machine_in(State.CLOSED)
    for trigger in Trigger:
        assert not machine.allows(trigger)


def test_every_state_is_reachable_from_open_and_reaches_closed() -> None:
    reachable = {INITIAL_STATE}
    frontier = [INITIAL_STATE]
    while frontier:
        here = frontier.pop()
        for arc in TRANSITIONS:
            if arc.source is here and arc.target not in reachable:
                reachable.add(arc.target)
                frontier.append(arc.target)
    assert reachable == set(State)
    for state in State:
        if state is not State.CLOSED:
            assert any(a.source is state and a.target is State.CLOSED for a in TRANSITIONS)


def test_close_reasons_are_on_exactly_the_arcs_into_closed() -> None:
    for arc in TRANSITIONS:
        assert (arc.target is State.CLOSED) == (arc.close_reason is not None)
    reasons = {arc.close_reason for arc in TRANSITIONS if arc.close_reason is not None}
    assert reasons == set(CloseReason)
    assert reasons >= CLEAN_END_REASONS


def test_every_trigger_appears_in_the_table() -> None:
    assert {arc.trigger for arc in TRANSITIONS} == set(Trigger)


def test_index_refuses_duplicate_rows() -> None:
    row = Arc(State.OPEN, Trigger.STARTED, State.STREAMING)
    with pytest.raises(ValueError, match="duplicate row"):
        _index([row, row])


def test_index_refuses_a_close_reason_off_the_arcs_into_closed() -> None:
    with pytest.raises(ValueError, match="close reason"):
        _index([Arc(State.OPEN, Trigger.STARTED, State.STREAMING, CloseReason.COMPLETED)])
    with pytest.raises(ValueError, match="close reason"):
        _index([Arc(State.STREAMING, Trigger.FAILED, State.CLOSED)])


def test_history_records_changes_with_reason_and_time() -> None:
    now, machine = fake_clock()
    now[0] = 1.0
    machine.fire(Trigger.STARTED, "status 200")
    now[0] = 4.0
    machine.fire(Trigger.DISCONNECTED, "client sent http.disconnect")
    assert machine.history == (
        Transition(State.OPEN, Trigger.STARTED, State.STREAMING, "status 200", 1.0),
        Transition(
            State.STREAMING,
            Trigger.DISCONNECTED,
            State.CLOSED,
            "client sent http.disconnect",
            4.0,
        ),
    )
    assert machine.close_reason is CloseReason.CLIENT_DISCONNECTED


def test_self_loops_are_counted_not_recorded() -> None:
    machine = machine_in(State.STREAMING)
    for _ in range(1000):
        machine.fire(Trigger.EVENT_SENT)
    machine.fire(Trigger.PING_SENT)
    assert machine.count(Trigger.EVENT_SENT) == 1000
    assert machine.count(Trigger.PING_SENT) == 1
    assert len(machine.history) == 1


def test_close_reason_is_none_until_closed() -> None:
    machine = machine_in(State.DRAINING)
    assert machine.close_reason is None
    machine.fire(Trigger.GRACE_EXPIRED, "grace")
    assert machine.close_reason is CloseReason.SHUTDOWN_FORCED


def test_time_in_states_splits_the_lifetime() -> None:
    now, machine = fake_clock()
    now[0] = 2.0
    machine.fire(Trigger.STARTED)
    now[0] = 7.0
    machine.fire(Trigger.SHUTDOWN_REQUESTED)
    now[0] = 8.5
    spent = machine.time_in_states()
    assert spent[State.OPEN] == 2.0
    assert spent[State.STREAMING] == 5.0
    assert spent[State.DRAINING] == 1.5
    machine.fire(Trigger.SOURCE_EXHAUSTED)
    now[0] = 100.0
    assert machine.time_in_states()[State.DRAINING] == 1.5
    assert machine.time_in_states()[State.CLOSED] == 0.0


def test_listeners_see_each_change_of_state_once() -> None:
    machine = StateMachine()
    seen: list[Transition] = []
    machine.add_listener(seen.append)
    machine.fire(Trigger.STARTED)
    machine.fire(Trigger.EVENT_SENT)
    machine.fire(Trigger.FAILED, "ValueError()")
    assert [(t.source, t.target) for t in seen] == [
        (State.OPEN, State.STREAMING),
        (State.STREAMING, State.CLOSED),
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(Trigger), max_size=40))
def test_random_trigger_sequences_follow_the_table_or_raise_without_change(
    triggers: list[Trigger],
) -> None:
    machine = StateMachine()
    state = machine.state
    for trigger in triggers:
        arc = LEGAL.get((state, trigger))
        if arc is None and state is State.CLOSED and trigger in LATE_REPORTS:
            assert machine.fire(trigger) is None
        elif arc is None:
            with pytest.raises(TransitionError):
                machine.fire(trigger)
        else:
            machine.fire(trigger)
            state = arc.target
        assert machine.state is state
    # The history is a path through the table starting at OPEN.
    previous = INITIAL_STATE
    for record in machine.history:
        assert record.source is previous
        assert LEGAL[(record.source, record.trigger)].target is record.target
        previous = record.target
    assert len(machine.history) <= 3


class MachineModel(RuleBasedStateMachine):
    """Stateful check: whatever is fired, CLOSED absorbs and the history stays a path."""

    def __init__(self) -> None:
        super().__init__()
        self.machine = StateMachine()
        self.closed_history: tuple[Transition, ...] | None = None

    @rule(trigger=st.sampled_from(Trigger))
    def fire(self, trigger: Trigger) -> None:
        before = self.machine.state
        try:
            arc = self.machine.fire(trigger)
        except TransitionError:
            assert (before, trigger) not in LEGAL
            assert not (before is State.CLOSED and trigger in LATE_REPORTS)
            assert self.machine.state is before
        else:
            if arc is None:
                assert before is State.CLOSED
                assert trigger in LATE_REPORTS
            else:
                assert arc is LEGAL[(before, trigger)]

    @invariant()
    def closed_absorbs(self) -> None:
        if self.machine.state is State.CLOSED:
            if self.closed_history is None:
                self.closed_history = self.machine.history
            assert self.machine.history == self.closed_history
            assert self.machine.close_reason is not None
        else:
            assert self.closed_history is None
            assert self.machine.close_reason is None


TestMachineModel = MachineModel.TestCase


def test_tally_counts_self_loops_in_the_current_state_only() -> None:
    machine = machine_in(State.STREAMING)
    machine._tally(Trigger.EVENT_SENT, 40)
    machine.fire(Trigger.EVENT_SENT)
    assert machine.count(Trigger.EVENT_SENT) == 41
    with pytest.raises(TransitionError):
        machine._tally(Trigger.SHUTDOWN_REQUESTED, 1)  # a change of state, not a self-loop
    machine.fire(Trigger.SOURCE_EXHAUSTED)
    with pytest.raises(TransitionError):
        machine._tally(Trigger.EVENT_SENT, 1)
    assert machine.count(Trigger.EVENT_SENT) == 41
