/*
 * server.c: the server on the runtime. One SO_REUSEPORT listener and one
 * accepting coroutine per worker, one coroutine per busy connection (none
 * for an idle one), graceful stop.
 *
 * A connection's coroutine loops: flush the responses it has, read with the
 * deadline that applies (idle between requests, header deadline while a
 * request's headers arrive, body deadline after them), then let
 * http__conn_process() answer every complete request in the buffer. Once
 * the connection is idle (nothing buffered, the socket drained) the
 * coroutine gives back the buffers, hands the connection to
 * rt_fd_await() and ends: an idle connection is its struct alone, and the
 * next request starts a new coroutine. Whichever coroutine finds the
 * connection closing frees it.
 *
 * Read deadlines are enforced by one sweeper coroutine per server, which
 * walks the connections every sweep_ns (a quarter of the shortest timeout,
 * 10-250 ms) and shuts down the reading side of those past their deadline;
 * the connection then answers 408 if a request was half read and closes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/http_int.h"
#include "runtime/rt.h"

static void conn_link(http_server *srv, http_conn *c)
{
    pthread_mutex_lock(&srv->lock);
    c->prev = NULL;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    pthread_mutex_unlock(&srv->lock);
}

static void conn_unlink(http_server *srv, http_conn *c)
{
    pthread_mutex_lock(&srv->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&srv->lock);
}

/* Writes c->out. Returns 0 or a negative errno.
 *
 * send() straight away rather than rt_write(): the socket buffer almost
 * always has room for a batch of answers, so the write deadline (a clock
 * read, and a runtime timer if we wait) is only set up once send() would
 * block. send() also skips the iovec import and vfs layer of writev(). */
static int flush(http_conn *c)
{
    if (c->out.len == 0)
        return 0;
    const char *p = c->out.data;
    size_t left = c->out.len;
    int64_t deadline = 0;
    int rc = 0;
    while (left > 0) {
        ssize_t n = send(c->fd, p, left, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            left -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            rc = -errno;
            break;
        }
        if (n == 0) {
            rc = -EIO;
            break;
        }
        if (deadline == 0)
            deadline = rt_deadline_ms(c->srv->cfg.write_timeout_ms);
        if ((rc = rt_wait_fd(c->fd, RT_WRITE, deadline)) < 0)
            break;
        rc = 0;
    }
    kit_buf_reset(&c->out);
    /* Give back the memory of an unusually large answer (an audit with
     * every order id); idle connections should stay small. */
    if (c->out.cap > 65536)
        kit_buf_free(&c->out);
    if (rc == -ETIMEDOUT)
        http__metrics_count(HTTP__C_connections_timed_out);
    return rc;
}

/* Reads what the socket holds into p with recv(), waiting for the next
 * edge first when wait_first is set (the last read left it drained) or
 * when recv() would block. Returns the bytes read, 0 at end of file, or a
 * negative errno: -EAGAIN instead of waiting when idle is set (the caller
 * then waits without a coroutine). There is no deadline: the sweeper
 * enforces it. */
static ssize_t conn_recv(http_conn *c, char *p, size_t room, int wait_first, int idle)
{
    for (;;) {
        if (wait_first) {
            int r = rt_wait_fd(c->fd, RT_READ, RT_NO_DEADLINE);
            if (r < 0)
                return r;
        }
        ssize_t n = recv(c->fd, p, room, MSG_DONTWAIT);
        if (n >= 0)
            return n;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -errno;
        if (idle && errno != EINTR)
            return -EAGAIN;
        wait_first = errno != EINTR;
    }
}

/* A connection as the server holds it: the runtime-free part and the
 * storage of the wait that starts its coroutine when it turns readable. */
typedef struct srv_conn {
    http_conn c;
    rt_await await;
} srv_conn;

static void conn_main(void *arg);

/* Frees a connection (its coroutine's last act, or the acceptor's when the
 * coroutine could not start). */
static void conn_free(srv_conn *sc)
{
    http_conn *c = &sc->c;
    http_server *srv = c->srv;
    conn_unlink(srv, c);
    rt_close(c->fd);
    http__conn_fini(c);
    free(sc);
    atomic_fetch_sub_explicit(&srv->nconns, 1, memory_order_relaxed);
    http__metrics_conns(-1);
    rt_wg_done(srv->conns_wg);
}

/* Waits for the next request of an idle connection without a coroutine:
 * its buffers are given back and conn_main starts again once the socket
 * turns readable (a request, end of file, or the shutdown of its reading
 * side by the sweeper or a stop). Returns 1 when armed (sc then belongs
 * to that coroutine), 0 when bytes are pending already, or a negative
 * errno. deadline is published for the sweeper as for any read. */
static int conn_park(srv_conn *sc, int64_t deadline)
{
    http_conn *c = &sc->c;
    http_server *srv = c->srv;
    http__conn_release(c);
    atomic_store_explicit(&c->expires, deadline, memory_order_relaxed);
    atomic_store_explicit(&c->idle, 1, memory_order_release);
    /* A stop that started before idle was published may have missed
     * this connection: look again. */
    if (atomic_load_explicit(&srv->draining, memory_order_acquire))
        return -ECANCELED;
    rt_spawn_opts o = {.name = "http-conn", .stack_size = srv->cfg.conn_stack};
    int r = rt_fd_await(&sc->await, c->fd, RT_READ, RT_NO_DEADLINE, conn_main, sc, &o);
    if (r == 0)
        return 1;
    atomic_store_explicit(&c->idle, 0, memory_order_release);
    atomic_store_explicit(&c->expires, 0, memory_order_relaxed);
    return r > 0 ? 0 : r;
}

/* A connection's coroutine. It starts when a request (or end of file)
 * arrives on an idle connection, answers what comes, and ends when the
 * connection turns idle again (conn_park) or closes. */
static void conn_main(void *arg)
{
    srv_conn *sc = arg;
    http_conn *c = &sc->c;
    http_server *srv = c->srv;
    const http_server_config *cfg = &srv->cfg;
    int64_t req_deadline = 0;
    int phase = 0;   /* 0 between requests, 1 headers, 2 body */
    int drained = 0; /* started by an edge: read at once */
    /* The connection coroutine's local pointer is its connection, for
     * http_request_id() in the service's calls. */
    *rt_co_local() = c;

    for (;;) {
        int st = http__conn_process(c);
        if (flush(c) < 0 || st == HTTP__CLOSE)
            break;
        if (st == HTTP__FLUSH)
            continue;
        /* Pick the deadline: a request's headers (and then its body) must
         * arrive within their deadline from its first byte; between
         * requests the idle timeout applies. The clock is not read here:
         * t_read is when the bytes of the current request arrived and
         * t_reply when the last answer was formatted, both read anyway. */
        int64_t deadline;
        int idle = !http__conn_in_request(c);
        if (idle) {
            phase = 0;
            if (atomic_load_explicit(&srv->draining, memory_order_acquire))
                break;
            int64_t t = c->t_reply > c->t_read ? c->t_reply : c->t_read;
            deadline = t + cfg->idle_timeout_ms * 1000000;
            /* After a short read the socket is most likely drained: wait
             * for the next request without a coroutine (the runtime keeps
             * edges that arrive while nobody waits, so none is lost). */
            if (drained) {
                *rt_co_local() = NULL;
                int r = conn_park(sc, deadline);
                if (r > 0)
                    return;   /* sc is the next coroutine's now */
                *rt_co_local() = c;
                if (r < 0)
                    break;
                drained = 0;
            }
        } else {
            if (phase == 0) {
                phase = 1;
                req_deadline = c->t_read + cfg->header_timeout_ms * 1000000;
            }
            if (phase == 1 && http__conn_headers_done(c)) {
                phase = 2;
                req_deadline = c->t_read + cfg->body_timeout_ms * 1000000;
            }
            deadline = req_deadline;
        }
        size_t room;
        char *p = http__conn_read_ptr(c, &room);
        if (p == NULL)
            break;
        atomic_store_explicit(&c->idle, idle, memory_order_release);
        /* A stop that started before idle was published may have missed
         * this connection: look again. */
        if (idle && atomic_load_explicit(&srv->draining, memory_order_acquire))
            break;
        /* Reads wait without a runtime timer (one global heap under a
         * lock, touched twice per request otherwise); the sweeper shuts
         * the socket down once `expires` has passed. */
        atomic_store_explicit(&c->expires, deadline, memory_order_relaxed);
        ssize_t n = conn_recv(c, p, room, drained, idle);
        atomic_store_explicit(&c->expires, 0, memory_order_relaxed);
        if (n == 0 && atomic_load_explicit(&c->timed_out, memory_order_acquire))
            n = -ETIMEDOUT;
        drained = n > 0 && (size_t)n < room;
        atomic_store_explicit(&c->idle, 0, memory_order_release);
        if (n == -EAGAIN) {
            drained = 1;   /* nothing there: wait without a coroutine */
            continue;
        }
        if (n <= 0) {
            if (n == -ETIMEDOUT) {
                http__metrics_count(HTTP__C_connections_timed_out);
                /* A request that stalled mid-way gets a 408 when possible. */
                if (!idle) {
                    c->closing = 1;
                    http__reply_error(c, HTTP__R_NONE, 408, "request_timeout",
                                      "the request did not arrive in time",
                                      NULL);
                    flush(c);
                }
            }
            break;
        }
        c->in_len += (size_t)n;
        c->t_read = rt_now_ns();
        /* The output buffer went back while the connection was idle: take
         * it again at about the size of the answers to what was read (a
         * small answer is roughly eight times its request), so a
         * pipelined batch is not answered through a chain of reallocs. */
        if (c->out.cap == 0) {
            size_t want = (size_t)n * 8;
            want = want < 1024 ? 1024 : want > 16384 ? 16384 : want;
            kit_buf_reserve(&c->out, want - 1);
        }
    }
    *rt_co_local() = NULL;
    conn_free(sc);
}

size_t http_request_id(char *buf, size_t cap)
{
    void **l = rt_co_local();
    http_conn *c = l != NULL ? *l : NULL;
    char id[HTTP__REQUEST_ID_MAX];
    size_t n = c != NULL ? http__request_id(c, id) : 0;
    if (cap == 0)
        return 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, id, n);
    buf[n] = '\0';
    return n;
}

#define OVERLOAD_BODY \
    "{\"error\":\"unavailable\",\"detail\":\"too many connections; retry later\"}"
static const char overload_503[] =
    "HTTP/1.1 503 Service Unavailable\r\nServer: cachesvc\r\n"
    "Content-Type: application/json\r\nContent-Length: %zu\r\n"
    "X-Request-Id: overload\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    OVERLOAD_BODY;

typedef struct acceptor_arg {
    http_server *srv;
    int lfd;
} acceptor_arg;

static void acceptor_main(void *arg)
{
    acceptor_arg *a = arg;
    http_server *srv = a->srv;
    int lfd = a->lfd;
    free(a);
    for (unsigned burst = 0;; burst++) {
        /* A flood of connections must not keep this worker from serving
         * the ones already accepted. */
        if ((burst & 15) == 15)
            rt_yield();
        int fd = rt_accept(lfd, NULL, NULL, RT_NO_DEADLINE);
        if (fd < 0) {
            if (fd == -ECANCELED || fd == -EBADF || fd == -EINVAL ||
                atomic_load(&srv->draining))
                return;
            /* -EMFILE and friends: back off instead of spinning. */
            rt_sleep(10);
            continue;
        }
        http__metrics_count(HTTP__C_connections_accepted);
        if (atomic_load_explicit(&srv->draining, memory_order_acquire)) {
            rt_close(fd);
            continue;
        }
        if (atomic_load_explicit(&srv->nconns, memory_order_relaxed) >=
            srv->cfg.max_conns) {
            http__metrics_count(HTTP__C_connections_rejected);
            /* Best effort: the socket buffer of a new connection is empty. */
            ssize_t w = send(fd, srv->overload, srv->overload_len,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            (void)w;
            rt_close(fd);
            continue;
        }
        /* Answers go out at once even when a flush is split. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        srv_conn *sc = malloc(sizeof *sc);
        if (sc == NULL) {
            rt_close(fd);
            continue;
        }
        http_conn *c = &sc->c;
        http__conn_init(c, srv);
        c->fd = fd;
        c->t_read = rt_now_ns();
        c->id = atomic_fetch_add_explicit(&srv->next_conn_id, 1,
                                          memory_order_relaxed);
        atomic_fetch_add_explicit(&srv->nconns, 1, memory_order_relaxed);
        http__metrics_conns(1);
        rt_wg_add(srv->conns_wg, 1);
        conn_link(srv, c);
        /* The first request is awaited like any other: a connection that
         * has sent nothing yet holds no coroutine. */
        int r = conn_park(sc, c->t_read + srv->cfg.idle_timeout_ms * 1000000);
        if (r == 0) {
            rt_spawn_opts o = {.name = "http-conn",
                               .stack_size = srv->cfg.conn_stack};
            r = rt_spawn_ex(NULL, conn_main, sc, &o);
        }
        if (r < 0)
            conn_free(sc);
    }
}

static void sweeper_main(void *arg)
{
    http_server *srv = arg;
    while (!atomic_load_explicit(&srv->sweep_stop, memory_order_acquire)) {
        rt_event_wait(srv->sweep_ev, rt_now_ns() + srv->sweep_ns);
        int64_t now = rt_now_ns();
        pthread_mutex_lock(&srv->lock);
        for (http_conn *c = srv->conns; c; c = c->next) {
            int64_t e = atomic_load_explicit(&c->expires, memory_order_relaxed);
            if (e && e <= now &&
                !atomic_exchange_explicit(&c->timed_out, 1, memory_order_acq_rel))
                shutdown(c->fd, SHUT_RD);
        }
        pthread_mutex_unlock(&srv->lock);
    }
}

static int64_t sweep_interval_ns(const http_server_config *cfg)
{
    int64_t ms = cfg->idle_timeout_ms;
    if (cfg->header_timeout_ms < ms)
        ms = cfg->header_timeout_ms;
    if (cfg->body_timeout_ms < ms)
        ms = cfg->body_timeout_ms;
    ms /= 4;
    if (ms < 10)
        ms = 10;
    if (ms > 250)
        ms = 250;
    return ms * 1000000;
}

/* Frees a server whose acceptors and connections are all gone. */
static void server_free(http_server *srv)
{
    if (srv->conns_wg)
        rt_wg_free(srv->conns_wg);
    if (srv->sweep_ev)
        rt_event_free(srv->sweep_ev);
    free(srv->lfd);
    free(srv->acceptors);
    http__server_fini(srv);
    free(srv);
}

int http_server_start(const http_server_config *cfg,
                      const http_service *svc, http_server **out)
{
    int rc;
    http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return -ENOMEM;
    if ((rc = http__server_init(srv, cfg, svc)) < 0) {
        free(srv);
        return rc;
    }
    srv->overload_len = (size_t)snprintf(srv->overload, sizeof srv->overload,
                                         overload_503, sizeof OVERLOAD_BODY - 1);
    /* Request ids are <connection>-<sequence> in hex; a random start makes
     * them unlikely to repeat across restarts and instances. */
    uint32_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed)
        seed = (uint32_t)rt_now_ns();
    atomic_store(&srv->next_conn_id, (uint64_t)seed << 24);
    srv->nlisten = cfg->acceptors > 0 ? cfg->acceptors : rt_workers();
    if (srv->nlisten < 1)
        srv->nlisten = 1;
    srv->lfd = calloc((size_t)srv->nlisten, sizeof *srv->lfd);
    srv->acceptors = calloc((size_t)srv->nlisten, sizeof *srv->acceptors);
    srv->conns_wg = rt_wg_new();
    srv->sweep_ev = rt_event_new();
    srv->sweep_ns = sweep_interval_ns(&srv->cfg);
    if (!srv->lfd || !srv->acceptors || !srv->conns_wg || !srv->sweep_ev) {
        rc = -ENOMEM;
        goto fail;
    }
    for (int i = 0; i < srv->nlisten; i++)
        srv->lfd[i] = -1;
    /* The first listener picks the port when 0 was asked; the others join
     * it through SO_REUSEPORT so the kernel spreads connections. */
    for (int i = 0; i < srv->nlisten; i++) {
        int fd = rt_listen_tcp(srv->cfg.host, srv->port, srv->cfg.backlog, 1);
        if (fd < 0) {
            rc = fd;
            goto fail;
        }
        srv->lfd[i] = fd;
        if (i == 0)
            srv->port = rt_local_port(fd);
    }
    for (int i = 0; i < srv->nlisten; i++) {
        acceptor_arg *a = malloc(sizeof *a);
        if (a == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
        a->srv = srv;
        a->lfd = srv->lfd[i];
        rt_spawn_opts o = {.name = "http-accept", .joinable = 1};
        if ((rc = rt_spawn_ex(&srv->acceptors[i], acceptor_main, a, &o)) < 0) {
            free(a);
            srv->acceptors[i] = NULL;
            goto fail;
        }
    }
    rt_spawn_opts so = {.name = "http-sweep", .joinable = 1};
    if ((rc = rt_spawn_ex(&srv->sweeper, sweeper_main, srv, &so)) < 0) {
        srv->sweeper = NULL;
        goto fail;
    }
    *out = srv;
    return 0;
fail:
    atomic_store(&srv->draining, 1);
    for (int i = 0; srv->lfd && i < srv->nlisten; i++)
        if (srv->lfd[i] >= 0)
            rt_close(srv->lfd[i]);
    for (int i = 0; srv->acceptors && i < srv->nlisten; i++)
        if (srv->acceptors[i])
            rt_join(srv->acceptors[i]);
    server_free(srv);
    return rc;
}

int http_server_port(const http_server *srv)
{
    return srv->port;
}

/* Shuts down the sockets of connections (only idle ones unless all). */
static void shut_conns(http_server *srv, int all)
{
    pthread_mutex_lock(&srv->lock);
    for (http_conn *c = srv->conns; c; c = c->next)
        if (all || atomic_load_explicit(&c->idle, memory_order_acquire))
            shutdown(c->fd, all ? SHUT_RDWR : SHUT_RD);
    pthread_mutex_unlock(&srv->lock);
}

int http_server_stop(http_server *srv, int64_t deadline)
{
    int rc = 0;
    atomic_store_explicit(&srv->draining, 1, memory_order_release);
    for (int i = 0; i < srv->nlisten; i++)
        rt_close(srv->lfd[i]);
    for (int i = 0; i < srv->nlisten; i++)
        rt_join(srv->acceptors[i]);
    /* Idle keep-alive connections see end of file and leave; busy ones
     * finish their batch, answer with Connection: close and leave. Poll
     * for stragglers that turned idle after the first pass. */
    for (;;) {
        shut_conns(srv, 0);
        int64_t step = rt_now_ns() + 50 * 1000000LL;
        if (step > deadline)
            step = deadline;
        if (rt_wg_wait(srv->conns_wg, step) == 0)
            break;
        if (rt_now_ns() >= deadline) {
            rc = -ETIMEDOUT;
            shut_conns(srv, 1);
            rt_wg_wait(srv->conns_wg, RT_NO_DEADLINE);
            break;
        }
    }
    atomic_store_explicit(&srv->sweep_stop, 1, memory_order_release);
    rt_event_signal(srv->sweep_ev);
    rt_join(srv->sweeper);
    server_free(srv);
    return rc;
}

int http_port_free(const char *host, int port)
{
    if (port == 0)
        return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int one = 1, r = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        r = -EADDRINUSE;
    close(fd);
    return r;
}
