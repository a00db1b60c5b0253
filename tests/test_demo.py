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
    assert "  console          http://127.0.0.1:" in result.stdout  # the migration console's page
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


def run_demo_check(**env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "shim", "demo", "--check", "--port", "0"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})


def test_demo_honours_shim_log_level_so_the_access_and_audit_lines_can_be_seen():
    import json

    result = run_demo_check(SHIM_LOG_LEVEL="info")

    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    access = [record for record in records if record["logger"] == "shim.access"]
    audit = [record for record in records if record["logger"] == "shim.audit"]
    assert {record["status"] for record in access} >= {200, 401, 409}
    assert any(record["route"] == "translated" for record in access)
    assert [record["legacy_status"] for record in audit if record["action"].startswith("os-reprotect")] == [
        "200", "409", "401"]


def test_demo_is_quiet_by_default_and_speaks_text_when_asked():
    quiet = run_demo_check()
    text = run_demo_check(SHIM_LOG_LEVEL="info", SHIM_LOG_FORMAT="text")

    assert quiet.returncode == 0 and "shim.access" not in quiet.stderr
    access = [line for line in text.stderr.splitlines() if " shim.access: access " in line]
    assert access and all(" INFO " in line and " status=" in line and " route=" in line for line in access)
    assert not any(line.startswith("{") for line in text.stderr.splitlines())
