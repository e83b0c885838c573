/*
 * echo_uring_ref: a C reference echo server on io_uring, for bench/echo.py.
 *
 *   echo_uring_ref HOST PORT      (PORT 0: pick a free port)
 *
 * Design: one thread, one ring, raw system calls (io_uring_setup,
 * io_uring_enter, mmap of the rings; no liburing).  Every connection has one
 * operation in flight at a time: IORING_OP_RECV into its 64 KiB buffer, then
 * IORING_OP_SEND of what arrived (resubmitted for the rest after a short
 * send), then the next RECV.  The listener has one IORING_OP_ACCEPT in
 * flight, re-armed after each completion; SIGTERM/SIGINT arrive as an
 * IORING_OP_READ on a signalfd.  Each loop turn submits the queued SQEs and
 * waits for at least one completion in the same io_uring_enter, then reaps
 * every CQE.  The ring asks for SINGLE_ISSUER | DEFER_TASKRUN (what
 * trio-uring asks for) and falls back to no flags on older kernels.
 *
 * This is the io_uring floor next to echo_ref.c's epoll floor: the kernel
 * work of a completion-based echo with no interpreter on top.
 *
 * Protocol (the same as bench/echo_server.py): print "PORT <n>" once the
 * listener is bound, serve until SIGTERM/SIGINT, print "STATS <json>", exit 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ENTRIES 4096
#define BUF_SIZE 65536

enum kind { K_ACCEPT = 1, K_SIGNAL = 2, K_RECV = 3, K_SEND = 4 };

struct conn {
    int fd;
    unsigned len; /* bytes received, to send back */
    unsigned off; /* bytes of them sent */
    char buf[BUF_SIZE];
};

static struct {
    int fd;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    unsigned to_submit;
} ring;

static unsigned long long n_accepted, n_recv, n_send, n_enter;

static void die(const char *what, int err)
{
    fprintf(stderr, "%s: %s\n", what, strerror(err));
    exit(1);
}

static void setup_ring(void)
{
    struct io_uring_params p;
    unsigned flag_sets[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, 0};
    int fd = -1;
    for (unsigned i = 0; i < 2 && fd < 0; i++) {
        memset(&p, 0, sizeof p);
        p.flags = flag_sets[i];
        fd = (int)syscall(__NR_io_uring_setup, ENTRIES, &p);
    }
    if (fd < 0)
        die("io_uring_setup", errno);
    ring.fd = fd;
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single && cq_size > sq_size)
        sq_size = cq_size;
    char *sq = mmap(NULL, sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                    fd, IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED)
        die("mmap sq", errno);
    char *cq = sq;
    if (!single) {
        cq = mmap(NULL, cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                  IORING_OFF_CQ_RING);
        if (cq == MAP_FAILED)
            die("mmap cq", errno);
    }
    ring.sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe),
                     PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                     IORING_OFF_SQES);
    if (ring.sqes == MAP_FAILED)
        die("mmap sqes", errno);
    ring.sq_head = (unsigned *)(sq + p.sq_off.head);
    ring.sq_tail = (unsigned *)(sq + p.sq_off.tail);
    ring.sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    ring.sq_array = (unsigned *)(sq + p.sq_off.array);
    ring.cq_head = (unsigned *)(cq + p.cq_off.head);
    ring.cq_tail = (unsigned *)(cq + p.cq_off.tail);
    ring.cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
}

static int enter(unsigned to_submit, unsigned min_complete)
{
    n_enter++;
    int r = (int)syscall(__NR_io_uring_enter, ring.fd, to_submit, min_complete,
                         IORING_ENTER_GETEVENTS, NULL, 0);
    return r < 0 ? -errno : r;
}

static struct io_uring_sqe *get_sqe(void)
{
    unsigned tail = *ring.sq_tail;
    unsigned head = __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE);
    if (tail - head >= ENTRIES) { /* full: hand what we have to the kernel */
        int r = enter(ring.to_submit, 0);
        if (r < 0)
            die("io_uring_enter (flush)", -r);
        ring.to_submit = 0;
    }
    unsigned idx = tail & *ring.sq_mask;
    struct io_uring_sqe *sqe = &ring.sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    ring.sq_array[idx] = idx;
    __atomic_store_n(ring.sq_tail, tail + 1, __ATOMIC_RELEASE);
    ring.to_submit++;
    return sqe;
}

static uint64_t tag(void *ptr, enum kind k) { return (uint64_t)(uintptr_t)ptr | (uint64_t)k; }

static void queue_recv(struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = c->fd;
    sqe->addr = (uint64_t)(uintptr_t)c->buf;
    sqe->len = BUF_SIZE;
    sqe->user_data = tag(c, K_RECV);
}

static void queue_send(struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = c->fd;
    sqe->addr = (uint64_t)(uintptr_t)(c->buf + c->off);
    sqe->len = c->len - c->off;
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = tag(c, K_SEND);
}

static void queue_accept(int ls)
{
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_ACCEPT;
    sqe->fd = ls;
    sqe->accept_flags = SOCK_CLOEXEC;
    sqe->user_data = K_ACCEPT;
}

static void queue_signal_read(int sfd, struct signalfd_siginfo *si)
{
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_READ;
    sqe->fd = sfd;
    sqe->addr = (uint64_t)(uintptr_t)si;
    sqe->len = sizeof *si;
    sqe->user_data = K_SIGNAL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ls < 0)
        die("socket", errno);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "bad IPv4 address %s\n", argv[1]);
        return 2;
    }
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind", errno);
    if (listen(ls, 1024) < 0)
        die("listen", errno);
    socklen_t len = sizeof sa;
    if (getsockname(ls, (struct sockaddr *)&sa, &len) < 0)
        die("getsockname", errno);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        die("sigprocmask", errno);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd", errno);
    static struct signalfd_siginfo si;

    setup_ring();
    queue_accept(ls);
    queue_signal_read(sfd, &si);
    printf("PORT %u\n", (unsigned)ntohs(sa.sin_port));
    fflush(stdout);

    int running = 1;
    while (running) {
        int r = enter(ring.to_submit, 1);
        if (r < 0) {
            if (r == -EINTR || r == -EAGAIN || r == -EBUSY)
                continue;
            die("io_uring_enter", -r);
        }
        ring.to_submit -= (unsigned)r < ring.to_submit ? (unsigned)r : ring.to_submit;
        unsigned head = *ring.cq_head;
        unsigned tail = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            struct io_uring_cqe *cqe = &ring.cqes[head & *ring.cq_mask];
            uint64_t ud = cqe->user_data;
            int res = cqe->res;
            enum kind k = (enum kind)(ud & 7);
            struct conn *c = (struct conn *)(uintptr_t)(ud & ~(uint64_t)7);
            switch (k) {
            case K_ACCEPT:
                if (res >= 0) {
                    setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = malloc(sizeof *nc); /* 16-byte aligned: low bits free for the tag */
                    if (!nc) {
                        close(res);
                    } else {
                        nc->fd = res;
                        nc->len = nc->off = 0;
                        n_accepted++;
                        queue_recv(nc);
                    }
                }
                queue_accept(ls);
                break;
            case K_SIGNAL:
                running = 0;
                break;
            case K_RECV:
                if (res <= 0) {
                    close(c->fd);
                    free(c);
                    break;
                }
                n_recv++;
                c->len = (unsigned)res;
                c->off = 0;
                queue_send(c);
                break;
            case K_SEND:
                if (res < 0) {
                    close(c->fd);
                    free(c);
                    break;
                }
                n_send++;
                c->off += (unsigned)res;
                if (c->off < c->len)
                    queue_send(c);
                else
                    queue_recv(c);
                break;
            }
        }
        __atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
    }
    printf("STATS {\"accepted\": %llu, \"recv\": %llu, \"send\": %llu, "
           "\"enters\": %llu}\n",
           n_accepted, n_recv, n_send, n_enter);
    fflush(stdout);
    return 0;
}
