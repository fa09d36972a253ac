"""Serving without root: ``ioc serve`` started as root serves as an unprivileged system user.

The root part of the start (reading settings, checking the database, handing the folders the
server writes to that user, letting it reach the managed cluster's socket) happens first; then
the process drops its privileges for good (setgroups, setgid, setuid) and uvicorn starts.

Why drop in-process rather than re-execute through ``runuser -u ioc --`` (what pgcluster does for
the short-lived pg_ctl): the server keeps its PID, so SIGTERM from systemd, docker or a test
reaches uvicorn itself — runuser stays in between as a root parent and kills its child two
seconds after forwarding a SIGTERM, which would cut the graceful shutdown short — and no root
process is left behind while serving.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ioc.errors import IocError
from ioc.settings import PROJECT_ROOT


@dataclass(frozen=True)
class ServingUser:
    """The system user the server runs as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def serving_user(name: str, *, required: bool = True) -> ServingUser | None:
    """The user to serve as: None when not root (nothing changes) or when ``IOC_RUN_AS=root``;
    a missing user is an error (or None when not ``required``)."""
    if os.geteuid() != 0 or name == "root":
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not required:
            return None
        raise IocError(
            f"The system user '{name}' that serves ioc when started as root does not exist: "
            "run 'make setup' as root (or useradd --system --no-create-home --shell "
            f"/usr/sbin/nologin {name}), or set IOC_RUN_AS."
        ) from None
    if entry.pw_uid == 0:
        raise IocError(f"IOC_RUN_AS names '{name}', which is root: name an unprivileged user.")
    return ServingUser(
        name=name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        groups=tuple(os.getgrouplist(name, entry.pw_gid)),
        home=entry.pw_dir,
    )


def _tree(folder: Path) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        yield root
        for name in (*dirs, *files):
            yield os.path.join(root, name)


def hand_over(user: ServingUser, folders: Iterable[Path]) -> None:
    """Create the folders the server writes to and make the user own them (what a root
    command such as ``ioc tiles seed`` wrote there too); other local users get no access:
    the tile cache holds tiles of restricted layers, the job folder query answers."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for path in _tree(folder):
            stat = os.lstat(path)
            if (stat.st_uid, stat.st_gid) != (user.uid, user.gid):
                os.chown(path, user.uid, user.gid, follow_symlinks=False)
        folder.chmod(0o700)


def share_env_file(user: ServingUser, env_file: Path = Path(".env")) -> None:
    """``.env`` (read by every settings class, also in uvicorn's worker processes) stays owned
    by root and becomes readable by the user's group only: it holds what the server needs,
    such as the password in DATABASE_URL, and nothing else on the machine may read it."""
    if env_file.is_file():
        os.chown(env_file, 0, user.gid)
        env_file.chmod(0o640)


def check_can_run(user: ServingUser) -> None:
    """Start Python as the user and import the app: the user must read the project, .venv
    and the interpreter (not the case, for instance, for a Python installed under /root)."""
    command = [sys.executable, "-c", "import api.app"]
    try:
        result = subprocess.run(
            command,
            user=user.uid,
            group=user.gid,
            extra_groups=user.groups,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        lines = result.stderr.strip().splitlines()
        detail = None if result.returncode == 0 else (lines[-1] if lines else "no output")
    except PermissionError as exc:
        detail = str(exc)
    if detail is not None:
        raise IocError(
            f"The user '{user.name}' cannot run ioc ({detail}): it must read {PROJECT_ROOT} and "
            f"the Python of .venv ({sys.base_prefix}); run 'make setup' as root, or install ioc "
            "and Python where that user can read them, or set IOC_RUN_AS."
        )


def drop(user: ServingUser) -> None:
    """Become the user for good: groups first, the uid last (after it there is no way back)."""
    os.setgroups(list(user.groups))
    os.setgid(user.gid)
    os.setuid(user.uid)  # as root this sets the real, effective and saved uid
    os.environ.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise IocError("Dropping root privileges did not hold: refusing to serve.")
