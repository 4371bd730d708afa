"""The README's commands, copied from the README itself: its two set-up
commands come first, the run command brings up a relay on the embedded
defaults, and the capture-mode swaks line lands a message in capture."""
import os
import re
import shlex
import signal
import subprocess

from conftest import ROOT, Sluice, wait_for

README = ROOT / "README.md"


def readme_commands():
    """Indented code lines of the README, in order, as the set-up tools read them."""
    return [l.strip() for l in README.read_text().splitlines() if re.match(r"^ {4}\S", l)]


def test_readme_starts_with_the_two_setup_commands():
    cmds = readme_commands()
    assert cmds[0] == "scripts/run.sh"
    assert cmds[1] == "scripts/check.sh"
    for c in cmds[:2]:
        script = ROOT / c
        assert script.is_file() and script.stat().st_mode & 0o111, c
        # a bare Debian 12 has no make: the set-up commands must not need it
        assert "make " not in script.read_text()


def test_readme_run_command_then_swaks_lands_in_capture(tmp_path):
    cmds = readme_commands()
    swaks = next(c for c in cmds if c.startswith("swaks ") and "--auth" not in c)
    s = Sluice(tmp_path / "readme")
    env = dict(s.env)
    env.pop("SLUICE_SERVER_RELAY_NETWORKS")  # the embedded default, as a new user has it
    # the README's run command, verbatim, on free ports and a private var_dir
    logf = open(s.log_path, "ab")
    proc = subprocess.Popen(shlex.split(cmds[0]), cwd=ROOT, env=env, stdout=logf,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or s.events("server.ready"), timeout=300,
                 what="server.ready from the README run command")
        assert proc.poll() is None, s.log_text()
        argv = shlex.split(swaks.replace("127.0.0.1:2525", f"127.0.0.1:{s.port}"))
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        msgs = s.wait_captured(1)
        env = msgs[0]["envelope"]
        assert env["mail_from"] == "app@example.com", env
        assert env["rcpt_to"] == ["qa@example.net"], env
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        logf.close()
