"""cffi build script: compiles csrc/ring.c into ``trio_uring._ring_ffi`` (API mode).

Used by setup.py (``cffi_modules``); needs only a C compiler and the kernel UAPI
headers (``<linux/io_uring.h>``), no liburing.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

CDEF = """
#define TU_MAX_OPCODE 256
struct tu_ring {
    int fd;
    unsigned setup_flags;
    unsigned features;
    unsigned sq_entries;
    unsigned cq_entries;
    uint64_t submitted[256];
    uint64_t enters;
    ...;
};
int tu_ring_init(struct tu_ring *r, unsigned entries, unsigned cq_entries,
                 unsigned flags);
void tu_ring_exit(struct tu_ring *r);
int tu_probe(struct tu_ring *r, unsigned char *out, int n);
int tu_prep(struct tu_ring *r, uint8_t opcode, uint8_t sqe_flags, int32_t fd,
            uint64_t addr, uint32_t len, uint64_t off, uint32_t op_flags,
            uint64_t user_data, uint16_t buf_index, uint32_t file_index,
            uint16_t ioprio);
int tu_prep_poll(struct tu_ring *r, int32_t fd, uint32_t mask,
                 uint64_t user_data);
int tu_wait(struct tu_ring *r, int64_t timeout_ns, int64_t *out,
            unsigned max);
int tu_prep_timeout(struct tu_ring *r, uint8_t opcode, uint8_t sqe_flags,
                    int64_t ns, uint32_t count, uint32_t timeout_flags,
                    uint64_t user_data);
int tu_unprep(struct tu_ring *r, int position, uint64_t user_data);
int tu_is_queued(struct tu_ring *r, int position, uint64_t user_data);
unsigned tu_sq_pending(struct tu_ring *r);
int tu_enter(struct tu_ring *r, unsigned min_complete, int64_t timeout_ns);
unsigned tu_cq_ready(struct tu_ring *r);
int tu_cq_overflowed(struct tu_ring *r);
int tu_harvest(struct tu_ring *r, int64_t *out, unsigned max);
void *tu_pbuf_ring_alloc(unsigned entries);
void tu_pbuf_ring_free(void *ring, unsigned entries);
int tu_pbuf_ring_register(struct tu_ring *r, void *ring, unsigned entries,
                          uint16_t bgid);
int tu_pbuf_ring_unregister(struct tu_ring *r, uint16_t bgid);
void tu_pbuf_ring_push(void *ring, unsigned entries, uint64_t addr,
                       uint32_t len, uint16_t bid);
int tu_register_sparse_files(struct tu_ring *r, unsigned nr);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "trio_uring._ring_ffi",
    '#include "ring.h"',
    sources=[str((HERE / "ring.c").relative_to(HERE.parent))],
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
