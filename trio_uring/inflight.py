"""``python -m trio_uring.inflight PID``: print a process's in-flight io_uring ops."""

from __future__ import annotations

import sys

from ._inspect import main

if __name__ == "__main__":
    sys.exit(main())
