import os

from support import wait_for

from appd.supervisor.child import ProcessBoard
from appd.supervisor.scoreboard import Scoreboard, SlotState


def test_a_forked_child_writes_its_slot_and_the_parent_sees_it() -> None:
    board = Scoreboard.create(8)
    slot = board.allocate(group=1)
    other = board.allocate(group=1)
    pid = os.fork()
    if pid == 0:
        try:
            board.set_state(slot, SlotState.READY)
            counter = ProcessBoard(board, slot, 1)
            for _ in range(5):
                counter.count()
            counter.beat()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    info = board.read(slot)
    assert (info.state, info.requests, info.group) == (SlotState.READY, 5, 1)
    assert info.heartbeat > 0
    assert board.read(other)[:2] == (SlotState.EMPTY, 0)
    wait_for(lambda: board.read(slot).requests == 5)
    board.release(slot)
    assert board.read(slot)[:2] == (SlotState.EMPTY, 0)
    board.close()


def test_an_exec_ed_process_maps_the_same_pages_through_the_descriptor() -> None:
    board = Scoreboard.create(4)
    slot = board.allocate(group=2)
    attached = Scoreboard.attach(os.dup(board.fd))
    attached.set_requests(slot, 7)
    assert board.read(slot).requests == 7
    attached.close()
    board.close()


def test_a_process_accepts_only_up_to_its_fair_share_plus_one() -> None:
    board = Scoreboard.create(8)
    slots = [board.allocate(group=3) for _ in range(4)]
    for slot in slots:
        board.set_state(slot, SlotState.READY)
    gates = [ProcessBoard(board, slot, 3) for slot in slots]
    # 11 connections open: 4 + 3 + 2 + 2; the share is ceil(11 / 4) = 3, plus one is 4.
    for gate, held in zip(gates, (4, 3, 2, 2), strict=True):
        gate.may_accept(held)
    assert not gates[0].may_accept(4)
    assert gates[1].may_accept(3)
    assert gates[2].may_accept(2)
    board.close()
