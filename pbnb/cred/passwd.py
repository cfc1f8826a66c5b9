"""The password file of ``FilePasswordChecker``, and the command that edits it.

Format: UTF-8 text, one user per line::

    # comments and blank lines are ignored
    alice:SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>

The part after the first colon is the SCRAM-SHA-256 secret in the form
PostgreSQL uses (base64 salt and keys, RFC 5803): a random salt, the
iteration count and two keys derived from the salted password. No password
is stored, and the file cannot be used to log in as anyone; still keep it
private (the command writes it with mode 0600), since the keys allow an
offline guessing attack on weak passwords. User names may not contain a
colon, a newline or surrounding spaces.

Add a user or change a password (asks twice, without echo)::

    python -m pbnb passwd users.txt alice

or take the password from an environment variable (for scripts)::

    PBNB_PASSWORD=s3cret python -m pbnb passwd users.txt alice --password-env PBNB_PASSWORD
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .scram import DEFAULT_ITERATIONS, ScramSecret

#: The first line of a new password file.
_HEADER = "# pbnb password file: USER:SCRAM-SHA-256 secret (see pbnb.cred.passwd)"


def check_username(username: str) -> None:
    """Raise ValueError if ``username`` cannot be written to a password file."""
    if not username or username != username.strip() or any(c in username for c in ":\r\n"):
        raise ValueError(f"user name {username!r} must be non-empty, with no colon, newline or edge spaces")


def read_password_file(path: str | os.PathLike[str]) -> dict[str, ScramSecret]:
    """Read a password file into {user name: secret}. Raises ValueError naming the bad line."""
    users: dict[str, ScramSecret] = {}
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        username, colon, secret_text = line.partition(":")
        try:
            if not colon:
                raise ValueError("expected USER:SECRET")
            check_username(username)
            if username in users:
                raise ValueError(f"user {username!r} is listed twice")
            users[username] = ScramSecret.parse(secret_text)
        except ValueError as exc:
            raise ValueError(f"{path}, line {number}: {exc}") from None
    return users


def set_password(
    path: str | os.PathLike[str], username: str, password: str, iterations: int = DEFAULT_ITERATIONS
) -> None:
    """Add ``username`` to the file (created if missing) or replace its secret.

    Other lines, comments included, are kept as they are. The file is
    replaced atomically, so a running ``FilePasswordChecker`` never reads a
    half-written file.
    """
    check_username(username)
    if not password:
        raise ValueError("the password is empty")
    path = Path(path)
    entry = f"{username}:{ScramSecret.from_password(password, iterations).format()}"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if lines:
        read_password_file(path)  # refuse to rewrite a file we could not read back
        kept = [line for line in lines if line.partition(":")[0] != username or line.lstrip().startswith("#")]
    else:
        kept = [_HEADER]
    _replace(path, "\n".join([*kept, entry]) + "\n")


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, private to its owner (mode 0600)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pbnb passwd",
        description="Add a user to a pbnb password file, or change a user's password.",
    )
    parser.add_argument("file", help="the password file (created if missing)")
    parser.add_argument("user", help="the user name")
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from environment variable VAR instead of asking",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        help=f"PBKDF2 iterations, at least {DEFAULT_ITERATIONS} (default)",
    )
    return parser


def _ask_password(username: str) -> str:
    password = getpass.getpass(f"New password for {username}: ")
    if getpass.getpass("Again: ") != password:
        raise ValueError("the passwords do not match")
    return password


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pbnb passwd FILE USER [--password-env VAR]``; returns the exit status."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.password_env:
            password = os.environ.get(args.password_env)
            if password is None:
                raise ValueError(f"environment variable {args.password_env} is not set")
        else:
            password = _ask_password(args.user)
        set_password(args.file, args.user, password, args.iterations)
    except (ValueError, OSError) as exc:
        print(f"pbnb passwd: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, EOFError):
        print("pbnb passwd: cancelled", file=sys.stderr)
        return 1
    print(f"pbnb passwd: password set for {args.user} in {args.file}")
    return 0
