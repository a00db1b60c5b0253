"""The README's first command: `shim demo` runs everything on loopback and its curl lines work."""

from __future__ import annotations

import subprocess
import sys


def test_demo_check_runs_every_printed_command_and_exits_zero():
    result = subprocess.run([sys.executable, "-m", "shim", "demo", "--check", "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "curl -i -X POST http://127.0.0.1:" in result.stdout
    assert '{"os-reprotect-replication-consistency-group": null}' in result.stdout
    checks = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(checks) == 7
    assert all(line.startswith("[ok]") for line in checks), checks
    assert "[ok] 200 reprotect, the legacy way" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_on_a_port_in_use_says_so_in_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for command in (["demo", "--port", str(port)], ["simulate", "--port", str(port)]):
            result = subprocess.run([sys.executable, "-m", "shim", *command],
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 1, result.stderr
            (line,) = result.stderr.strip().splitlines()
            assert line.startswith(f"shim: cannot listen on 127.0.0.1:{port}: ")
            assert "address already in use" in line
            assert line.endswith("(choose another --port; 0 picks a free one)")
