"""LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES parsing with real sockets passed to a real process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appd_systemd import passed_sockets
from appd_systemd.activation import PassedSocket, find_socket

HERE = Path(__file__).resolve().parent

CHILD = textwrap.dedent(
    """
    import json, os, socket, sys
    from appd_systemd import passed_sockets
    from appd_systemd.activation import find_socket

    passed = passed_sockets(os.environ, os.getpid())
    print(json.dumps([[p.name, p.sock.fileno(), list(p.sock.getsockname())] for p in passed]))
    sys.stdout.flush()
    chosen = find_socket(passed, sys.argv[1], host="127.0.0.1", port=int(sys.argv[2]), path=None)
    conn, _ = chosen.accept()
    conn.sendall(b"served by " + sys.argv[1].encode())
    conn.close()
    """
)


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _activate(socks: list[socket.socket], names: str, *args: str) -> subprocess.Popen[str]:
    fds = [s.fileno() for s in socks]
    return subprocess.Popen(
        [sys.executable, str(HERE / "socket_activate.py"), ",".join(map(str, fds)), names,
         "--", sys.executable, "-c", CHILD, *args],
        pass_fds=fds, stdout=subprocess.PIPE, text=True,
    )


def test_named_sockets_arrive_at_3_and_4_and_serve() -> None:
    with _listener() as first, _listener() as second:
        proc = _activate([first, second], "echo:power", "power", "0")
        try:
            assert proc.stdout is not None
            listed = json.loads(proc.stdout.readline())
            assert [(name, fd) for name, fd, _ in listed] == [("echo", 3), ("power", 4)]
            assert listed[1][2] == list(second.getsockname())
            with socket.create_connection(second.getsockname(), timeout=10) as client:
                assert client.recv(100) == b"served by power"
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
            proc.wait()


def test_without_names_the_bound_address_chooses() -> None:
    with _listener() as first, _listener() as second:
        port = second.getsockname()[1]
        proc = _activate([first, second], "", "anything", str(port))
        try:
            assert proc.stdout is not None
            assert [name for name, _, _ in json.loads(proc.stdout.readline())] == ["", ""]
            with socket.create_connection(second.getsockname(), timeout=10) as client:
                assert client.recv(100) == b"served by anything"
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
            proc.wait()


def test_sockets_meant_for_another_process_are_not_taken() -> None:
    assert passed_sockets({"LISTEN_FDS": "1", "LISTEN_PID": "1"}, os.getpid()) == []
    assert passed_sockets({}, os.getpid()) == []


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"LISTEN_FDS": "1", "LISTEN_PID": "x"}, "LISTEN_PID"),
        ({"LISTEN_FDS": "two", "LISTEN_PID": "{pid}"}, "LISTEN_FDS"),
    ],
)
def test_malformed_variables_are_named(environ: dict[str, str], named: str) -> None:
    environ = {k: v.format(pid=os.getpid()) for k, v in environ.items()}
    with pytest.raises(ValueError, match=named):
        passed_sockets(environ, os.getpid())


def test_a_descriptor_that_is_not_a_listening_socket_is_refused() -> None:
    code = textwrap.dedent(
        """
        import os, socket
        from appd_systemd import passed_sockets
        try:
            passed_sockets(os.environ, os.getpid())
        except ValueError as exc:
            print(exc)
        """
    )
    with socket.socket() as unbound:
        fd = unbound.fileno()
        out = subprocess.run(
            [sys.executable, str(HERE / "socket_activate.py"), str(fd), "",
             "--", sys.executable, "-c", code],
            pass_fds=[fd], capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    assert "descriptor 3 is not a listening stream socket" in out


def test_find_socket_prefers_the_name_then_the_address(tmp_path: Path) -> None:
    with _listener() as tcp, socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(tmp_path / "svc.sock"))
        unix.listen()
        port = tcp.getsockname()[1]
        passed = [PassedSocket(tcp, ""), PassedSocket(unix, "power")]
        assert find_socket(passed, "power", host=None, port=None, path=None) is unix
        assert find_socket(passed, "echo", host="127.0.0.1", port=port, path=None) is tcp
        assert find_socket(passed, "echo", host="127.0.0.1", port=port + 1, path=None) is None
        unnamed = [PassedSocket(unix, "")]
        path = str(tmp_path / "svc.sock")
        assert find_socket(unnamed, "echo", host=None, port=None, path=path) is unix
