"""The password file: its format, ``python -m pbnb passwd``, and FilePasswordChecker over the wire."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from core_net import serving, within
from cred_helpers import Realm, client_of, make_portal

from pbnb.cred import FilePasswordChecker, UnauthorizedLogin, UsernamePassword
from pbnb.cred.passwd import main, read_password_file, set_password

REPO = Path(__file__).resolve().parent.parent


def _passwd(*args: str, password: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m pbnb passwd ARGS``; with ``password``, pass it through an env var."""
    env = dict(os.environ)
    if password is not None:
        env["PBNB_TEST_PASSWORD"] = password
        args = (*args, "--password-env", "PBNB_TEST_PASSWORD")
    return subprocess.run(
        [sys.executable, "-m", "pbnb", "passwd", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )


async def _whoami(server, username: str, password: str) -> str:
    async with client_of(server) as client:
        avatar = await within(client.login(UsernamePassword(username, password)))
        return await within(avatar.callRemote("whoami"))


@pytest.mark.slow
async def test_the_command_writes_a_private_file_the_checker_reads_without_restart(tmp_path) -> None:
    users = tmp_path / "users.txt"
    done = _passwd(str(users), "alice", password="first pass")
    assert done.returncode == 0, done.stderr
    assert "password set for alice" in done.stdout
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    text = users.read_text()
    assert "first pass" not in text and "alice:SCRAM-SHA-256$4096:" in text
    checker = FilePasswordChecker(users)
    async with serving(make_portal(Realm(), checker)) as server:
        assert await _whoami(server, "alice", "first pass") == "alice"
        # Change the password and add a user while the server runs.
        assert _passwd(str(users), "alice", password="second").returncode == 0
        assert _passwd(str(users), "bob", password="bobs").returncode == 0
        with pytest.raises(UnauthorizedLogin):
            await _whoami(server, "alice", "first pass")
        assert await _whoami(server, "alice", "second") == "alice"
        assert await _whoami(server, "bob", "bobs") == "bob"
    assert sorted(read_password_file(users)) == ["alice", "bob"]
    assert text.splitlines()[0].startswith("#")  # the header comment is kept across edits
    assert users.read_text().splitlines()[0] == text.splitlines()[0]


@pytest.mark.slow
def test_bad_command_lines_fail_with_a_message(tmp_path) -> None:
    users = tmp_path / "users.txt"
    missing = _passwd(str(users), "alice", "--password-env", "PBNB_NOT_SET_ANYWHERE")
    assert missing.returncode == 2 and "PBNB_NOT_SET_ANYWHERE is not set" in missing.stderr
    colon = _passwd(str(users), "al:ice", password="x")
    assert colon.returncode == 2 and "no colon" in colon.stderr
    empty = _passwd(str(users), "alice", password="")
    assert empty.returncode == 2 and "empty" in empty.stderr
    weak = _passwd(
        str(users), "alice", "--password-env", "PBNB_TEST_PASSWORD", "--iterations", "10", password="x"
    )
    assert weak.returncode == 2 and "at least 4096" in weak.stderr
    assert not users.exists()


def test_the_password_is_asked_twice_without_echo(tmp_path, monkeypatch, capsys) -> None:
    users = tmp_path / "users.txt"
    answers = iter(["typed", "typed", "typed", "typo"])
    prompts = []
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or next(answers))
    assert main([str(users), "carol"]) == 0
    assert prompts == ["New password for carol: ", "Again: "]
    assert read_password_file(users)["carol"].matches("typed")
    assert main([str(users), "carol"]) == 2
    assert "do not match" in capsys.readouterr().err
    assert read_password_file(users)["carol"].matches("typed")


def test_malformed_files_are_refused_naming_the_line(tmp_path) -> None:
    users = tmp_path / "users.txt"
    set_password(users, "alice", "pw")
    good = users.read_text()
    for bad_line, reason in (
        ("bob", "expected USER:SECRET"),
        ("bob:plaintext-password", "not a SCRAM-SHA-256 secret"),
        (good.splitlines()[1], "listed twice"),
        (" bob:" + good.splitlines()[1].partition(":")[2], "no colon, newline or edge spaces"),
    ):
        users.write_text(good + bad_line + "\n")
        with pytest.raises(ValueError, match=f"line 3: .*{reason}"):
            FilePasswordChecker(users)
        with pytest.raises(ValueError, match="line 3"):
            set_password(users, "carol", "pw")  # never rewrites a file it cannot read back


async def test_a_broken_edit_keeps_the_previous_users(tmp_path, caplog) -> None:
    users = tmp_path / "users.txt"
    set_password(users, "alice", "pw")
    checker = FilePasswordChecker(users)
    async with serving(make_portal(Realm(), checker)) as server:
        users.write_text(users.read_text() + "garbage line\n")
        with caplog.at_level(logging.ERROR, logger="pbnb.cred"):
            assert await _whoami(server, "alice", "pw") == "alice"
        assert any("keeping the previous users" in r.getMessage() for r in caplog.records)
