# Type stub for the C hot path of native ops (csrc/speedups.c).
from collections.abc import Callable, Generator
from typing import Any

MAX_BATCH: int

def configure(
    wait_message: type | None,
    fallback_park: Callable[[Any], Any],
    value_type: Callable[[Any], Any],
) -> None: ...

class OpCore:
    ud: int
    opcode: int
    fd: int
    watched: int
    watched2: int
    position: int
    link_position: int
    started: float
    task: Any
    manager: Any
    keep: Any
    raise_cancel: Callable[[], Any] | None
    def __init__(
        self,
        ud: int,
        opcode: int,
        fd: int,
        task: Any,
        manager: Any,
        keep: object,
        started: float,
        watched: int,
    ) -> None: ...
    def __await__(self) -> Generator[Any, Any, Any]: ...
    def send(self, value: Any) -> Any: ...

class Core:
    next_ud: int
    now: float
    deadlines: Any
    def __init__(
        self,
        ring: int,
        prep_rw: int,
        cqe_buf: int,
        batch: int,
        ops: dict[int, Any],
        fd_ops: dict[int, set[Any]],
        op_type: type[OpCore],
        manager: Any,
        run_ctx: Any,
        next_ud: int,
    ) -> None: ...
    def start_rw(
        self,
        opcode: int,
        fd: int,
        keep: object,
        addr: int,
        length: int,
        offset: int,
        op_flags: int,
    ) -> OpCore: ...
    def start_read(
        self, opcode: int, fd: int, nbytes: int, offset: int, op_flags: int
    ) -> OpCore: ...
    def new_ud(self) -> int: ...
    def dispatch(self, n: int, reschedule: Callable[[Any, Any], None]) -> None: ...
    def close(self) -> None: ...
