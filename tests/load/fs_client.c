/*
 * fs_client.c: a minimal HTTP/1.1 keep-alive client on the runtime, one
 * request in flight per connection, responses parsed with http-parser.
 */
#include "fs.h"

#include <errno.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "runtime/rt.h"

struct fs_conn {
    fs_target t;
    int fd;
    http_parser p;
    char *head;          /* request line and headers */
    size_t head_cap;
    const char *body;    /* response body: into rbuf, or own_body */
    size_t body_len;
    char *own_body;      /* a body that spans reads is copied here */
    size_t own_cap;
    char field[32];
    size_t field_len;
    int hdr_xcache;      /* header parse state, see on_header_field */
    char xcache[16];
    size_t xcache_len;
    int done;
    int keep_alive;
    int oom;
    char rbuf[16384];
};

fs_conn *fs_conn_new(const fs_target *t)
{
    fs_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->t = *t;
    c->fd = -1;
    return c;
}

int fs_conn_dial(fs_conn *c, int64_t deadline)
{
    if (c->fd >= 0)
        return 0;
    int fd = rt_dial_tcp(c->t.host, c->t.port, deadline);
    if (fd < 0)
        return fd;
    c->fd = fd;
    return 0;
}

void fs_conn_close(fs_conn *c)
{
    if (c->fd >= 0) {
        rt_close(c->fd);
        c->fd = -1;
    }
}

void fs_conn_free(fs_conn *c)
{
    if (c == NULL)
        return;
    fs_conn_close(c);
    free(c->head);
    free(c->own_body);
    free(c);
}

/* Header state in hdr_xcache: 0 while reading a field name, 1 inside an
 * X-Cache value, 2 inside another value. A field callback after a value
 * starts the next header. */
static int on_header_field(http_parser *p, const char *at, size_t n)
{
    fs_conn *c = p->data;
    if (c->hdr_xcache != 0) {
        c->field_len = 0;
        c->hdr_xcache = 0;
    }
    size_t room = sizeof(c->field) - 1 - c->field_len;
    size_t k = n < room ? n : room;
    memcpy(c->field + c->field_len, at, k);
    c->field_len += k;
    c->field[c->field_len] = '\0';
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    fs_conn *c = p->data;
    if (c->hdr_xcache == 0)
        c->hdr_xcache = c->field_len == 7 && strncasecmp(c->field, "x-cache", 7) == 0 ? 1 : 2;
    if (c->hdr_xcache == 1) {
        size_t room = sizeof(c->xcache) - 1 - c->xcache_len;
        size_t k = n < room ? n : room;
        memcpy(c->xcache + c->xcache_len, at, k);
        c->xcache_len += k;
        c->xcache[c->xcache_len] = '\0';
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    fs_conn *c = p->data;
    c->hdr_xcache = 0;
    c->field_len = 0;
    return 0;
}

/* Makes room for n more body bytes in own_body. Returns 0, or 1 (the
 * parser's "stop") on ENOMEM. */
static int own_reserve(fs_conn *c, size_t n)
{
    size_t need = c->body_len + n + 1;
    if (need <= c->own_cap)
        return 0;
    size_t cap = need < 2048 ? 4096 : 2 * need;
    char *b = realloc(c->own_body, cap);
    if (b == NULL) {
        c->oom = 1;
        return 1;
    }
    c->own_body = b;
    c->own_cap = cap;
    return 0;
}

/* Moves a body that still points into rbuf to own_body, before the next
 * read overwrites rbuf. */
static int own_body(fs_conn *c)
{
    if (c->body == c->own_body || c->body_len == 0)
        return 0;
    size_t n = c->body_len;
    c->body_len = 0;
    if (own_reserve(c, n))
        return -ENOMEM;
    memcpy(c->own_body, c->body, n);
    c->body = c->own_body;
    c->body_len = n;
    return 0;
}

/* The body of a small answer arrives in one read: it is used where it lies
 * in rbuf. Only a body spread over several reads is copied. */
static int on_body(http_parser *p, const char *at, size_t n)
{
    fs_conn *c = p->data;
    if (c->body_len == 0) {
        c->body = at;
        c->body_len = n;
        return 0;
    }
    if (c->body != c->own_body && c->body + c->body_len == at) {
        c->body_len += n;   /* the next piece of the same read */
        return 0;
    }
    if (own_body(c) < 0 || own_reserve(c, n))
        return 1;
    c->body = c->own_body;   /* own_reserve may have moved it */
    memcpy(c->own_body + c->body_len, at, n);
    c->body_len += n;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    fs_conn *c = p->data;
    c->done = 1;
    c->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static int tier_of(const char *x, size_t n)
{
    if (n == 5 && strncasecmp(x, "local", 5) == 0)
        return FS_TIER_LOCAL;
    if (n == 5 && strncasecmp(x, "redis", 5) == 0)
        return FS_TIER_REDIS;
    if (n == 2 && strncasecmp(x, "db", 2) == 0)
        return FS_TIER_DB;
    return FS_TIER_NONE;
}

static int build_head(fs_conn *c, const char *method, const char *path, const char *extra,
                      size_t body_len, size_t *out_len)
{
    for (;;) {
        int n;
        if (body_len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0)
            n = snprintf(c->head, c->head_cap,
                         "%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n%s\r\n",
                         method, path, c->t.host, c->t.port, body_len, extra);
        else
            n = snprintf(c->head, c->head_cap, "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n", method,
                         path, c->t.host, c->t.port, extra);
        if (n < 0)
            return -EINVAL;
        if ((size_t)n < c->head_cap) {
            *out_len = (size_t)n;
            return 0;
        }
        size_t cap = (size_t)n + 256;
        char *h = realloc(c->head, cap);
        if (h == NULL)
            return -ENOMEM;
        c->head = h;
        c->head_cap = cap;
    }
}

/* send() and recv() straight on the socket: for a socket they skip the
 * iovec import and the vfs layer of writev()/readv() (the service answers
 * the same way). The runtime's calls take over when the socket would
 * block. */
static ssize_t send_all(int fd, const char *p, size_t n, int64_t deadline)
{
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w == (ssize_t)n)
        return w;
    if (w < 0) {
        if (errno != EAGAIN && errno != EINTR)
            return -errno;
        w = 0;
    }
    ssize_t r = rt_write(fd, p + w, n - (size_t)w, deadline);
    return r < 0 ? r : (ssize_t)n;
}

static ssize_t recv_some(int fd, char *buf, size_t n, int64_t deadline)
{
    for (;;) {
        ssize_t r = recv(fd, buf, n, 0);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        int w = rt_wait_fd(fd, RT_READ, deadline);
        if (w < 0)
            return w;
    }
}

/* One write of the request and the read of its response on c, dialling
 * first when c has no socket. *got is set when any response byte arrived. */
static int exchange(fs_conn *c, const struct iovec *iov, int iovcnt, int64_t deadline,
                    int64_t *t_sent, fs_http_resp *out, int *got)
{
    int rc;
    *got = 0;
    if ((rc = fs_conn_dial(c, deadline)) < 0)
        return rc;
    http_parser_init(&c->p, HTTP_RESPONSE);
    c->p.data = c;
    c->body = NULL;
    c->body_len = 0;
    c->done = 0;
    c->oom = 0;
    c->keep_alive = 0;
    c->hdr_xcache = 0;
    c->field_len = 0;
    c->xcache_len = 0;
    c->xcache[0] = '\0';

    *t_sent = rt_now_ns();
    ssize_t w = iovcnt == 1 ? send_all(c->fd, iov[0].iov_base, iov[0].iov_len, deadline)
                            : rt_writev(c->fd, iov, iovcnt, deadline);
    if (w < 0) {
        rc = (int)w;
        goto fail;
    }
    /* The answer is almost never there right after the write: park until
     * the socket is readable rather than pay for a read that fails with
     * EAGAIN (a third of the tester's syscalls). The netpoll is edge-
     * triggered and the previous answer was read to its end, so the edge
     * of this answer's first bytes is still to come, or already recorded. */
    int wr = rt_wait_fd(c->fd, RT_READ, deadline);
    if (wr < 0) {
        rc = wr;
        goto fail;
    }
    for (int first = 1; !c->done; first = 0) {
        ssize_t n = recv_some(c->fd, c->rbuf, sizeof(c->rbuf), deadline);
        if (n < 0) {
            rc = (int)n;
            goto fail;
        }
        if (n > 0)
            *got = 1;
        /* A small answer read whole in one go (nearly every one): read
         * where it lies, without http-parser. */
        fs_http_simple_resp sr;
        if (first && n > 0 && fs_http_simple(c->rbuf, (size_t)n, &sr)) {
            out->status = sr.status;
            out->tier = sr.xcache ? tier_of(sr.xcache, sr.xcache_len) : FS_TIER_NONE;
            out->body = sr.body;
            out->body_len = sr.body_len;
            if (!sr.keep_alive)
                fs_conn_close(c);
            return 0;
        }
        http_parser_execute(&c->p, &settings, c->rbuf, (size_t)n);   /* n == 0: EOF */
        if (c->oom) {
            rc = -ENOMEM;
            goto fail;
        }
        if (c->done)
            break;
        if (HTTP_PARSER_ERRNO(&c->p) != HPE_OK) {
            rc = -EPROTO;
            goto fail;
        }
        if (n == 0) {
            rc = -ECONNRESET;
            goto fail;
        }
        if (own_body(c) < 0) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    out->status = (int)c->p.status_code;
    out->tier = c->xcache_len ? tier_of(c->xcache, c->xcache_len) : FS_TIER_NONE;
    out->body = c->body ? c->body : "";
    out->body_len = c->body_len;
    if (!c->keep_alive)
        fs_conn_close(c);
    return 0;
fail:
    fs_conn_close(c);
    return rc;
}

/* Sends iov and reads the answer; an idempotent request is sent once more
 * on a new connection when a kept-alive one turns out closed. */
static int send_request(fs_conn *c, const struct iovec *iov, int iovcnt, int idempotent,
                        int64_t deadline, int64_t *t_sent, fs_http_resp *out)
{
    int got, reused = c->fd >= 0;
    int rc = exchange(c, iov, iovcnt, deadline, t_sent, out, &got);
    /* A kept-alive connection the server closed while idle fails before any
     * answer; like browsers, send an idempotent request once more on a new
     * connection. A POST is left to the caller (buys retry with their key). */
    if ((rc == -ECONNRESET || rc == -EPIPE) && reused && !got && idempotent)
        rc = exchange(c, iov, iovcnt, deadline, t_sent, out, &got);
    return rc;
}

int fs_conn_request(fs_conn *c, const char *method, const char *path, const char *extra_headers,
                    const char *body, size_t body_len, int64_t deadline, int64_t *t_sent,
                    fs_http_resp *out)
{
    size_t head_len;
    int rc = build_head(c, method, path, extra_headers ? extra_headers : "", body_len, &head_len);
    if (rc < 0)
        return rc;
    struct iovec iov[2] = {{c->head, head_len}, {(void *)body, body_len}};
    return send_request(c, iov, body_len ? 2 : 1, strcmp(method, "POST") != 0, deadline, t_sent,
                        out);
}

int fs_conn_send(fs_conn *c, const char *req, size_t len, int idempotent, int64_t deadline,
                 int64_t *t_sent, fs_http_resp *out)
{
    struct iovec iov = {(void *)req, len};
    return send_request(c, &iov, 1, idempotent, deadline, t_sent, out);
}
