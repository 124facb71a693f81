"""The ``appd`` command line (also ``python -m appd``).

Exit codes: 0 success; 1 an error (the reason is printed on standard error); 2 a usage error;
3 the supervisor is not running (``status``, ``stop``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from appd.config import AppdConfig
from appd.errors import AppdError
from appd.hooks import Hooks, load_hooks
from appd.logging import configure_logging

__all__ = [
    "EXIT_ERROR",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_commands",
    "main",
    "output_closed",
]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_RUNNING: Final = 3

#: How long ``appd start`` waits for every service to report ready.
START_TIMEOUT: Final = 30.0
#: How long ``appd stop`` waits after SIGTERM before it sends SIGKILL.
STOP_TIMEOUT: Final = 30.0

Command = Callable[[argparse.Namespace], int]


def build_parser(hooks: Hooks | None = None) -> argparse.ArgumentParser:
    """The parser for every subcommand, plugins' own subcommands included."""
    parser = argparse.ArgumentParser(
        prog="appd",
        description=(
            "Run app service daemons and call them. Configuration is read from --config, "
            "$APPD_CONFIG, ./appd.toml or [tool.appd] in ./pyproject.toml."
        ),
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 not running.",
    )
    parser.add_argument("--config", metavar="PATH", help="the configuration file to read")
    parser.add_argument("--version", action="version", version=f"appd {appd_version()}",
                        help="print appd's version and exit")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"), hooks)
    return parser


#: ``run -v N``: the log level of every process of the run (1: the configuration's log_level).
RUN_LOG_LEVELS: Final = {0: "warning", 1: None, 2: "info", 3: "debug"}


def add_log_level_options(parser: argparse.ArgumentParser, *, verbosity: bool) -> None:
    """``--log-level`` (and ``-v/--verbosity`` where the caller has none of its own, as
    ``manage.py`` has) for the commands that run the supervisor."""
    if verbosity:
        parser.add_argument(
            "-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=None,
            help="log level of every process: 0 warnings and errors, 1 the configuration's "
                 "log_level (default), 2 information, 3 debugging",
        )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error", "critical"],
        help="log level of every process (overrides -v and the configuration's log_level)",
    )


def apply_log_level(args: argparse.Namespace) -> None:
    """Pass the level ``-v``/``--log-level`` chose to every process of the run, through
    ``APPD_LOG_LEVEL`` (read with the configuration, so a reload's fresh processes keep it)."""
    from appd.logging import LOG_LEVEL_ENV_VAR

    verbosity = getattr(args, "verbosity", None)
    level = getattr(args, "log_level", None) or (
        RUN_LOG_LEVELS.get(verbosity) if verbosity is not None else None
    )
    if level:
        os.environ[LOG_LEVEL_ENV_VAR] = level


def appd_version() -> str:
    """The installed appd distribution's version (``unknown`` when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("appd")
    except PackageNotFoundError:
        return "unknown"


def add_commands(
    commands: argparse._SubParsersAction[Any],
    hooks: Hooks | None = None,
    *,
    common: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Add every subcommand to ``commands`` (plugins' too when ``hooks`` is given).

    The ``appd`` command and ``manage.py appd`` share these subcommands; each subcommand's
    ``handler`` default is the function that runs it with the parsed arguments.

    :param common: called with each subcommand's parser, for options every one of them takes
        (``manage.py appd`` adds Django's standard options this way).
    """

    def add(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, description=help_text
        )
        sub.set_defaults(handler=handler)
        if common is not None:
            common(sub)
        return sub

    run = add("run", cmd_run, "Run the supervisor and every enabled service in the foreground.")
    run.add_argument(
        "--reload", action="store_true",
        help="development: reload the services when a watched Python file changes",
    )
    add_log_level_options(run, verbosity=common is None)
    start = add("start", cmd_start, "Start the supervisor as a daemon with a pid file.")
    add_log_level_options(start, verbosity=common is None)
    start.add_argument(
        "--timeout", type=float, default=START_TIMEOUT,
        help=f"seconds to wait for every service to be ready (default {START_TIMEOUT:g})",
    )
    stop = add("stop", cmd_stop, "Stop the daemon: SIGTERM, wait, then SIGKILL.")
    stop.add_argument(
        "--timeout", type=float, default=STOP_TIMEOUT,
        help=f"seconds to wait before SIGKILL (default {STOP_TIMEOUT:g})",
    )
    restart = add("restart", cmd_restart, "Stop the daemon if it runs, then start it.")
    restart.add_argument("--timeout", type=float, default=STOP_TIMEOUT, help="as for stop/start")
    reload = add(
        "reload", cmd_reload,
        "Reload the running supervisor (SIGHUP): configuration and code from disk, each "
        "service process replaced with no gap; wait until every service is ready.",
    )
    reload.add_argument(
        "--timeout", type=float, default=START_TIMEOUT,
        help=f"seconds to wait for the reload to end (default {START_TIMEOUT:g})",
    )
    status = add("status", cmd_status, "Show whether appd runs, and each service's state.")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    call = add("call", cmd_call, "Send one request to a service and print its reply.")
    call.add_argument("service", help="the service's name (see `appd list`)")
    call.add_argument("cmd", help="the command to send")
    call.add_argument(
        "args", nargs="*",
        help="arguments: JSON where they parse as JSON, else strings; key=value for keywords",
    )
    call.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a reply")
    add("list", cmd_list, "List discovered services: name, class, source, address.")
    add("plugins", cmd_plugins, "List loaded plugins, their hooks, and plugins that failed.")
    add("check", cmd_check, "Check configuration, discovery, keys and ports; start nothing.")
    add("keygen", cmd_keygen, "Print a fresh random 32-byte key.")

    if hooks is not None:
        hooks.appd_add_commands(subparsers=commands)


def main(argv: Sequence[str] | None = None, *, hooks: Hooks | None = None) -> int:
    """Entry point of the ``appd`` console script; returns the process exit code.

    :param hooks: the plugin facade; by default the invocation's one plugin manager (builtins,
        the configuration's ``plugins``, installed entry points), built once and used by the
        command too.  Plugins add their own subcommands through it.
    """
    from appd.cli.app import config_source, framework_source

    # Warnings (a plugin that failed to load, secrets readable by others) go to standard error,
    # never into the output of `appd call` or `appd status --json`; `appd run` reconfigures.
    configure_logging("cli", stream=sys.stderr, level="WARNING")
    # Beside a Django project: the configuration manage.py appd reads (settings.APPD).
    source = framework_source()
    with config_source(source) if source is not None else contextlib.nullcontext():
        return _main(argv, hooks)


def _main(argv: Sequence[str] | None, hooks: Hooks | None) -> int:
    not_loaded = None
    if hooks is None:
        from appd.cli.app import invocation_plugins

        early = argparse.ArgumentParser(add_help=False)
        early.add_argument("--config")
        known, _ = early.parse_known_args(argv)
        hooks, not_loaded = invocation_plugins(known.config)
    parser = build_parser(hooks if hooks is not None else load_hooks())
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        if not_loaded is not None:  # --help, or a command a configured plugin would add
            print(
                f"appd: note: the configuration's plugins are not loaded: {not_loaded}",
                file=sys.stderr,
            )
        raise
    args.hooks = hooks
    handler: Command | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code = handler(args)
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return code
    except AppdError as exc:
        _error(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    except BrokenPipeError:
        return output_closed()


def output_closed() -> int:
    """The reader of our output went away (``appd status | head -1``): end quietly.

    Standard output is pointed at ``/dev/null`` so that flushing it at exit cannot raise
    again (what the Python documentation recommends for SIGPIPE).

    :returns: the exit code, :data:`EXIT_ERROR`.
    """
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_ERROR


def _error(message: str) -> None:
    print(f"appd: error: {message}", file=sys.stderr)


def _config(args: argparse.Namespace, *, secrets: bool = True) -> AppdConfig:
    return _load(args, secrets=secrets)[0]


def _load(args: argparse.Namespace, *, secrets: bool = True) -> tuple[AppdConfig, Hooks]:
    """The configuration and plugins; ``secrets=False`` for commands that use no secret."""
    from appd.cli.app import load

    return load(args.config, hooks=getattr(args, "hooks", None), secrets=secrets)


# -- run / start / stop / restart ---------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from appd.cli.app import run_supervisor

    apply_log_level(args)
    if getattr(args, "reload", False):
        return _run_reloading(args)
    return run_supervisor(*_load(args), hold_pid_file=True, config_path=args.config)


def _run_reloading(args: argparse.Namespace) -> int:
    """``run --reload``: the supervisor as a child, reloaded when a watched file changes."""
    from pathlib import Path

    from appd.cli.app import configure_logging_for
    from appd.cli.reload import Reloader, supervisor_command, watch_roots

    config = _config(args)  # a broken configuration fails here, before anything starts
    configure_logging_for(config, "reloader")
    places = [Path.cwd(), *config.paths]
    if config.source is not None and Path(config.source).is_file():
        places.append(Path(config.source).parent)
    return Reloader(supervisor_command(), watch_roots(places)).run()


def cmd_start(args: argparse.Namespace) -> int:
    from appd.cli.app import start_daemonized

    apply_log_level(args)
    config = _config(args)
    return start_daemonized(config, config_path=args.config, timeout=args.timeout)


def cmd_stop(args: argparse.Namespace) -> int:
    from appd.runtime.pidfile import read_live_pid

    config = _config(args, secrets=False)
    pid = read_live_pid(config.pid_file)
    if pid is None:
        print(f"appd is not running (no live pid file at {config.pid_file})")
        return EXIT_NOT_RUNNING
    os.kill(pid, signal.SIGTERM)
    if _wait_until(lambda: read_live_pid(config.pid_file) is None, args.timeout):
        print(f"appd stopped (pid {pid})")
        return EXIT_OK
    _error(f"appd (pid {pid}) did not stop within {args.timeout:g}s; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: read_live_pid(config.pid_file) is None, 5.0)
    return EXIT_ERROR


def cmd_restart(args: argparse.Namespace) -> int:
    stopped = cmd_stop(args)
    if stopped not in (EXIT_OK, EXIT_NOT_RUNNING):
        return stopped
    return cmd_start(args)


def cmd_reload(args: argparse.Namespace) -> int:
    from appd.cli.app import reload_running

    config = _config(args)
    pid = reload_running(config, timeout=args.timeout)
    if pid is None:
        print(f"appd is not running (no live pid file at {config.pid_file})")
        return EXIT_NOT_RUNNING
    print(f"appd reloaded (pid {pid})")
    return EXIT_OK


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# -- status -------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from appd.cli.app import capacity_status
    from appd.runtime.pidfile import read_live_pid
    from appd.supervisor import read_status, status_path_for

    config = _config(args, secrets=False)
    pid = read_live_pid(config.pid_file)
    if pid is None:
        if args.json:
            print(json.dumps({"state": "not running", "pid": None, "services": {}}))
        else:
            print("appd is not running")
        return EXIT_NOT_RUNNING
    status = read_status(status_path_for(config.pid_file))
    if not status:
        status = {"state": "starting", "services": {}}
    status["pid"] = pid
    status["capacities"] = capacity_status(config)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return EXIT_OK
    print(f"appd is {status.get('state', 'running')} (pid {pid})")
    _print_reload_failure(status)
    for name, service in sorted(status.get("services", {}).items()):
        closed = ""
        if service.get("listening") is False:
            closed = "  (listener closed: connections refused)"
        print(
            f"  {name}: {service['state']}  restarts={service['restarts']}"
            f"  requests={service['requests']}{closed}"
        )
        for proc in [*service["processes"], *service.get("draining", [])]:
            uptime = "-" if proc["uptime"] is None else f"{proc['uptime']:.0f}s"
            age = proc.get("heartbeat_age")
            heartbeat = "-" if age is None else f"{age:.1f}s ago"
            print(
                f"    [{proc['worker']}] {proc['state']:<8} pid={proc['pid']}"
                f"  uptime={uptime}  restarts={proc['restarts']}  requests={proc['requests']}"
                f"  heartbeat={heartbeat}"
            )
    for name in status.get("disabled", []):
        print(f"  {name}: disabled  (not running: connections refused)")
    _print_capacities(status["capacities"])
    return EXIT_OK


def _print_reload_failure(status: dict[str, Any]) -> None:
    """``  last reload failed at 2026-12-05 11:02:03 UTC (1 of 3 reloads): <first line>`` when
    the last reload did not load: the processes running are the ones from before it."""
    error = status.get("last_reload_error")
    if not error:
        return
    failed_at = status.get("last_reload_failed_at")
    when = "-" if failed_at is None else time.strftime(
        "%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(failed_at))
    )
    failures = status.get("reload_failures", 0)
    attempts = failures + status.get("reloads", 0)
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else "?"
    print(f"  last reload failed at {when} ({failures} of {attempts} reloads failed): "
          f"{first_line}")
    print("  the processes running are the ones from before it; `appd status --json` has the "
          "whole error")


def _print_capacities(capacities: dict[str, dict[str, Any]]) -> None:
    """``capacity pdu: holders=2 limit=5 waiters=1  backend=...`` and a line per holder."""
    for name, capacity in capacities.items():
        if capacity.get("error"):
            print(
                f"  capacity {name}: limit={capacity['limit']}  backend={capacity['backend']}"
                f"  unavailable: {capacity['error']}"
            )
            continue
        print(
            f"  capacity {name}: holders={len(capacity['holders'])} limit={capacity['limit']}"
            f" waiters={capacity['waiters']}  backend={capacity['backend']}"
        )
        for holder in capacity["holders"]:
            expires = holder["expires_in"]
            lasts = "-" if expires is None else f"{expires:.1f}s"
            print(f"    {holder['holder']}  token={holder['token']}  expires_in={lasts}")


# -- call ---------------------------------------------------------------------------------------


def parse_call_arguments(words: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """``["3", "on=true", "name"]`` -> ``([3, "name"], {"on": True})``.

    Each value is JSON where it parses as JSON, else the string itself; ``key=value`` words (key
    an identifier) become keyword arguments.
    """
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key.isidentifier():
            keywords[key] = _json_or_string(value)
        else:
            positional.append(_json_or_string(word))
    return positional, keywords


def _json_or_string(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_call(args: argparse.Namespace) -> int:
    from appd.cli.app import client_for

    config, hooks = _load(args)
    positional, keywords = parse_call_arguments(args.args)
    with client_for(config, hooks, args.service, timeout=args.timeout) as client:
        res_args, res_kwargs = client.send_request(args.cmd, *positional, **keywords)
    print(json.dumps({"args": list(res_args), "kwargs": dict(res_kwargs)}, default=repr))
    return EXIT_OK


# -- list / plugins / check / keygen ------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from appd.cli.app import service_rows

    rows = service_rows(*_load(args, secrets=False))
    if not rows:
        print("no services found")
        return EXIT_OK
    _print_table(["NAME", "CLASS", "SOURCE", "ADDRESS"], rows)
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    from appd.cli.app import plugin_rows

    loaded, failed = plugin_rows(_load(args, secrets=False)[1])
    _print_table(["PLUGIN", "SOURCE", "HOOKS"], loaded)
    for name, error in failed:
        if error:
            print(f"failed: {name}: {error}")
        else:
            print(f"disabled: {name} (APPD_DISABLE_PLUGINS)")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from appd.cli.check import check

    problems, notes, warnings = check(args.config, hooks=getattr(args, "hooks", None))
    for note in notes:
        print(f"ok: {note}")
    for warning in warnings:
        print(f"warning: {warning}")
    for problem in problems:
        print(f"problem: {problem}")
    return EXIT_ERROR if problems else EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from appd import generate_key

    print(generate_key())
    return EXIT_OK


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=False))
        print("  ".join(cells).rstrip())
