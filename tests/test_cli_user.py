"""`wharf user add|passwd|list` and `wharf token create` on a running registry's database,
proved by HTTP Basic against that registry; the first start with accounts on and no
administrator says which command makes one."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .accounts import ACCOUNTS
from .conftest import STACKS, stack_config
from .server import WharfServer, deep_merge
from .test_htpasswd import basic


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}


def wharf(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`wharf ARGS` in ``cwd``, with no WHARF_* setting and ``stdin`` (none: an empty one,
    not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "wharf", *args],
        input=stdin or "",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=_environment(),
    )


def on_terminal(cwd: Path, *args: str, answers: dict[str, str]) -> tuple[int, str]:
    """`wharf ARGS` on a terminal of its own (a pseudo-terminal, its controlling one, as a
    shell gives it): each prompt in ``answers`` is answered when it appears. Its exit status
    and everything it wrote."""
    master, slave = os.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [sys.executable, "-m", "wharf", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=_environment(),
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    screen, seen = "", 0
    pending = list(answers.items())
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its terminal
                break
            if not chunk:
                break
            screen += chunk.decode(errors="replace")
            while pending and (found := screen.find(pending[0][0], seen)) >= 0:
                seen = found + len(pending[0][0])
                os.write(master, pending.pop(0)[1].encode() + b"\n")
        code = process.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return code, screen


@pytest.fixture(params=STACKS)
def accounts_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WharfServer]:
    with stack_config(request, request.param) as config:
        server = WharfServer(tmp_path, deep_merge(config, ACCOUNTS)).start()
        yield server
        server.stop()


def status(server: WharfServer, user: str, password: str) -> int:
    return httpx.get(f"{server.url}/v2/", headers=basic(user, password), timeout=30).status_code


def test_users_and_tokens_made_on_the_command_line_log_in(accounts_server):
    server = accounts_server
    config = str(server.config_path)
    here = server.directory

    added = wharf(here, "user", "add", "--password-stdin", "alice", config, stdin="correct horse\n")
    assert added.returncode == 0, added.stderr
    assert status(server, "alice", "correct horse") == 200
    assert status(server, "alice", "correct horse\n") == 401  # the newline ended the password

    for args, stdin, said in [
        (["alice"], "another password\n", "Error: an account named 'alice' exists already"),
        (["bob"], "short\n", "Error: password too short: it must have at least 8 characters"),
        (["Bob"], "battery staple\n", "Error: user name 'Bob' is invalid: lowercase letters and digits"),
        (["bob"], None, "Error: no terminal to ask for the password on: give it on standard input"),
    ]:
        flags = ["--password-stdin"] if stdin is not None else []
        refused = wharf(here, "user", "add", *flags, *args, config, stdin=stdin)
        assert refused.returncode == 1, (args, refused.stderr)
        told = refused.stderr.strip().splitlines()
        assert len(told) == 1 and told[0].startswith(said), (args, refused.stderr)
    assert status(server, "alice", "correct horse") == 200  # the refused duplicate changed nothing
    assert status(server, "bob", "battery staple") == 401

    admin = wharf(here, "user", "add", "--admin", "--password-stdin", "root", config, stdin="root password")
    assert admin.returncode == 0, admin.stderr
    listed = wharf(here, "user", "list", config)
    assert listed.returncode == 0, listed.stderr
    assert [line.split() for line in listed.stdout.splitlines()] == [
        ["NAME", "TYPE", "ACTIVE", "ADMIN"],
        ["alice", "user", "yes", "no"],
        ["root", "user", "yes", "yes"],
    ]

    changed = wharf(here, "user", "passwd", "--password-stdin", "alice", config, stdin="battery staple\n")
    assert changed.returncode == 0, changed.stderr
    assert status(server, "alice", "correct horse") == 401
    assert status(server, "alice", "battery staple") == 200
    absent = wharf(here, "user", "passwd", "--password-stdin", "nobody", config, stdin="battery staple\n")
    assert absent.returncode == 1 and absent.stderr.strip() == "Error: no account named 'nobody'"

    created = wharf(here, "token", "create", "--user", "alice", "--name", "ci", "--expires", "30d", config)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("wharf_pat_") and "\n" not in secret  # the secret alone on stdout
    assert "'ci'" in created.stderr and "shown only now" in created.stderr
    assert status(server, "alice", secret) == 200
    assert status(server, "root", secret) == 401  # alice's, not anyone's
    for args, said in [
        (["--user", "nobody", "--name", "ci"], "Error: no user named 'nobody'"),
        (["--user", "alice", "--name", "ci", "--expires", "0s"], "a token must last longer than 0s"),
        (["--user", "alice", "--name", "ci", "--expires", "soon"], "'soon' is not a duration"),
    ]:
        refused = wharf(here, "token", "create", *args, config)
        assert refused.returncode != 0 and said in refused.stderr, (args, refused.stderr)


def test_a_terminal_is_asked_twice_and_mismatches_and_short_passwords_are_refused(make_server):
    server = make_server(ACCOUNTS)
    config = str(server.config_path)
    here = server.directory

    code, screen = on_terminal(
        here,
        "user",
        "add",
        "alice",
        config,
        answers={"Password: ": "correct horse", "Password again: ": "correct horse"},
    )
    assert code == 0, screen
    assert "correct horse" not in screen  # not echoed
    assert status(server, "alice", "correct horse") == 200

    code, screen = on_terminal(
        here,
        "user",
        "add",
        "bob",
        config,
        answers={"Password: ": "battery staple", "Password again: ": "battery stable"},
    )
    assert code == 1 and "Error: the two passwords differ; nothing was changed" in screen, screen
    code, screen = on_terminal(here, "user", "add", "bob", config, answers={"Password: ": "short"})
    assert code == 1 and "Error: password too short" in screen, screen
    assert "Password again" not in screen
    assert status(server, "bob", "battery staple") == 401
    assert [line.split()[0] for line in wharf(here, "user", "list", config).stdout.splitlines()] == [
        "NAME",
        "alice",
    ]

    code, screen = on_terminal(
        here,
        "user",
        "passwd",
        "alice",
        config,
        answers={"Password: ": "battery staple", "Password again: ": "battery staple"},
    )
    assert code == 0, screen
    assert status(server, "alice", "battery staple") == 200


def test_the_commands_refuse_a_directory_with_no_registry(tmp_path):
    result = wharf(tmp_path, "user", "add", "--password-stdin", "alice", stdin="correct horse")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: no registry at {tmp_path / 'data'}: that directory (storage.filesystem.rootdirectory) "
        "does not exist; give the registry's CONFIG"
    )
    assert not (tmp_path / "data").exists()


FIRST_ADMIN = "there is no active system administrator yet: create one with `wharf user add --admin NAME"


def test_the_first_start_without_an_administrator_says_how_to_make_one_once(make_server):
    server = make_server(deep_merge(ACCOUNTS, {"http": {"workers": 2}}))
    config = server.config_path.resolve()
    told = [line for line in server.log_path.read_text().splitlines() if FIRST_ADMIN in line]
    assert len(told) == 1, server.log_path.read_text()  # by `wharf serve`, not by each worker
    assert told[0].startswith("WARNING:wharf.auth:")
    assert f"`wharf user add --admin NAME {config}`" in told[0]
    assert "no default administrator and no default password" in told[0]

    # The command it names, as written (NAME and a password filled in), makes one.
    command = told[0].split("`")[1].replace("NAME", "root").split()
    made = wharf(server.directory, *command[1:3], "--password-stdin", *command[3:], stdin="root password")
    assert made.returncode == 0, made.stderr
    assert status(server, "root", "root password") == 200

    server.restart()
    told = [line for line in server.log_path.read_text().splitlines() if FIRST_ADMIN in line]
    assert len(told) == 1, server.log_path.read_text()  # the second start has an administrator
