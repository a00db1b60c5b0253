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
    assert len(checks) == 11
    assert all(line.startswith("[ok]") for line in checks), checks
    assert "[ok] 200 reprotect, the legacy way" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_shows_one_group_in_each_mode_and_prints_the_report_table():
    result = subprocess.run([sys.executable, "-m", "shim", "demo", "--check", "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    report = result.stdout.split("The migration report")[1].splitlines()
    rows = {line.split()[1]: line.split()[2:] for line in report if line.startswith("0970dd7a")}

    assert [row[0] for row in rows.values()] == ["sdrs", "shadow", "legacy"]
    assert "reprotect running (job " in " ".join(rows["bd35d31b-7ab9-47fc-84c6-3d326c6fa6cb"])
    (shadow,) = [row for row in rows.values() if row[0] == "shadow"]
    assert shadow[1:4] == ["1", "0", "0"] and shadow[-2] == "match"  # one comparison, and it matched
    assert any("sdrs mode would answer 200 (agree; precondition satisfied" in line for line in report)


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
