/*
 * response.c: formats responses straight into the connection's output
 * buffer: status line, Server, Date, Content-Type, Content-Length,
 * X-Request-Id, extra headers, Retry-After on a 429 or 503 whose extra
 * headers lack one, Connection when needed, then the body (omitted for
 * HEAD).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api/http_int.h"

const char *http__reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default:  return "Unknown";
    }
}

/* Writes the IMF-fixdate of the current second (29 bytes) to dst. The
 * per-thread cache is read and written only here, in a function that never
 * switches coroutines (rt.h's rule on thread-local state). */
__attribute__((noinline)) static void put_date(char *dst)
{
    static __thread time_t last;
    static __thread char cache[32];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(cache, sizeof cache, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    memcpy(dst, cache, 29);
}

static inline char *cpy(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}
#define CPY(o, lit) cpy((o), (lit), sizeof(lit) - 1)

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The client's X-Request-Id when it is short and printable, else NULL. */
static const char *client_request_id(const http_conn *c, size_t *len)
{
    for (int i = 0; c->req != NULL && i < c->req->nhdr; i++) {
        const http__hdr *h = &c->req->hdr[i];
        if (h->name_len != 12 ||
            strncasecmp(c->in + c->req_start + h->name_off, "x-request-id",
                        12) != 0)
            continue;
        const char *v = c->in + c->req_start + h->val_off;
        if (h->val_len == 0 || h->val_len > 64)
            return NULL;
        for (uint32_t k = 0; k < h->val_len; k++)
            if (v[k] < 0x21 || v[k] > 0x7e)
                return NULL;
        *len = h->val_len;
        return v;
    }
    return NULL;
}

size_t http__request_id(http_conn *c, char *out)
{
    size_t idlen;
    const char *cid = client_request_id(c, &idlen);
    if (cid) {
        memcpy(out, cid, idlen);
        return idlen;
    }
    if (c->id_hex_len == 0)
        c->id_hex_len = (uint8_t)http__fmt_u64_hex(c->id_hex, c->id);
    char *o = cpy(out, c->id_hex, c->id_hex_len);
    *o++ = '-';
    o += http__fmt_u64_hex(o, c->seq);
    return (size_t)(o - out);
}

/* True when the extra header lines carry Retry-After. */
static int has_retry_after(const char *extra, size_t len)
{
    static const char name[] = "retry-after:";
    const size_t n = sizeof name - 1;
    for (size_t i = 0; i + n <= len; i++)
        if ((i == 0 || extra[i - 1] == '\n') && strncasecmp(extra + i, name, n) == 0)
            return 1;
    return 0;
}

void http__reply(http_conn *c, int route, int status, const char *ctype,
                 const char *extra, size_t extra_len, const char *body,
                 size_t body_len)
{
    /* Every 429 and 503 tells the client when to come back: 1 s unless
     * the caller said otherwise (docs/api.md, "Retry-After"). */
    int retry_after = (status == 503 || status == 429) &&
                      !has_retry_after(extra, extra_len);
    size_t need = 340 + extra_len + body_len;
    if (kit_buf_reserve(&c->out, need) < 0) {
        c->closing = 1;
        return;
    }
    /* A stop that began while the handler ran: this is the last answer. */
    if (!c->closing &&
        atomic_load_explicit(&c->srv->draining, memory_order_relaxed))
        c->closing = 1;
    char *o = c->out.data + c->out.len;
    if (status == 200) {
        o = CPY(o, "HTTP/1.1 200 OK\r\n");
    } else {
        const char *reason = http__reason(status);
        o = CPY(o, "HTTP/1.1 ");
        o += http__fmt_i64(o, status);
        *o++ = ' ';
        o = cpy(o, reason, strlen(reason));
        o = CPY(o, "\r\n");
    }
    o = CPY(o, "Server: cachesvc\r\nDate: ");
    put_date(o);
    o += 29;
    o = CPY(o, "\r\nContent-Type: ");
    o = cpy(o, ctype, strlen(ctype));
    o = CPY(o, "\r\nContent-Length: ");
    o += http__fmt_i64(o, (int64_t)body_len);
    o = CPY(o, "\r\nX-Request-Id: ");
    o += http__request_id(c, o);
    o = CPY(o, "\r\n");
    if (extra_len)
        o = cpy(o, extra, extra_len);
    if (retry_after)
        o = CPY(o, "Retry-After: 1\r\n");
    if (c->closing)
        o = CPY(o, "Connection: close\r\n");
    else if (c->parser.http_major == 1 && c->parser.http_minor == 0)
        o = CPY(o, "Connection: keep-alive\r\n");
    o = CPY(o, "\r\n");
    if (body_len && c->parser.method != HTTP_HEAD)
        o = cpy(o, body, body_len);
    c->out.len = (size_t)(o - c->out.data);
    c->t_reply = now_ns();
    http__metrics_request(route, status, c->t_reply - c->t_read);
}

void http__reply_error(http_conn *c, int route, int status, const char *code,
                       const char *detail, const char *extra_hdrs)
{
    kit_buf *b = &c->body;
    kit_buf_reset(b);
    int rc = kit_buf_puts(b, "{\"error\":");
    rc |= http_buf_json_str(b, code, strlen(code));
    rc |= kit_buf_puts(b, ",\"detail\":");
    rc |= http_buf_json_str(b, detail, strlen(detail));
    rc |= kit_buf_puts(b, "}");
    if (rc < 0) {
        c->closing = 1;
        return;
    }
    http__reply(c, route, status, "application/json", extra_hdrs,
                extra_hdrs ? strlen(extra_hdrs) : 0, b->data, b->len);
}
