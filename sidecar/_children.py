"""Child processes that the kernel kills when their parent dies.

The parent-death signal (Linux's PR_SET_PDEATHSIG) is set by ``setpriv
--pdeathsig KILL`` in the child, which then execs the command, so no Python
runs between fork and exec. A ``preexec_fn`` would run Python there, and in a
process whose gRPC threads are live, gRPC's fork handlers can abort that child
before it execs (seen as Envoy "exiting" at once with SIGABRT in a bench).
Where setpriv is missing (not Linux, or no util-linux) the command is run as it
is, and the caller's own clean-up (process groups, ``close``) is all there is.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence


def dying_with_parent(command: Sequence[str], *setpriv_options: str) -> list[str]:
    """``command`` wrapped so that it gets SIGKILL when the process that started it dies.

    ``setpriv_options`` (for example ``--reuid=postgres``) go to the same setpriv.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is None:
        if setpriv_options:
            raise RuntimeError("setpriv (util-linux) is needed to run this as another user")
        return list(command)
    return [setpriv, *setpriv_options, "--pdeathsig=KILL", "--", *command]
