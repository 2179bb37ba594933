"""Starting `wharf serve`: the address is bound before anything is said or written, and a
taken port, an address not on this machine or a bad host stops start-up in one line; a
host name works; the workers of one server share its one socket. S3 storage without a
database is refused. Every process here is real and runs in the test's own directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .conftest import stack_config
from .oci import push_blob
from .server import WharfServer, free_port


def wharf_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WHARF_") or k.startswith("WHARF_TEST_")}


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def refused(command: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a wharf command that must stop by itself; one still running at the deadline did
    not refuse (it serves), and is killed with its workers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "wharf", *command],
        cwd=cwd,
        env=wharf_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        shown = " ".join(command)
        raise AssertionError(f"`wharf {shown}` kept running instead of refusing:\n{stderr}") from None
    assert process.returncode != 0, stderr
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, "\n".join(lines)
    assert "serving on" not in lines[0]
    return lines[0]


def serve_config(addr: str, directory: Path, **http: Any) -> dict[str, Any]:
    return {
        "http": {"addr": addr, **http},
        "storage": {"filesystem": {"rootdirectory": str(directory / "data")}, "fsync": False},
    }


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_a_port_another_wharf_serves_stops_the_second_in_one_line(make_server, tmp_path, server):
    first = make_server(server=server)
    second = tmp_path / "second"
    config = write_config(second, serve_config(f"127.0.0.1:{first.port}", second))
    result = refused(["serve", "--server", server, str(config)], cwd=second)
    line = one_line(result)
    assert f"127.0.0.1:{first.port}" in line and "already in use" in line
    assert not (second / "data").exists()  # refused before anything was written
    with first.client() as client:  # the first one still has the port, alone
        for _ in range(10):
            assert client.get("/v2/").status_code == 200


def test_a_port_another_program_holds_stops_start_up_in_one_line(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = write_config(tmp_path, serve_config(f"127.0.0.1:{port}", tmp_path))
        line = one_line(refused(["serve", str(config)], cwd=tmp_path))
    assert line == (
        f"Error: cannot listen on 127.0.0.1:{port} (http.addr): the port is already in use "
        "(by another program, or another wharf serve)"
    )


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("192.0.2.1", "192.0.2.1 is not an address of this machine"),  # TEST-NET-1: binding sends nothing
        ("bad host", "'bad host' is not a host name or an IP address"),
        ("-bad-.example", "'-bad-.example' is not a host name or an IP address"),
    ],
)
def test_an_address_that_cannot_be_listened_on_is_named_in_one_line(tmp_path, host, reason):
    config = write_config(tmp_path, serve_config(f"{host}:5000", tmp_path))
    line = one_line(refused(["serve", str(config)], cwd=tmp_path))
    assert line == f"Error: cannot listen on {host}:5000 (http.addr): {reason}"
    assert not (tmp_path / "data").exists()


def test_the_environment_variable_is_named_when_it_gave_the_address(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process = subprocess.run(
            [sys.executable, "-m", "wharf", "serve"],
            cwd=tmp_path,
            env={**wharf_env(), "WHARF_HTTP_ADDR": f"127.0.0.1:{port}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert process.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port} (WHARF_HTTP_ADDR)" in one_line(
        subprocess.CompletedProcess(process.args, process.returncode, process.stdout, process.stderr)
    )


def test_a_host_name_is_resolved_and_served(tmp_path):
    server = WharfServer(tmp_path)
    server.config["http"]["addr"] = f"localhost:{server.port}"
    server.start()
    try:
        with server.client() as client:  # server.url is 127.0.0.1: localhost's IPv4 address
            push_blob(client, "lib/app", b"by name")
        said = server.log_path.read_text()
        assert f"serving on http://localhost:{server.port} (127.0.0.1:{server.port})" in said
    finally:
        server.stop()


def _listening_sockets(port: int) -> set[str]:
    """The inodes of the TCP sockets listening on ``port``, IPv4 and IPv6."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def _sockets_held(pid: int) -> set[str]:
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(target[len("socket:[") : -1])
    return held


def _workers(pid: int) -> list[int]:
    """The server's worker processes (not multiprocessing's resource tracker)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"resource_tracker" not in command:
                found.append(int(entry))
    return found


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_the_workers_of_one_server_share_its_one_socket(make_server, server):
    wharf = make_server({"http": {"workers": 2}}, server=server)
    assert wharf.process is not None
    deadline = time.monotonic() + 60
    while len(workers := _workers(wharf.process.pid)) < 2:  # uvicorn starts them one by one
        assert time.monotonic() < deadline, f"workers: {workers}"
        time.sleep(0.05)
    listening = _listening_sockets(wharf.port)
    assert len(listening) == 1, listening  # one socket, not one per worker (SO_REUSEPORT)
    for worker in workers:
        assert listening <= _sockets_held(worker), f"worker {worker} does not hold the socket"
    with wharf.client() as client:
        for _ in range(20):
            assert client.get("/v2/", headers={"Connection": "close"}).status_code == 200


def test_s3_storage_without_a_database_is_refused_naming_database_url(tmp_path):
    config = write_config(
        tmp_path / "etc",
        {
            "http": {"addr": f"127.0.0.1:{free_port()}"},
            "storage": {"s3": {"bucket": "images", "regionendpoint": "http://127.0.0.1:9"}},
        },
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for command in (["serve", str(config)], ["garbage-collect", str(config)], ["db", "upgrade", str(config)]):
        line = one_line(refused(command, cwd=cwd))
        assert "storage.s3 is set but database.url is not: set database.url" in line, command
    assert list(cwd.iterdir()) == []  # no ./data, no SQLite database, in the working directory


def test_serving_on_postgresql_and_s3_writes_nothing_in_the_working_directory(request, tmp_path):
    with stack_config(request, "postgresql+s3") as config:
        server = WharfServer(tmp_path, config).start()
        try:
            with server.client() as client:
                push_blob(client, "lib/app", b"in the bucket")
        finally:
            server.stop()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.yml", "server.log"]


def test_the_first_start_prints_no_alembic_plugin_lines_at_info(tmp_path):
    port = free_port()
    config = write_config(tmp_path, {**serve_config(f"127.0.0.1:{port}", tmp_path), "log": {"level": "info"}})
    process = subprocess.Popen(
        [sys.executable, "-m", "wharf", "serve", str(config)],
        cwd=tmp_path,
        env=wharf_env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "wharf serve did not come up"
                time.sleep(0.05)
    finally:
        process.terminate()
        _out, said = process.communicate(timeout=30)
    assert "Running upgrade  -> 0001" in said  # the first start: the schema was created, at info
    assert "serving on" in said
    assert "alembic.runtime.plugins" not in said and "setup plugin" not in said, said
