"""Runs one launched command and takes its whole process group down if the launcher dies.

``PR_SET_PDEATHSIG`` only reaches the launcher's direct child: a shell or a script that started
children of its own would leave them orphaned when the launcher is killed with SIGKILL. So the launcher
starts every command under this guard (plain standard library, run by path: no package import, fast
start). The guard is the leader of the command's process group, gets SIGTERM when the launcher dies,
and then signals the whole group. While the launcher lives, the launcher itself signals the group and
the guard just passes the command's exit status through.

    python guard.py CMD [ARGS...]
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if not argv:
        print("guard: no command", file=sys.stderr)
        return 2
    launcher = os.getppid()
    try:  # set again here: exec kept it, but be explicit for guards started some other way
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    orphaned = False

    def on_signal(sig: int, _frame) -> None:
        nonlocal orphaned
        if os.getppid() != launcher and not orphaned:
            # the launcher is gone: nobody else will stop the group
            orphaned = True
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                os.killpg(os.getpgid(0), signal.SIGTERM)
            except OSError:
                pass
        # otherwise the launcher signalled the whole group, the command got it too: just wait

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        child = subprocess.Popen(argv)
    except OSError as e:
        print(f"guard: cannot start {argv[0]}: {e}", file=sys.stderr)
        return 127
    code = child.wait()
    if orphaned:  # give the rest of the group (the command's own children) a moment, then SIGKILL it
        time.sleep(0.5)
        try:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        except OSError:
            pass
    if code < 0:  # died of a signal: die of the same one, so the launcher reads the same status
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
