/*
 * loadgen: a small closed-loop TCP echo load generator.
 *
 *   loadgen HOST PORT CONNS MSG_SIZE DURATION_S [WARMUP_S]
 *
 * Design
 * ------
 * One thread, one epoll instance, non-blocking sockets.  Every connection
 * keeps exactly one message in flight: send MSG_SIZE bytes, wait until
 * MSG_SIZE bytes have come back, check them, send the next one.  So the
 * offered load is "as fast as the server answers", and with CONNS
 * connections there are CONNS messages outstanding at any moment.
 *
 * Each message carries its sequence number in its first bytes, so a server
 * that mixes up, duplicates or truncates data is caught (exit 6) instead of
 * being credited with a fast result.
 *
 * Phases: connect (bounded retry loop, so the server may still be starting),
 * warmup (traffic, not counted), measurement (completions counted, latency
 * recorded), then exit.  The total run time is bounded: CONNECT_TIMEOUT_S +
 * WARMUP_S + DURATION_S, plus at most one epoll_wait tick.
 *
 * Latency is the time from the first send() of a message to the recv()
 * that completes its echo, kept in a log-linear histogram (32 sub-buckets
 * per power of two of nanoseconds, about 3% resolution).
 *
 * Output: one JSON line on stdout.  Diagnostics go to stderr.
 *
 * Exit codes:
 *   0  success
 *   2  usage error (bad arguments)
 *   3  could not connect within CONNECT_TIMEOUT_S
 *   4  I/O error or peer closed a connection during the run
 *   5  no message completed during the measurement window (server stalled);
 *      the JSON line is still printed
 *   6  echoed data did not match what was sent
 *   7  out of memory or other local resource failure
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define EXIT_CONNECT 3
#define EXIT_IO 4
#define EXIT_STALLED 5
#define EXIT_CORRUPT 6
#define EXIT_RESOURCE 7

#define CONNECT_TIMEOUT_S 5.0
#define MAX_CONNS 100000
#define MAX_MSG_SIZE (16 * 1024 * 1024)
#define MAX_EVENTS 512

/* ---- latency histogram -------------------------------------------------- */

#define SUB_BITS 5
#define SUB_COUNT (1u << SUB_BITS)   /* 32 sub-buckets per power of two */
#define HIST_BUCKETS (2 * SUB_COUNT + 64 * SUB_COUNT)

static uint64_t hist[HIST_BUCKETS];
static uint64_t hist_total;
static uint64_t lat_max_ns;
static double lat_sum_ns;

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * SUB_COUNT)
        return (unsigned)v;                       /* exact below 64 ns */
    unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= SUB_BITS + 1 */
    unsigned shift = msb - SUB_BITS;                   /* >= 1 */
    unsigned sub = (unsigned)(v >> shift);             /* [32, 64) */
    return 2 * SUB_COUNT + (shift - 1) * SUB_COUNT + (sub - SUB_COUNT);
}

/* Midpoint of the values mapped to bucket idx. */
static double hist_value(unsigned idx)
{
    if (idx < 2 * SUB_COUNT)
        return (double)idx;
    unsigned rel = idx - 2 * SUB_COUNT;
    unsigned shift = rel / SUB_COUNT + 1;
    uint64_t sub = (uint64_t)(rel % SUB_COUNT) + SUB_COUNT;
    double lo = (double)(sub << shift);
    double width = (double)(1ull << shift);
    return lo + width / 2.0;
}

static void hist_record(uint64_t ns)
{
    hist[hist_index(ns)]++;
    hist_total++;
    lat_sum_ns += (double)ns;
    if (ns > lat_max_ns)
        lat_max_ns = ns;
}

/* Value (ns) at quantile q in [0, 1]; 0 when empty. */
static double hist_quantile(double q)
{
    if (hist_total == 0)
        return 0.0;
    uint64_t rank = (uint64_t)ceil(q * (double)hist_total);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank) {
            double v = hist_value(i);
            return v > (double)lat_max_ns ? (double)lat_max_ns : v;
        }
    }
    return (double)lat_max_ns;
}

/* ---- helpers ------------------------------------------------------------ */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen HOST PORT CONNS MSG_SIZE DURATION_S [WARMUP_S]\n"
            "  CONNS 1..%d, MSG_SIZE 1..%d bytes, DURATION_S > 0, "
            "WARMUP_S >= 0 (default 0)\n",
            MAX_CONNS, MAX_MSG_SIZE);
    exit(EXIT_USAGE);
}

static long parse_long(const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi)
        usage();
    return v;
}

static double parse_seconds(const char *s, double lo)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(v >= lo) || v > 86400.0)
        usage();
    return v;
}

/* ---- connections -------------------------------------------------------- */

struct conn {
    int fd;
    uint32_t sent;      /* bytes of the current message sent */
    uint32_t received;  /* bytes of the current message echoed back */
    uint64_t seq;       /* sequence number of the current message */
    uint64_t start_ns;  /* when the current message was first sent */
    int want_out;       /* EPOLLOUT currently registered */
    unsigned char *tx;  /* MSG_SIZE bytes */
    unsigned char *rx;  /* MSG_SIZE bytes */
};

static int epfd = -1;
static uint32_t msg_size;

static void die_io(const char *what, int conn_id)
{
    fprintf(stderr, "loadgen: connection %d: %s: %s\n", conn_id, what,
            strerror(errno));
    exit(EXIT_IO);
}

static void set_interest(struct conn *c, int id, int want_out)
{
    if (c->want_out == want_out)
        return;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
    ev.data.u32 = (uint32_t)id;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die_io("epoll_ctl", id);
    c->want_out = want_out;
}

static void fill_message(struct conn *c)
{
    uint64_t seq = c->seq;
    uint32_t n = msg_size < 8 ? msg_size : 8;
    for (uint32_t i = 0; i < n; i++)
        c->tx[i] = (unsigned char)(seq >> (8 * i));
}

/* Push as much of the current message as the socket takes. */
static void pump_send(struct conn *c, int id)
{
    while (c->sent < msg_size) {
        ssize_t n = send(c->fd, c->tx + c->sent, msg_size - c->sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->sent += (uint32_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_interest(c, id, 1);
            return;
        }
        die_io("send", id);
    }
    set_interest(c, id, 0);
}

static void start_message(struct conn *c, int id, uint64_t t)
{
    c->seq++;
    c->sent = 0;
    c->received = 0;
    c->start_ns = t;
    fill_message(c);
    pump_send(c, id);
}

/* One blocking-with-deadline connect attempt; returns fd, or -1 with errno. */
static int try_connect(const struct addrinfo *ai, uint64_t deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    for (;;) {
        uint64_t t = now_ns();
        if (t >= deadline) {
            close(fd);
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int ms = (int)((deadline - t) / 1000000ull) + 1;
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0)
            continue;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == 0)
            return fd;
        close(fd);
        errno = err;
        return -1;
    }
}

static int connect_with_retry(const char *host, const char *port, uint64_t deadline)
{
    int last_errno = 0;
    for (;;) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int gai = getaddrinfo(host, port, &hints, &res);
        if (gai != 0) {
            fprintf(stderr, "loadgen: cannot resolve %s:%s: %s\n", host, port,
                    gai_strerror(gai));
            exit(EXIT_CONNECT);
        }
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            int fd = try_connect(ai, deadline);
            if (fd >= 0) {
                freeaddrinfo(res);
                return fd;
            }
            /* Keep the informative error (e.g. ECONNREFUSED) over the
             * ETIMEDOUT of an attempt cut short by the deadline. */
            if (errno != ETIMEDOUT || last_errno == 0)
                last_errno = errno;
            if (last_errno == EMFILE || last_errno == ENFILE) {
                freeaddrinfo(res);
                fprintf(stderr, "loadgen: socket: %s (raise ulimit -n)\n",
                        strerror(last_errno));
                exit(EXIT_RESOURCE);
            }
        }
        freeaddrinfo(res);
        if (now_ns() >= deadline)
            break;
        /* Server not up yet (ECONNREFUSED) or backlog full: back off a bit. */
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    fprintf(stderr, "loadgen: cannot connect to %s:%s within %.1f s: %s\n", host,
            port, CONNECT_TIMEOUT_S, strerror(last_errno));
    exit(EXIT_CONNECT);
}

static void raise_fd_limit(long conns)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)conns + 64;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want <= rl.rlim_max ? want : rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7)
        usage();
    const char *host = argv[1];
    const char *port = argv[2];
    (void)parse_long(port, 1, 65535);
    long conns = parse_long(argv[3], 1, MAX_CONNS);
    msg_size = (uint32_t)parse_long(argv[4], 1, MAX_MSG_SIZE);
    double duration_s = parse_seconds(argv[5], 1e-3);
    double warmup_s = argc == 7 ? parse_seconds(argv[6], 0.0) : 0.0;

    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(conns);

    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    if (!cs) {
        fprintf(stderr, "loadgen: out of memory\n");
        return EXIT_RESOURCE;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("loadgen: epoll_create1");
        return EXIT_RESOURCE;
    }

    /* Connect phase: bounded by CONNECT_TIMEOUT_S overall. */
    uint64_t connect_deadline = now_ns() + (uint64_t)(CONNECT_TIMEOUT_S * 1e9);
    for (long i = 0; i < conns; i++) {
        struct conn *c = &cs[i];
        c->tx = malloc(msg_size);
        c->rx = malloc(msg_size);
        if (!c->tx || !c->rx) {
            fprintf(stderr, "loadgen: out of memory\n");
            return EXIT_RESOURCE;
        }
        for (uint32_t j = 0; j < msg_size; j++)
            c->tx[j] = (unsigned char)('a' + (i + j) % 26);
        c->fd = connect_with_retry(host, port, connect_deadline);
        int one = 1;
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die_io("epoll_ctl", (int)i);
    }

    uint64_t t0 = now_ns();
    uint64_t measure_start = t0 + (uint64_t)(warmup_s * 1e9);
    uint64_t measure_end = measure_start + (uint64_t)(duration_s * 1e9);
    uint64_t messages = 0;       /* completed in the measurement window */
    uint64_t total_messages = 0; /* completed since the start of warmup */

    for (long i = 0; i < conns; i++)
        start_message(&cs[i], (int)i, t0);

    struct epoll_event events[MAX_EVENTS];
    uint64_t t = t0;
    while (t < measure_end) {
        uint64_t until = t < measure_start ? measure_start : measure_end;
        int timeout_ms = (int)((until - t + 999999ull) / 1000000ull);
        int n = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) {
                t = now_ns();
                continue;
            }
            perror("loadgen: epoll_wait");
            return EXIT_IO;
        }
        t = now_ns();
        for (int k = 0; k < n; k++) {
            int id = (int)events[k].data.u32;
            struct conn *c = &cs[id];
            uint32_t ev = events[k].events;
            if ((ev & EPOLLOUT) && c->sent < msg_size)
                pump_send(c, id);
            if (!(ev & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            ssize_t r = recv(c->fd, c->rx + c->received, msg_size - c->received,
                             MSG_DONTWAIT);
            if (r == 0) {
                fprintf(stderr, "loadgen: connection %d: server closed it\n", id);
                return EXIT_IO;
            }
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    continue;
                die_io("recv", id);
            }
            c->received += (uint32_t)r;
            if (c->received > c->sent) {
                fprintf(stderr,
                        "loadgen: connection %d: got more bytes than were sent\n",
                        id);
                return EXIT_CORRUPT;
            }
            if (c->received < msg_size)
                continue;
            if (memcmp(c->rx, c->tx, msg_size) != 0) {
                fprintf(stderr,
                        "loadgen: connection %d: echo of message %llu differs "
                        "from what was sent\n",
                        id, (unsigned long long)c->seq);
                return EXIT_CORRUPT;
            }
            if (t >= measure_end)
                continue; /* past the end: stop sending, count nothing */
            total_messages++;
            if (t >= measure_start) {
                messages++;
                hist_record(t - c->start_ns);
            }
            start_message(c, id, t);
        }
    }

    double seconds = (double)(measure_end - measure_start) / 1e9;
    double mean_us = hist_total ? lat_sum_ns / (double)hist_total / 1e3 : 0.0;
    printf("{\"conns\":%ld,\"msg_size\":%u,\"seconds\":%.3f,\"warmup_s\":%.3f,"
           "\"messages\":%llu,\"total_messages\":%llu,"
           "\"msgs_per_s\":%.1f,\"p50_us\":%.1f,"
           "\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,"
           "\"mean_us\":%.1f}\n",
           conns, msg_size, seconds, warmup_s, (unsigned long long)messages,
           (unsigned long long)total_messages, (double)messages / seconds,
           hist_quantile(0.50) / 1e3, hist_quantile(0.90) / 1e3, hist_quantile(0.99) / 1e3,
           hist_quantile(0.999) / 1e3, (double)lat_max_ns / 1e3, mean_us);
    fflush(stdout);

    for (long i = 0; i < conns; i++) {
        close(cs[i].fd);
        free(cs[i].tx);
        free(cs[i].rx);
    }
    free(cs);
    close(epfd);
    if (messages == 0) {
        fprintf(stderr, "loadgen: no message completed during the measurement "
                        "window: server stalled?\n");
        return EXIT_STALLED;
    }
    return 0;
}
