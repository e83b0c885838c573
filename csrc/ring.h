/*
 * trio-uring ring core: the only code that knows the io_uring memory layout.
 *
 * It sets a ring up (io_uring_setup + three mmaps), preps SQEs, submits and
 * waits in one io_uring_enter (EXT_ARG timeout), and harvests CQEs in batches
 * into plain arrays that the Python side unpacks in one call each.
 * No Python objects live here; errors come back as negative errno values.
 *
 * Threading: one thread preps and harvests at a time (trio's run thread, or in
 * guest mode the host thread and the I/O worker thread take turns, never
 * overlapping).  Nothing here locks; the Python manager guarantees that.
 */
#ifndef TRIO_URING_RING_H
#define TRIO_URING_RING_H

#include <stdint.h>

#define TU_MAX_OPCODE 256
/* CQEs whose user_data is at most this are never handed to Python: 0 marks
 * cancel requests, 1 linked timeouts (their operation's own CQE tells). */
#define TU_UD_IGNORED 1

struct tu_ring {
    int fd;
    unsigned setup_flags;
    unsigned features;
    unsigned sq_entries;
    unsigned cq_entries;

    /* submission queue */
    unsigned *sq_khead;
    unsigned *sq_ktail;
    unsigned *sq_kflags;
    unsigned *sq_array;
    unsigned sq_mask;
    unsigned sq_tail; /* our copy of the tail (== *sq_ktail after publish) */
    void *sqes;       /* struct io_uring_sqe[sq_entries] */
    void *timespecs;  /* struct __kernel_timespec[sq_entries], one per slot */

    /* completion queue */
    unsigned *cq_khead;
    unsigned *cq_ktail;
    unsigned *cq_koverflow;
    unsigned cq_mask;
    void *cqes; /* struct io_uring_cqe[cq_entries] */

    /* mappings */
    void *sq_ring_ptr;
    uint64_t sq_ring_size;
    void *cq_ring_ptr;
    uint64_t cq_ring_size;
    uint64_t sqes_size;

    /* statistics: SQEs submitted to the kernel, per opcode */
    uint64_t submitted[TU_MAX_OPCODE];
    uint64_t enters;
};

/* Create a ring.  Returns 0 or -errno (the io_uring_setup or mmap error). */
int tu_ring_init(struct tu_ring *r, unsigned entries, unsigned cq_entries,
                 unsigned flags);
/* Unmap and close.  Safe to call twice. */
void tu_ring_exit(struct tu_ring *r);
/* out[op] = 1 when the kernel supports opcode op.  Returns the number of
 * opcodes the kernel knows, or -errno. */
int tu_probe(struct tu_ring *r, unsigned char *out, int n);

/* Prepare one SQE.  Returns its SQ position (>= 0, a 31-bit wrapping
 * counter) or -EBUSY when the SQ is full: call tu_enter to flush first. */
int tu_prep(struct tu_ring *r, uint8_t opcode, uint8_t sqe_flags, int32_t fd,
            uint64_t addr, uint32_t len, uint64_t off, uint32_t op_flags,
            uint64_t user_data, uint16_t buf_index, uint32_t file_index,
            uint16_t ioprio);
/* Prepare a one-shot POLL_ADD (the hot path of wait_readable/writable). */
/* tu_prep for the common buffer op (READ, WRITE, RECV, SEND...): no SQE
 * flags, buffer group, file index or ioprio; the buffer as a pointer. */
int tu_prep_rw(struct tu_ring *r, uint8_t opcode, int32_t fd, void *buf,
               uint32_t len, uint64_t off, uint32_t op_flags,
               uint64_t user_data);
int tu_prep_poll(struct tu_ring *r, int32_t fd, uint32_t mask,
                 uint64_t user_data);
/* Prepare a TIMEOUT or LINK_TIMEOUT SQE: the timespec lives in the slot's own
 * storage until the kernel copies it during submission. */
int tu_prep_timeout(struct tu_ring *r, uint8_t opcode, uint8_t sqe_flags,
                    int64_t ns, uint32_t count, uint32_t timeout_flags,
                    uint64_t user_data);
/* Turn a prepared but not yet submitted SQE into a NOP (keeping user_data
 * and its link flags, so a chain keeps its shape and every CQE still comes).
 * Returns 0, or -1 when the kernel has already consumed that SQE. */
int tu_unprep(struct tu_ring *r, int position, uint64_t user_data);
int tu_is_queued(struct tu_ring *r, int position, uint64_t user_data);
/* SQEs prepared but not yet consumed by the kernel. */
unsigned tu_sq_pending(struct tu_ring *r);

/* Submit everything pending and, when min_complete > 0, wait for that many
 * CQEs or timeout_ns (< 0: no limit).  Always passes GETEVENTS so deferred
 * task work runs.  Returns the number of SQEs consumed, or -errno (-ETIME,
 * -EINTR, -EBUSY, -EAGAIN...). */
int tu_enter(struct tu_ring *r, unsigned min_complete, int64_t timeout_ns);

/* get_events in one call: submit what is queued and, unless timeout_ns is
 * 0 or CQEs are already waiting, wait up to timeout_ns (< 0: no limit) for
 * one; then harvest up to max CQEs into out as tu_harvest does.  Returns the
 * number harvested (> 0), 0 when the time ran out with none, -ENODATA when
 * woken without a CQE (wait again), or -errno (-EINTR: a signal;
 * -EBUSY/-EAGAIN: reap completions first). */
int tu_wait(struct tu_ring *r, int64_t timeout_ns, int64_t *out,
            unsigned max);

/* CQEs ready to harvest. */
unsigned tu_cq_ready(struct tu_ring *r);
/* Nonzero when the kernel holds overflowed CQEs (flushed by tu_enter). */
int tu_cq_overflowed(struct tu_ring *r);
/* Copy up to max CQEs out as (user_data, res, flags) triples in out[3*max]
 * (dropping those with user_data <= TU_UD_IGNORED)
 * and release them to the kernel.  When the CQ runs
 * dry while overflowed CQEs wait in the kernel, flush them and go on. */
int tu_harvest(struct tu_ring *r, int64_t *out, unsigned max);

/* Provided buffer rings (IORING_REGISTER_PBUF_RING, Linux 5.19+): page
 * aligned memory for `entries` (a power of two) buffer descriptors; push
 * hands one buffer (back) to the kernel. */
void *tu_pbuf_ring_alloc(unsigned entries);
void tu_pbuf_ring_free(void *ring, unsigned entries);
int tu_pbuf_ring_register(struct tu_ring *r, void *ring, unsigned entries,
                          uint16_t bgid);
int tu_pbuf_ring_unregister(struct tu_ring *r, uint16_t bgid);
void tu_pbuf_ring_push(void *ring, unsigned entries, uint64_t addr,
                       uint32_t len, uint16_t bid);

/* A sparse table of nr direct descriptors (IORING_REGISTER_FILES2). */
int tu_register_sparse_files(struct tu_ring *r, unsigned nr);

#endif
