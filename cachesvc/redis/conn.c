/*
 * conn.c: one pipelined connection to one node.
 *
 * Callers queue requests (rc__submit) and park on their request's event. A
 * writer coroutine per connection connects when there is work, takes every
 * queued request (up to max_batch) in one go, appends them to the in-flight
 * queue in that order and writes them with one write. A reader coroutine
 * parses replies with hiredis's redisReader and completes the in-flight
 * requests in order. The writer owns the socket: when the reader sees the
 * connection fail it only says so and leaves; the writer joins it, closes
 * the socket and fails what was in flight. A request whose caller gave up
 * (deadline) stays referenced by the connection until its reply arrives or
 * the connection fails, so nothing the connection touches is ever freed
 * under it.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cachesvc/redis/rc_int.h"
#include "kit/kit.h"

#define RC_ASKING "*1\r\n$6\r\nASKING\r\n"
#define RC_READONLY "*1\r\n$8\r\nREADONLY\r\n"
#define RC_IDLE_TICK_NS (1000LL * 1000 * 1000)
#define RC_MAX_BATCH_BYTES (256 * 1024)
#define RC_READ_BUF (64 * 1024)

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

rc__req *rc__req_new(size_t bodylen, bool asking)
{
    size_t pre = asking ? sizeof RC_ASKING - 1 : 0;
    rc__req *r = malloc(sizeof *r + pre + bodylen);

    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof *r);
    if ((r->ev = rt_event_new()) == NULL) {
        free(r);
        return NULL;
    }
    r->cmd = r->buf;
    r->body = r->buf + pre;
    r->cmdlen = pre + bodylen;
    if (asking) {
        memcpy(r->buf, RC_ASKING, pre);
        r->skip = 1;
    }
    atomic_init(&r->state, RC_REQ_PENDING);
    atomic_init(&r->refs, 1);
    return r;
}

void rc__req_unref(rc__req *r)
{
    if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    if (r->reply != NULL)
        freeReplyObject(r->reply);
    rt_event_free(r->ev);
    free(r);
}

/* Hands the outcome to the caller, unless it gave up, and drops the
 * connection's reference. Takes over reply. */
static void req_complete(rc__req *r, rc_reply *reply, int err)
{
    int expect = RC_REQ_PENDING;

    r->reply = reply;
    r->err = err;
    if (atomic_compare_exchange_strong(&r->state, &expect, RC_REQ_DONE)) {
        rt_event_signal(r->ev);
    } else if (r->reply != NULL) {
        freeReplyObject(r->reply);
        r->reply = NULL;
    }
    rc__req_unref(r);
}

int rc__wait(rc__req *r, int64_t deadline)
{
    int expect = RC_REQ_PENDING;

    if (rt_event_wait(r->ev, deadline) == 0)
        return 0;
    if (atomic_compare_exchange_strong(&r->state, &expect, RC_REQ_CANCELLED))
        return RC_ETIMEDOUT;
    /* Completed while we timed out: its signal is on its way; take it so
     * the event is clean, then use the result. */
    rt_event_wait(r->ev, RT_NO_DEADLINE);
    return 0;
}

/* Fails every request of a list (linked by next) with err. */
static void fail_list(rc__req *r, int err)
{
    while (r != NULL) {
        rc__req *next = r->next;
        r->next = NULL;
        req_complete(r, NULL, err);
        r = next;
    }
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */

int rc__conn_init(rc__conn *cn, rc__node *n)
{
    memset(cn, 0, sizeof *cn);
    cn->node = n;
    cn->fd = -1;
    if ((cn->wake = rt_event_new()) == NULL)
        return RC_ENOMEM;
    pthread_mutex_init(&cn->mu, NULL);
    return 0;
}

void rc__conn_destroy(rc__conn *cn)
{
    if (cn->wake == NULL)
        return;
    pthread_mutex_destroy(&cn->mu);
    rt_event_free(cn->wake);
    free(cn->obuf);
    cn->wake = NULL;
}

/* Sets cn->broken (from the reader) and wakes the writer. */
static void conn_set_broken(rc__conn *cn, int err)
{
    bool wake;

    pthread_mutex_lock(&cn->mu);
    cn->broken = true;
    cn->break_err = err;
    wake = cn->writer_idle;
    cn->writer_idle = false;
    pthread_mutex_unlock(&cn->mu);
    if (wake)
        rt_event_signal(cn->wake);
}

#define RC_DISPATCH_MAX 64

/* Completes the oldest in-flight requests with the n replies parsed from
 * one read, taking the lock once. Returns 0, or RC_EPROTO for a reply
 * nobody asked for (the replies are then all consumed). */
static int conn_dispatch(rc__conn *cn, void **replies, int n)
{
    rc__req *done[RC_DISPATCH_MAX];
    int k = 0, rc = 0;
    bool wake = false;

    pthread_mutex_lock(&cn->mu);
    for (int i = 0; i < n; i++) {
        rc__req *r = cn->iq_head;
        if (r == NULL) {
            freeReplyObject(replies[i]);
            rc = RC_EPROTO;
            continue;
        }
        if (r->skip > 0) {
            /* The reply to ASKING. */
            r->skip--;
            freeReplyObject(replies[i]);
            continue;
        }
        cn->iq_head = r->next;
        if (cn->iq_head == NULL)
            cn->iq_tail = NULL;
        r->next = NULL;
        r->reply = replies[i];
        done[k++] = r;
        if (r->batch_end) {
            /* A write fully answered: the writer may send the next. */
            cn->batches_out--;
            if (cn->writer_idle && cn->sq_head != NULL) {
                cn->writer_idle = false;
                wake = true;
            }
        }
    }
    pthread_mutex_unlock(&cn->mu);
    if (wake)
        rt_event_signal(cn->wake);
    if (k > 0) {
        atomic_fetch_sub_explicit(&cn->node->inflight, (uint64_t)k, memory_order_relaxed);
        if (atomic_load_explicit(&cn->node->down_backoff_ms, memory_order_relaxed) != 0)
            rc__node_mark_up(cn->node);
    }
    for (int i = 0; i < k; i++) {
        rc_reply *reply = done[i]->reply;
        done[i]->reply = NULL;
        req_complete(done[i], reply, 0);
    }
    return rc;
}

static int64_t health_ns(rc_cluster *c)
{
    return (int64_t)c->cfg.dead_timeout_ms * 1000000;
}

/* The reader coroutine: parses replies and completes requests in order, until
 * the connection fails. A request unanswered for dead_timeout_ms declares
 * the node dead (black-holed), so its connection does not hold requests
 * forever. */
static void conn_reader(void *arg)
{
    rc__conn *cn = arg;
    rc__node *n = cn->node;
    char *buf = malloc(RC_READ_BUF);
    int err = 0;

    if (buf == NULL) {
        err = RC_ENOMEM;
        goto out;
    }
    for (;;) {
        int64_t oldest, now = rt_now_ns(), dl;
        ssize_t nr;

        pthread_mutex_lock(&cn->mu);
        oldest = cn->iq_head ? cn->iq_head->sent_ns : 0;
        pthread_mutex_unlock(&cn->mu);
        dl = oldest ? oldest + health_ns(n->c) : now + RC_IDLE_TICK_NS;
        nr = rt_read(cn->fd, buf, RC_READ_BUF, dl);
        if (nr == -ETIMEDOUT) {
            pthread_mutex_lock(&cn->mu);
            oldest = cn->iq_head ? cn->iq_head->sent_ns : 0;
            pthread_mutex_unlock(&cn->mu);
            if (oldest && rt_now_ns() - oldest >= health_ns(n->c)) {
                err = RC_ETIMEDOUT;
                rc__node_mark_down(n);
                goto out;
            }
            continue;
        }
        if (nr <= 0) {
            err = nr == 0 ? RC_ECONN : (int)nr;
            goto out;
        }
        if (redisReaderFeed(cn->rd, buf, (size_t)nr) != REDIS_OK) {
            err = RC_ENOMEM;
            goto out;
        }
        for (;;) {
            void *replies[RC_DISPATCH_MAX];
            int n = 0, perr = 0;
            while (n < RC_DISPATCH_MAX) {
                void *reply = NULL;
                if (redisReaderGetReply(cn->rd, &reply) != REDIS_OK) {
                    perr = RC_EPROTO;
                    break;
                }
                if (reply == NULL)
                    break;
                replies[n++] = reply;
            }
            /* Replies parsed before a protocol error still count. */
            if ((err = conn_dispatch(cn, replies, n)) < 0 || (err = perr) < 0)
                goto out;
            if (n < RC_DISPATCH_MAX)
                break;
        }
    }
out:
    free(buf);
    pthread_mutex_lock(&cn->mu);
    if (!cn->closing)
        atomic_fetch_add_explicit(&n->errors, 1, memory_order_relaxed);
    pthread_mutex_unlock(&cn->mu);
    /* Wake a writer parked in write() and tell it to clean up. */
    shutdown(cn->fd, SHUT_RDWR);
    conn_set_broken(cn, err);
}

/* Resolves a host name to a numeric address on a blocking thread. */
struct resolve {
    const char *host;
    char out[RC_HOST_MAX];
};

static intptr_t resolve_blocking(void *arg)
{
    struct resolve *rs = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int rc;

    if (getaddrinfo(rs->host, NULL, &hints, &ai) != 0)
        return RC_EDOWN;
    rc = getnameinfo(ai->ai_addr, ai->ai_addrlen, rs->out, sizeof rs->out, NULL, 0,
                     NI_NUMERICHOST);
    freeaddrinfo(ai);
    return rc == 0 ? 0 : RC_EDOWN;
}

/* Sends one command of the connection's setup (len bytes of RESP at cmd)
 * and waits for its reply, before the reader runs. Returns 0 with *out
 * set (the caller frees it), or a transport error. */
static int conn_handshake(rc__conn *cn, const char *cmd, size_t len, int64_t deadline,
                          rc_reply **out)
{
    char buf[256];
    void *reply = NULL;
    ssize_t nr;

    *out = NULL;
    nr = rt_write(cn->fd, cmd, len, deadline);
    if (nr < 0)
        return (int)nr;
    while (reply == NULL) {
        if ((nr = rt_read(cn->fd, buf, sizeof buf, deadline)) <= 0)
            return nr == 0 ? RC_ECONN : (int)nr;
        if (redisReaderFeed(cn->rd, buf, (size_t)nr) != REDIS_OK ||
            redisReaderGetReply(cn->rd, &reply) != REDIS_OK)
            return RC_EPROTO;
    }
    *out = reply;
    return 0;
}

/* Sends AUTH [user] password and waits for +OK. Returns 0, RC_EAUTH when
 * the node refused (recorded with rc__auth_refused: the node and its
 * answer, never the command, which holds the password), or a transport
 * error. */
static int conn_auth(rc__conn *cn, int64_t deadline)
{
    rc__node *n = cn->node;
    rc_reply *reply;
    int rc;

    if ((rc = conn_handshake(cn, n->c->auth_cmd, n->c->auth_len, deadline, &reply)) < 0)
        return rc;
    if (reply->type == RC_REPLY_ERROR) {
        rc__auth_refused(n, "AUTH", reply->str, reply->len);
        rc = RC_EAUTH;
    } else if (reply->type != RC_REPLY_STATUS) {
        rc = RC_EPROTO;
    }
    freeReplyObject(reply);
    if (rc == 0)
        atomic_store(&n->auth_refused, 0);
    else if (rc == RC_EAUTH)
        atomic_store(&n->auth_refused, 1);
    return rc;
}

/* Sends READONLY and waits for +OK, before the reader runs. */
static int conn_readonly(rc__conn *cn, int64_t deadline)
{
    rc_reply *reply;
    int rc;

    if ((rc = conn_handshake(cn, RC_READONLY, sizeof RC_READONLY - 1, deadline, &reply)) < 0)
        return rc;
    /* A server without cluster support refuses READONLY: harmless. */
    rc = reply->type == RC_REPLY_ARRAY ? RC_EPROTO : 0;
    freeReplyObject(reply);
    return rc;
}

/* Connects, authenticates when a password is configured, sends READONLY
 * if replica reads are on, starts the reader. Every connection of the
 * client is opened here, so every one of them authenticates. Called by the
 * writer with cn->fd < 0. */
static int conn_open(rc__conn *cn)
{
    rc__node *n = cn->node;
    rc_cluster *c = n->c;
    int64_t deadline = rt_deadline_ms(c->cfg.connect_timeout_ms);
    const char *host = n->host;
    struct resolve rs;
    unsigned char tmp[sizeof(struct in6_addr)];
    int fd, rc;

    if (inet_pton(AF_INET, host, tmp) != 1 && inet_pton(AF_INET6, host, tmp) != 1) {
        rs.host = host;
        if ((rc = (int)rt_blocking(resolve_blocking, &rs)) < 0)
            return rc;
        host = rs.out;
    }
    if ((fd = rt_dial_tcp(host, n->port, deadline)) < 0) {
        /* Down now, whatever it answered to AUTH before. */
        atomic_store(&n->auth_refused, 0);
        return fd;
    }
    cn->fd = fd;
    if ((cn->rd = redisReaderCreate()) == NULL) {
        rc = RC_ENOMEM;
        goto fail;
    }
    if (c->auth_cmd != NULL && (rc = conn_auth(cn, deadline)) < 0)
        goto fail;
    if (c->cfg.replica_reads && !atomic_load(&c->standalone) &&
        (rc = conn_readonly(cn, deadline)) < 0)
        goto fail;
    pthread_mutex_lock(&cn->mu);
    cn->broken = false;
    pthread_mutex_unlock(&cn->mu);
    if ((rc = rt_spawn(&cn->reader, conn_reader, cn)) < 0)
        goto fail;
    return 0;
fail:
    if (cn->rd != NULL)
        redisReaderFree(cn->rd);
    cn->rd = NULL;
    rt_close(fd);
    cn->fd = -1;
    return rc;
}

/* Tears the connection down after a failure (writer only): stops the
 * reader, closes the socket, fails what was in flight with RC_ECONN (or
 * err if the reader found a cause worth telling). */
static void conn_reset(rc__conn *cn, int err)
{
    rc__req *iq;
    int64_t k = 0;

    if (cn->fd >= 0)
        shutdown(cn->fd, SHUT_RDWR);
    if (cn->reader != NULL) {
        rt_join(cn->reader);
        cn->reader = NULL;
    }
    if (cn->fd >= 0)
        rt_close(cn->fd);
    cn->fd = -1;
    if (cn->rd != NULL)
        redisReaderFree(cn->rd);
    cn->rd = NULL;
    pthread_mutex_lock(&cn->mu);
    if (err == 0)
        err = cn->break_err;
    iq = cn->iq_head;
    cn->iq_head = cn->iq_tail = NULL;
    cn->batches_out = 0;
    cn->broken = false;
    cn->break_err = 0;
    pthread_mutex_unlock(&cn->mu);
    for (rc__req *r = iq; r != NULL; r = r->next)
        k++;
    atomic_fetch_sub_explicit(&cn->node->inflight, (uint64_t)k, memory_order_relaxed);
    if (err != RC_EPROTO && err != RC_ECANCELED)
        err = RC_ECONN;
    fail_list(iq, err);
    rc__refresh_async(cn->node->c);
}

/* Takes the queued requests (all of them when closing) off cn. */
static rc__req *take_queue(rc__conn *cn)
{
    rc__req *q;

    pthread_mutex_lock(&cn->mu);
    q = cn->sq_head;
    cn->sq_head = cn->sq_tail = NULL;
    cn->sq_len = 0;
    pthread_mutex_unlock(&cn->mu);
    return q;
}

/* Writes one batch: moves up to max_batch queued requests to the in-flight
 * queue, then writes them together. Called with cn->mu held; returns with it
 * released. Returns 0 or the write's error. */
static int conn_write_batch(rc__conn *cn)
{
    KIT_ASSERT_LOCKED(&cn->mu);
    rc_cluster *c = cn->node->c;
    rc__req *first = NULL, *last = NULL, *r;
    size_t bytes = 0, k = 0;
    int64_t now = rt_now_ns();
    ssize_t nw;

    while ((r = cn->sq_head) != NULL && k < (size_t)c->cfg.max_batch &&
           (bytes == 0 || bytes + r->cmdlen <= RC_MAX_BATCH_BYTES)) {
        cn->sq_head = r->next;
        cn->sq_len--;
        r->next = NULL;
        if (atomic_load_explicit(&r->state, memory_order_relaxed) == RC_REQ_CANCELLED) {
            /* Its caller is gone and it was never sent: drop it. */
            rc__req_unref(r);
            continue;
        }
        r->written = 1;
        r->sent_ns = now;
        if (last)
            last->next = r;
        else
            first = r;
        last = r;
        bytes += r->cmdlen;
        k++;
    }
    if (cn->sq_head == NULL)
        cn->sq_tail = NULL;
    if (first != NULL) {
        last->batch_end = true;
        cn->batches_out++;
        if (cn->iq_tail)
            cn->iq_tail->next = first;
        else
            cn->iq_head = first;
        cn->iq_tail = last;
    }
    pthread_mutex_unlock(&cn->mu);
    if (k == 0)
        return 0;

    /* No reply can complete these before they are written, so reading
     * their commands here, unlocked, is safe. */
    if (bytes > cn->ocap) {
        size_t cap = cn->ocap ? cn->ocap : 16384;
        char *nb;
        while (cap < bytes)
            cap *= 2;
        if ((nb = realloc(cn->obuf, cap)) == NULL)
            return RC_ENOMEM;
        cn->obuf = nb;
        cn->ocap = cap;
    }
    bytes = 0;
    for (r = first; r != NULL; r = r->next) {
        memcpy(cn->obuf + bytes, r->cmd, r->cmdlen);
        bytes += r->cmdlen;
        if (r == last)
            break;
    }
    atomic_fetch_add_explicit(&cn->node->inflight, k, memory_order_relaxed);
    atomic_fetch_add_explicit(&cn->node->batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&cn->node->commands, k, memory_order_relaxed);
    nw = rt_write(cn->fd, cn->obuf, bytes, now + health_ns(c));
    return nw < 0 ? (int)nw : 0;
}

/* The writer coroutine: connects on demand, writes batches, resets the
 * connection when it fails, and on close fails everything left. */
static void conn_writer(void *arg)
{
    rc__conn *cn = arg;
    rc__node *n = cn->node;
    int rc;

    for (;;) {
        /* Automatic pipelining: let the coroutines that are runnable now
         * (typically those whose replies just arrived) queue their next
         * request before this batch is taken. */
        rt_yield();
        pthread_mutex_lock(&cn->mu);
        if (!cn->closing && !cn->broken &&
            (cn->sq_head == NULL ||
             (cn->fd >= 0 && cn->batches_out >= n->c->cfg.pipeline_window))) {
            /* Nothing to send, or enough writes unanswered: requests that
             * arrive meanwhile wait and go out in the next write. */
            cn->writer_idle = true;
            cn->window_full = cn->sq_head != NULL;
            pthread_mutex_unlock(&cn->mu);
            rt_event_wait(cn->wake, RT_NO_DEADLINE);
            continue;
        }
        cn->writer_idle = false;
        if (cn->closing) {
            pthread_mutex_unlock(&cn->mu);
            break;
        }
        if (cn->broken) {
            pthread_mutex_unlock(&cn->mu);
            conn_reset(cn, 0);
            continue;
        }
        if (cn->fd < 0) {
            pthread_mutex_unlock(&cn->mu);
            if ((rc = conn_open(cn)) < 0) {
                atomic_fetch_add_explicit(&n->errors, 1, memory_order_relaxed);
                /* Refused credentials: the node backs off like a down one,
                 * so it is not asked again at once, but callers learn why. */
                rc__node_mark_down(n);
                fail_list(take_queue(cn), rc == RC_EAUTH ? RC_EAUTH : RC_EDOWN);
                rc__refresh_async(n->c);
                continue;
            }
            /* The node counts as up again with its first reply, not with
             * the connect: a stopped process still completes handshakes. */
            pthread_mutex_lock(&cn->mu);
        }
        /* A failed write also ends the reader, which counts the error. */
        if ((rc = conn_write_batch(cn)) < 0)
            conn_reset(cn, RC_ECONN);
    }
    conn_reset(cn, RC_ECANCELED);
    fail_list(take_queue(cn), RC_ECANCELED);
}

int rc__submit(rc__node *n, rc__req *r)
{
    rc__conn *cn;
    bool wake, spawn = false;
    int w = rt_worker_id(), rc;

    if (rc__node_is_down(n))
        return atomic_load_explicit(&n->auth_refused, memory_order_relaxed) ? RC_EAUTH : RC_EDOWN;
    if (n->nconns == 1)
        cn = &n->conns[0];
    else if (w >= 0)
        cn = &n->conns[(unsigned)w % (unsigned)n->nconns];
    else
        cn = &n->conns[atomic_fetch_add_explicit(&n->rr, 1, memory_order_relaxed) %
                       (unsigned)n->nconns];
    pthread_mutex_lock(&cn->mu);
    if (cn->closing) {
        pthread_mutex_unlock(&cn->mu);
        return RC_ECANCELED;
    }
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    r->next = NULL;
    if (cn->sq_tail)
        cn->sq_tail->next = r;
    else
        cn->sq_head = r;
    cn->sq_tail = r;
    cn->sq_len++;
    /* A writer waiting for replies is woken by the reader instead. */
    wake = cn->writer_idle && !cn->window_full;
    if (wake)
        cn->writer_idle = false;
    if (!cn->writer_started) {
        /* The writer is started by the first request, outside the lock
         * (spawning may switch). */
        cn->writer_started = true;
        spawn = true;
    }
    pthread_mutex_unlock(&cn->mu);
    if (spawn && (rc = rt_spawn(&cn->writer, conn_writer, cn)) < 0) {
        pthread_mutex_lock(&cn->mu);
        cn->writer_started = false;
        pthread_mutex_unlock(&cn->mu);
        fail_list(take_queue(cn), rc);
        return 0;
    }
    if (wake)
        rt_event_signal(cn->wake);
    return 0;
}

void rc__conn_close(rc__conn *cn)
{
    bool wake;
    rt_co *writer;

    pthread_mutex_lock(&cn->mu);
    cn->closing = true;
    wake = cn->writer_idle;
    cn->writer_idle = false;
    writer = cn->writer;
    pthread_mutex_unlock(&cn->mu);
    if (wake)
        rt_event_signal(cn->wake);
    if (writer != NULL) {
        rt_join(writer);
        cn->writer = NULL;
    }
    fail_list(take_queue(cn), RC_ECANCELED);
}

int rc__node_exec(rc__node *n, int argc, const char **argv,
                  const size_t *argvlen, int64_t deadline, rc_reply **out)
{
    size_t len = rc__format_len(argc, argv, argvlen);
    rc__req *r = rc__req_new(len, false);
    int rc;

    *out = NULL;
    if (r == NULL)
        return RC_ENOMEM;
    rc__format(r->body, argc, argv, argvlen);
    if ((rc = rc__submit(n, r)) < 0)
        goto out;
    if ((rc = rc__wait(r, deadline)) < 0)
        goto out;
    if (r->err < 0) {
        rc = r->err;
        goto out;
    }
    *out = r->reply;
    r->reply = NULL;
out:
    rc__req_unref(r);
    return rc;
}
