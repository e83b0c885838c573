/*
 * echo_ref: the C reference echo server for bench/echo.py.
 *
 *   echo_ref HOST PORT      (PORT 0: pick a free port)
 *
 * Design: one thread, one epoll instance (level-triggered), non-blocking
 * sockets, TCP_NODELAY.  On readable: recv() up to 64 KiB, then send() it
 * back; whatever the socket does not take at once is kept in a per
 * connection buffer and the fd waits for EPOLLOUT until it is drained (a
 * closed-loop load generator never gets there, but the server stays
 * correct).  It is the floor every Python server is compared with: the same
 * system calls, no interpreter.
 *
 * Protocol (the same as bench/echo_server.py): print "PORT <n>" once the
 * listener is bound, serve until SIGTERM/SIGINT (delivered through a
 * signalfd in the same epoll set), print "STATS <json>" and exit 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define MAX_EVENTS 256

struct conn {
    int fd;
    size_t pending; /* bytes of buf not yet sent back */
    size_t off;
    char buf[BUF_SIZE];
};

static unsigned long long n_accepted, n_recv, n_send;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void close_conn(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Send what is pending; 0 when all is out, 1 when the socket is full, -1 on error. */
static int flush_conn(struct conn *c)
{
    while (c->pending) {
        ssize_t n = send(c->fd, c->buf + c->off, c->pending, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            return -1;
        }
        n_send++;
        c->off += (size_t)n;
        c->pending -= (size_t)n;
    }
    c->off = 0;
    return 0;
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
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ls < 0)
        die("socket");
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
        die("bind");
    if (listen(ls, 1024) < 0)
        die("listen");
    socklen_t len = sizeof sa;
    if (getsockname(ls, (struct sockaddr *)&sa, &len) < 0)
        die("getsockname");

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        die("sigprocmask");
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd");

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    ev.data.u64 = 0; /* 0: listener */
    if (epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) < 0)
        die("epoll_ctl listener");
    ev.data.u64 = 1; /* 1: signalfd */
    if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) < 0)
        die("epoll_ctl signalfd");

    printf("PORT %u\n", (unsigned)ntohs(sa.sin_port));
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    int running = 1;
    while (running) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            uint64_t tag = events[i].data.u64;
            if (tag == 0) {
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                            errno != ECONNABORTED)
                            perror("accept4");
                        break;
                    }
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *c = malloc(sizeof *c);
                    if (!c) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    c->pending = c->off = 0;
                    struct epoll_event cev = {.events = EPOLLIN};
                    cev.data.ptr = c;
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0) {
                        close(fd);
                        free(c);
                        continue;
                    }
                    n_accepted++;
                }
                continue;
            }
            if (tag == 1) {
                running = 0;
                continue;
            }
            struct conn *c = events[i].data.ptr;
            if (c->pending) { /* waiting for EPOLLOUT */
                int r = flush_conn(c);
                if (r < 0) {
                    close_conn(ep, c);
                } else if (r == 0) {
                    struct epoll_event cev = {.events = EPOLLIN};
                    cev.data.ptr = c;
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
                }
                continue;
            }
            ssize_t got = recv(c->fd, c->buf, BUF_SIZE, 0);
            if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                continue;
            if (got <= 0) {
                close_conn(ep, c);
                continue;
            }
            n_recv++;
            c->pending = (size_t)got;
            c->off = 0;
            int r = flush_conn(c);
            if (r < 0) {
                close_conn(ep, c);
            } else if (r == 1) {
                struct epoll_event cev = {.events = EPOLLOUT};
                cev.data.ptr = c;
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
            }
        }
    }
    printf("STATS {\"accepted\": %llu, \"recv_calls\": %llu, \"send_calls\": %llu}\n",
           n_accepted, n_recv, n_send);
    fflush(stdout);
    return 0;
}
