import os

from support import wait_for

from appd.supervisor.scoreboard import Scoreboard, SlotState


def test_a_forked_child_writes_its_slot_and_the_parent_sees_it() -> None:
    board = Scoreboard(3)
    board.reset(1)
    pid = os.fork()
    if pid == 0:
        try:
            board.set_state(1, SlotState.READY)
            for _ in range(5):
                board.count_request(1)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert board.read(1) == (SlotState.READY, 5)
    assert board.read(0) == (SlotState.EMPTY, 0)
    wait_for(lambda: board.read(1)[1] == 5)
    board.reset(1)
    assert board.read(1) == (SlotState.EMPTY, 0)
    board.close()
