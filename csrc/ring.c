/*
 * trio-uring ring core.  See ring.h for the contract.
 *
 * Memory ordering follows the io_uring UAPI: the kernel publishes CQEs by a
 * store-release of the CQ tail, so we load it with acquire before reading
 * entries, and hand entries back with a store-release of the CQ head.  We
 * publish SQEs with a store-release of the SQ tail; the kernel's SQ head is
 * read with acquire before a slot is reused.
 */
#define _GNU_SOURCE
#include "ring.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <linux/time_types.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static int sys_setup(unsigned entries, struct io_uring_params *p) {
    long ret = syscall(__NR_io_uring_setup, entries, p);
    return ret < 0 ? -errno : (int)ret;
}

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete,
                     unsigned flags, void *arg, size_t argsz) {
    long ret = syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags,
                       arg, argsz);
    return ret < 0 ? -errno : (int)ret;
}

static int sys_register(int fd, unsigned opcode, void *arg, unsigned nr) {
    long ret = syscall(__NR_io_uring_register, fd, opcode, arg, nr);
    return ret < 0 ? -errno : (int)ret;
}

int tu_ring_init(struct tu_ring *r, unsigned entries, unsigned cq_entries,
                 unsigned flags) {
    struct io_uring_params p;
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    if (cq_entries) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    int fd = sys_setup(entries, &p);
    if (fd < 0)
        return fd;
    r->fd = fd;
    r->setup_flags = p.flags;
    r->features = p.features;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;

    r->sq_ring_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_ring_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single) {
        if (r->cq_ring_size > r->sq_ring_size)
            r->sq_ring_size = r->cq_ring_size;
        r->cq_ring_size = r->sq_ring_size;
    }
    void *sq = mmap(NULL, r->sq_ring_size, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED) {
        int err = -errno;
        tu_ring_exit(r);
        return err;
    }
    r->sq_ring_ptr = sq;
    void *cq = sq;
    if (!single) {
        cq = mmap(NULL, r->cq_ring_size, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
        if (cq == MAP_FAILED) {
            int err = -errno;
            tu_ring_exit(r);
            return err;
        }
    }
    r->cq_ring_ptr = cq;
    r->sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    void *sqes = mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (sqes == MAP_FAILED) {
        int err = -errno;
        tu_ring_exit(r);
        return err;
    }
    r->sqes = sqes;
    r->timespecs = calloc(p.sq_entries, sizeof(struct __kernel_timespec));
    if (!r->timespecs) {
        tu_ring_exit(r);
        return -ENOMEM;
    }

    char *sqb = sq, *cqb = cq;
    r->sq_khead = (unsigned *)(sqb + p.sq_off.head);
    r->sq_ktail = (unsigned *)(sqb + p.sq_off.tail);
    r->sq_kflags = (unsigned *)(sqb + p.sq_off.flags);
    r->sq_array = (unsigned *)(sqb + p.sq_off.array);
    r->sq_mask = *(unsigned *)(sqb + p.sq_off.ring_mask);
    r->cq_khead = (unsigned *)(cqb + p.cq_off.head);
    r->cq_ktail = (unsigned *)(cqb + p.cq_off.tail);
    r->cq_koverflow = (unsigned *)(cqb + p.cq_off.overflow);
    r->cq_mask = *(unsigned *)(cqb + p.cq_off.ring_mask);
    r->cqes = cqb + p.cq_off.cqes;
    /* Identity mapping: slot i of the array always names SQE i. */
    for (unsigned i = 0; i < p.sq_entries; i++)
        r->sq_array[i] = i;
    r->sq_tail = *r->sq_ktail;
    return 0;
}

void tu_ring_exit(struct tu_ring *r) {
    if (r->sqes) {
        munmap(r->sqes, r->sqes_size);
        r->sqes = NULL;
    }
    if (r->cq_ring_ptr && r->cq_ring_ptr != r->sq_ring_ptr)
        munmap(r->cq_ring_ptr, r->cq_ring_size);
    r->cq_ring_ptr = NULL;
    if (r->sq_ring_ptr) {
        munmap(r->sq_ring_ptr, r->sq_ring_size);
        r->sq_ring_ptr = NULL;
    }
    free(r->timespecs);
    r->timespecs = NULL;
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
}

int tu_probe(struct tu_ring *r, unsigned char *out, int n) {
    size_t len = sizeof(struct io_uring_probe) +
                 TU_MAX_OPCODE * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *probe = calloc(1, len);
    if (!probe)
        return -ENOMEM;
    int ret = sys_register(r->fd, IORING_REGISTER_PROBE, probe, TU_MAX_OPCODE);
    if (ret < 0) {
        free(probe);
        return ret;
    }
    memset(out, 0, (size_t)n);
    for (int i = 0; i < probe->ops_len && i < n; i++) {
        if (probe->ops[i].flags & IO_URING_OP_SUPPORTED)
            out[probe->ops[i].op] = 1;
    }
    ret = probe->last_op + 1;
    free(probe);
    return ret;
}

static struct io_uring_sqe *next_sqe(struct tu_ring *r, int *position) {
    unsigned head = LOAD_ACQ(r->sq_khead);
    if (r->sq_tail - head >= r->sq_entries)
        return NULL;
    *position = (int)(r->sq_tail & 0x7fffffffu);
    struct io_uring_sqe *sqe =
        (struct io_uring_sqe *)r->sqes + (r->sq_tail & r->sq_mask);
    memset(sqe, 0, sizeof(*sqe));
    return sqe;
}

static void publish(struct tu_ring *r, uint8_t opcode) {
    r->sq_tail++;
    STORE_REL(r->sq_ktail, r->sq_tail);
    r->submitted[opcode]++;
}

int tu_prep(struct tu_ring *r, uint8_t opcode, uint8_t sqe_flags, int32_t fd,
            uint64_t addr, uint32_t len, uint64_t off, uint32_t op_flags,
            uint64_t user_data, uint16_t buf_index, uint32_t file_index,
            uint16_t ioprio) {
    int position;
    struct io_uring_sqe *sqe = next_sqe(r, &position);
    if (!sqe)
        return -EBUSY;
    sqe->opcode = opcode;
    sqe->ioprio = ioprio;
    sqe->flags = sqe_flags;
    sqe->fd = fd;
    sqe->off = off;
    sqe->addr = addr;
    sqe->len = len;
    sqe->rw_flags = (__kernel_rwf_t)op_flags;
    sqe->user_data = user_data;
    sqe->buf_index = buf_index;
    sqe->file_index = file_index;
    publish(r, opcode);
    return position;
}

int tu_prep_rw(struct tu_ring *r, uint8_t opcode, int32_t fd, void *buf,
               uint32_t len, uint64_t off, uint32_t op_flags,
               uint64_t user_data) {
    int position;
    struct io_uring_sqe *sqe = next_sqe(r, &position);
    if (!sqe)
        return -EBUSY;
    sqe->opcode = opcode;
    sqe->fd = fd;
    sqe->off = off;
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    sqe->rw_flags = (__kernel_rwf_t)op_flags;
    sqe->user_data = user_data;
    publish(r, opcode);
    return position;
}

int tu_prep_poll(struct tu_ring *r, int32_t fd, uint32_t mask,
                 uint64_t user_data) {
    int position;
    struct io_uring_sqe *sqe = next_sqe(r, &position);
    if (!sqe)
        return -EBUSY;
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->poll32_events = mask;
    sqe->user_data = user_data;
    publish(r, IORING_OP_POLL_ADD);
    return position;
}

int tu_prep_timeout(struct tu_ring *r, uint8_t opcode, uint8_t sqe_flags,
                    int64_t ns, uint32_t count, uint32_t timeout_flags,
                    uint64_t user_data) {
    int position;
    struct io_uring_sqe *sqe = next_sqe(r, &position);
    if (!sqe)
        return -EBUSY;
    if (ns < 0)
        ns = 0;
    struct __kernel_timespec *ts =
        (struct __kernel_timespec *)r->timespecs + (r->sq_tail & r->sq_mask);
    ts->tv_sec = ns / 1000000000;
    ts->tv_nsec = ns % 1000000000;
    sqe->opcode = opcode;
    sqe->flags = sqe_flags;
    sqe->fd = -1;
    sqe->addr = (uint64_t)(uintptr_t)ts;
    sqe->len = 1;
    sqe->off = count;
    sqe->timeout_flags = timeout_flags;
    sqe->user_data = user_data;
    publish(r, opcode);
    return position;
}

/* The SQE at SQ position `position` if the kernel has not consumed it. */
static struct io_uring_sqe *queued_sqe(struct tu_ring *r, int position,
                                       uint64_t user_data) {
    unsigned head = LOAD_ACQ(r->sq_khead);
    unsigned pos = (unsigned)position;
    /* Compare on the same 31-bit wrapping scale as tu_prep hands out. */
    unsigned behind = ((r->sq_tail & 0x7fffffffu) - pos) & 0x7fffffffu;
    unsigned pending = r->sq_tail - head;
    if (behind == 0 || behind > pending)
        return NULL;
    struct io_uring_sqe *sqe =
        (struct io_uring_sqe *)r->sqes + ((r->sq_tail - behind) & r->sq_mask);
    return sqe->user_data == user_data ? sqe : NULL;
}

int tu_is_queued(struct tu_ring *r, int position, uint64_t user_data) {
    return queued_sqe(r, position, user_data) != NULL;
}

int tu_unprep(struct tu_ring *r, int position, uint64_t user_data) {
    struct io_uring_sqe *sqe = queued_sqe(r, position, user_data);
    if (!sqe)
        return -1;
    uint8_t link = sqe->flags & (IOSQE_IO_LINK | IOSQE_IO_HARDLINK);
    r->submitted[sqe->opcode]--;
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = IORING_OP_NOP;
    sqe->flags = link;
    sqe->fd = -1;
    sqe->user_data = user_data;
    r->submitted[IORING_OP_NOP]++;
    return 0;
}

unsigned tu_sq_pending(struct tu_ring *r) {
    return r->sq_tail - LOAD_ACQ(r->sq_khead);
}

int tu_enter(struct tu_ring *r, unsigned min_complete, int64_t timeout_ns) {
    unsigned to_submit = r->sq_tail - LOAD_ACQ(r->sq_khead);
    unsigned flags = IORING_ENTER_GETEVENTS;
    struct io_uring_getevents_arg arg;
    struct __kernel_timespec ts;
    void *argp = NULL;
    size_t argsz = 0;
    if (min_complete) {
        memset(&arg, 0, sizeof(arg));
        if (timeout_ns >= 0) {
            ts.tv_sec = timeout_ns / 1000000000;
            ts.tv_nsec = timeout_ns % 1000000000;
            arg.ts = (uint64_t)(uintptr_t)&ts;
        }
        flags |= IORING_ENTER_EXT_ARG;
        argp = &arg;
        argsz = sizeof(arg);
    }
    r->enters++;
    return sys_enter(r->fd, to_submit, min_complete, flags, argp, argsz);
}

int tu_wait(struct tu_ring *r, int64_t timeout_ns, int64_t *out,
            unsigned max) {
    unsigned ready = tu_cq_ready(r);
    if (ready || timeout_ns == 0) {
        unsigned kflags = LOAD_ACQ(r->sq_kflags);
        /* Nothing to submit, nothing posted, and (when the ring has
         * TASKRUN_FLAG) no deferred completion work pending: then entering
         * the kernel cannot produce anything, so skip the syscall. */
        if (!ready && !tu_sq_pending(r) &&
            (r->setup_flags & IORING_SETUP_TASKRUN_FLAG) &&
            !(kflags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)))
            return 0;
        if (!ready || tu_sq_pending(r)) {
            int ret = tu_enter(r, 0, 0);
            if (ret < 0 && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
                return ret;
        }
        int n = tu_harvest(r, out, max);
        /* Deferred work may queue more as it runs: a linked timeout that
         * fired cancels its operation, whose completion is the next piece
         * of work, and an enter that waits for nothing runs one batch and
         * sets TASKRUN again.  When that left nothing to hand over, run a
         * few more batches, so that a completion the kernel has already
         * decided on is seen now, not after the loop's next wait.  (Only
         * then: with completions to process, no extra system call.) */
        for (int i = 0; n == 0 && i < 4 &&
                        (r->setup_flags & IORING_SETUP_TASKRUN_FLAG) &&
                        (LOAD_ACQ(r->sq_kflags) & IORING_SQ_TASKRUN);
             i++) {
            int ret = tu_enter(r, 0, 0);
            if (ret < 0 && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
                return ret;
            n = tu_harvest(r, out, max);
        }
        return n;
    }
    int ret = tu_enter(r, 1, timeout_ns);
    if (tu_cq_ready(r) || tu_cq_overflowed(r)) {
        int n = tu_harvest(r, out, max);
        if (n)
            return n;
    }
    if (ret == -ETIME)
        return 0;
    if (ret < 0)
        return ret;
    return -ENODATA; /* woke up, but nothing was posted: wait again */
}

unsigned tu_cq_ready(struct tu_ring *r) {
    return LOAD_ACQ(r->cq_ktail) - *r->cq_khead;
}

int tu_cq_overflowed(struct tu_ring *r) {
    return (LOAD_ACQ(r->sq_kflags) & IORING_SQ_CQ_OVERFLOW) != 0;
}

int tu_harvest(struct tu_ring *r, int64_t *out, unsigned max) {
    unsigned n = 0;
    while (n < max) {
        unsigned head = *r->cq_khead;
        unsigned tail = LOAD_ACQ(r->cq_ktail);
        if (head == tail) {
            if (!tu_cq_overflowed(r))
                break;
            /* Overflowed CQEs wait in the kernel: flush them into the CQ. */
            int ret = sys_enter(r->fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);
            if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
                return n ? (int)n : ret;
            if (LOAD_ACQ(r->cq_ktail) == head)
                break;
            continue;
        }
        struct io_uring_cqe *cqes = r->cqes;
        while (head != tail && n < max) {
            struct io_uring_cqe *cqe = &cqes[head & r->cq_mask];
            head++;
            if (cqe->user_data <= TU_UD_IGNORED)
                continue; /* a cancel request's or a linked timeout's */
            out[3 * n] = (int64_t)cqe->user_data;
            out[3 * n + 1] = cqe->res;
            out[3 * n + 2] = cqe->flags;
            n++;
        }
        STORE_REL(r->cq_khead, head);
    }
    return (int)n;
}

/* --- provided buffer rings ------------------------------------------------ */

void *tu_pbuf_ring_alloc(unsigned entries) {
    size_t size = (size_t)entries * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return mem == MAP_FAILED ? NULL : mem;
}

void tu_pbuf_ring_free(void *ring, unsigned entries) {
    if (ring)
        munmap(ring, (size_t)entries * sizeof(struct io_uring_buf));
}

int tu_pbuf_ring_register(struct tu_ring *r, void *ring, unsigned entries,
                          uint16_t bgid) {
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)ring;
    reg.ring_entries = entries;
    reg.bgid = bgid;
    /* the tail lives in bufs[0].resv and starts at 0 */
    ((struct io_uring_buf_ring *)ring)->tail = 0;
    return sys_register(r->fd, IORING_REGISTER_PBUF_RING, &reg, 1);
}

int tu_pbuf_ring_unregister(struct tu_ring *r, uint16_t bgid) {
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.bgid = bgid;
    return sys_register(r->fd, IORING_UNREGISTER_PBUF_RING, &reg, 1);
}

void tu_pbuf_ring_push(void *ring, unsigned entries, uint64_t addr,
                       uint32_t len, uint16_t bid) {
    struct io_uring_buf_ring *br = ring;
    unsigned short tail = br->tail; /* only we write it */
    struct io_uring_buf *buf = &br->bufs[tail & (entries - 1)];
    buf->addr = addr;
    buf->len = len;
    buf->bid = bid;
    STORE_REL(&br->tail, (unsigned short)(tail + 1));
}

/* --- registered (direct) file table ---------------------------------------- */

int tu_register_sparse_files(struct tu_ring *r, unsigned nr) {
    struct io_uring_rsrc_register reg;
    memset(&reg, 0, sizeof(reg));
    reg.nr = nr;
    reg.flags = IORING_RSRC_REGISTER_SPARSE;
    int ret = sys_register(r->fd, IORING_REGISTER_FILES2, &reg, sizeof(reg));
    if (ret != -EINVAL)
        return ret;
    /* older kernels: a table of -1 entries */
    int *fds = malloc(nr * sizeof(int));
    if (!fds)
        return -ENOMEM;
    for (unsigned i = 0; i < nr; i++)
        fds[i] = -1;
    ret = sys_register(r->fd, IORING_REGISTER_FILES, fds, nr);
    free(fds);
    return ret;
}
