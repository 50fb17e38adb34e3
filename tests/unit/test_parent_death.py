"""devstack's parent_death_signal: a child started with it goes when the process that
started it is killed outright (SIGKILL, no chance to stop its children); without it the child
is left behind, an orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, wait_for

PARENT = r"""
import signal, sys, time
from devstack import Process
sig = None if sys.argv[1] == "none" else int(sys.argv[1])
child = Process("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"],
                new_session=True, parent_death_signal=sig)
print(child.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
@pytest.mark.parametrize("sig", [signal.SIGTERM, None], ids=["SIGTERM", "none"])
def test_a_child_goes_with_a_parent_killed_outright_only_when_asked(sig):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, "none" if sig is None else
                               str(int(sig))], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert alive(child)
        parent.kill()  # SIGKILL: the parent stops nothing
        parent.wait(timeout=10)
        if sig is None:
            time.sleep(2)
            assert alive(child), "without parent_death_signal the child outlives its parent"
        else:
            wait_for(lambda: not alive(child), 10, 0.05, "the child to go with its parent")
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
