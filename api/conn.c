/*
 * conn.c: one connection's input side. Bytes are appended to c->in; the
 * parser (Node's http-parser) walks them and is paused at the end of every
 * request, which is then answered into c->out before parsing goes on, so
 * pipelined requests are answered in order and written together.
 *
 * No runtime calls here: the I/O loop (server.c) reads and writes, and the
 * unit tests drive these functions directly.
 *
 * Offsets in c->req are relative to c->req_start, the first byte of the
 * current request; compaction moves [req_start, in_len) to the front of the
 * buffer, which keeps them valid. Every data callback's pointer lies inside
 * c->in because the parser only ever sees c->in.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/http_int.h"

static inline http_conn *conn_of(http_parser *p)
{
    return (http_conn *)p->data;
}

static inline uint32_t off_of(http_conn *c, const char *at)
{
    return (uint32_t)((size_t)(at - c->in) - c->req_start);
}

static void req_reset(http__req *r)
{
    r->url_off = r->url_len = 0;
    r->body_off = r->body_len = 0;
    r->hdr_begin = 0;
    r->nhdr = 0;
    r->last_was_value = 1;
    r->headers_done = 0;
    r->done = 0;
    r->expect_continue = 0;
    r->continue_sent = 0;
    r->err_status = 0;
}

static int fail(http_conn *c, int status)
{
    c->req.err_status = status;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    req_reset(&conn_of(p)->req);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn *c = conn_of(p);
    http__req *r = &c->req;
    if (r->url_len == 0)
        r->url_off = off_of(c, at);
    r->url_len += (uint32_t)len;
    if (r->url_len > c->srv->cfg.max_uri)
        return fail(c, 414);
    return 0;
}

/* Headers over the limit are measured from the first header byte to the
 * furthest byte the parser has shown us. */
static int header_limit(http_conn *c, const char *at, size_t len)
{
    size_t end = (size_t)off_of(c, at) + len;
    if (end - c->req.hdr_begin > c->srv->cfg.max_headers)
        return fail(c, 431);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    http_conn *c = conn_of(p);
    http__req *r = &c->req;
    if (r->last_was_value) {
        if (r->nhdr == HTTP__MAX_HDRS)
            return fail(c, 431);
        if (r->nhdr == 0)
            r->hdr_begin = off_of(c, at);
        http__hdr *h = &r->hdr[r->nhdr++];
        h->name_off = off_of(c, at);
        h->name_len = (uint32_t)len;
        h->val_off = h->name_off;
        h->val_len = 0;
        r->last_was_value = 0;
    } else {
        r->hdr[r->nhdr - 1].name_len += (uint32_t)len;
    }
    return header_limit(c, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    http_conn *c = conn_of(p);
    http__req *r = &c->req;
    if (r->nhdr == 0)
        return fail(c, 400);
    http__hdr *h = &r->hdr[r->nhdr - 1];
    if (!r->last_was_value) {
        h->val_off = off_of(c, at);
        h->val_len = (uint32_t)len;
        r->last_was_value = 1;
    } else {
        h->val_len += (uint32_t)len;
    }
    return header_limit(c, at, len);
}

static int hdr_is(const http_conn *c, const http__hdr *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n &&
           strncasecmp(c->in + c->req_start + h->name_off, name, n) == 0;
}

static int on_headers_complete(http_parser *p)
{
    http_conn *c = conn_of(p);
    http__req *r = &c->req;
    r->headers_done = 1;
    if ((p->flags & F_CHUNKED) || p->uses_transfer_encoding)
        return fail(c, 411);
    if (p->content_length != ULLONG_MAX &&
        p->content_length > c->srv->cfg.max_body)
        return fail(c, 413);
    for (int i = 0; i < r->nhdr; i++) {
        const http__hdr *h = &r->hdr[i];
        if (!hdr_is(c, h, "expect"))
            continue;
        const char *v = c->in + c->req_start + h->val_off;
        if (h->val_len == 12 && strncasecmp(v, "100-continue", 12) == 0)
            r->expect_continue = 1;
        else
            return fail(c, 417);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    http_conn *c = conn_of(p);
    if (c->req.body_len == 0)
        c->req.body_off = off_of(c, at);
    c->req.body_len += (uint32_t)len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn_of(p)->req.done = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

int http__conn_init(http_conn *c, http_server *srv)
{
    memset(c, 0, sizeof *c);
    c->srv = srv;
    c->fd = -1;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    req_reset(&c->req);
    return 0;
}

void http__conn_fini(http_conn *c)
{
    free(c->in);
    c->in = NULL;
    http_buf_free(&c->out);
    http_buf_free(&c->body);
}

/* Moves the current request to the front of the buffer. */
static void compact(http_conn *c)
{
    if (c->req_start == 0)
        return;
    size_t keep = c->in_len - c->req_start;
    if (keep)
        memmove(c->in, c->in + c->req_start, keep);
    c->in_len = keep;
    c->parsed -= c->req_start;
    c->req_start = 0;
}

char *http__conn_read_ptr(http_conn *c, size_t *room)
{
    if (c->in == NULL) {
        c->in_cap = c->srv->cfg.read_buf;
        if ((c->in = malloc(c->in_cap)) == NULL)
            return NULL;
    }
    if (c->in_cap - c->in_len < 1024 && c->req_start > 0)
        compact(c);
    if (c->in_len == c->in_cap) {
        /* One request fills the buffer: grow it. The parser's limits bound
         * a request, so this stops at roughly uri + headers + body. */
        size_t cap = c->in_cap * 2;
        char *p = realloc(c->in, cap);
        if (p == NULL)
            return NULL;
        c->in = p;
        c->in_cap = cap;
    }
    *room = c->in_cap - c->in_len;
    return c->in + c->in_len;
}

int http__conn_in_request(const http_conn *c)
{
    return c->in_len > c->req_start;
}

int http__conn_headers_done(const http_conn *c)
{
    return c->req.headers_done;
}

static const char *limit_code(int status)
{
    switch (status) {
    case 411: return "length_required";
    case 413: return "payload_too_large";
    case 414: return "uri_too_long";
    case 417: return "expectation_failed";
    case 431: return "headers_too_large";
    default:  return "bad_request";
    }
}

static const char *limit_detail(int status)
{
    switch (status) {
    case 411: return "chunked request bodies are not supported; send Content-Length";
    case 413: return "the request body is over the limit";
    case 414: return "the request line is over the limit";
    case 417: return "only Expect: 100-continue is supported";
    case 431: return "the request headers are over the limit";
    default:  return "malformed HTTP request";
    }
}

int http__conn_process(http_conn *c)
{
    const http_server_config *cfg = &c->srv->cfg;
    for (;;) {
        if (c->parsed < c->in_len && !c->req.done) {
            size_t n = http_parser_execute(&c->parser, &settings,
                                           c->in + c->parsed,
                                           c->in_len - c->parsed);
            c->parsed += n;
        }
        if (c->req.done) {
            http_parser_pause(&c->parser, 0);
            if (!http_should_keep_alive(&c->parser) || c->parser.upgrade ||
                atomic_load_explicit(&c->srv->draining, memory_order_relaxed))
                c->closing = 1;
            http__dispatch(c);
            c->seq++;
            req_reset(&c->req);
            c->req_start = c->parsed;
            if (c->closing)
                return HTTP__CLOSE;
            if (c->out.len >= cfg->max_pipeline_out)
                return HTTP__FLUSH;
            continue;
        }
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e != HPE_OK || c->parsed < c->in_len) {
            int st = c->req.err_status ? c->req.err_status : 400;
            http__metrics_count(HTTP__C_parse_errors);
            c->closing = 1;
            http__reply_error(c, HTTP__R_NONE, st, limit_code(st),
                              limit_detail(st), NULL);
            return HTTP__CLOSE;
        }
        break;
    }
    /* Everything buffered is parsed; a request may be partly here. */
    if (c->req_start == c->in_len) {
        c->in_len = c->parsed = c->req_start = 0;
    } else if (!c->req.headers_done) {
        size_t pending = c->in_len - c->req_start;
        if (pending > cfg->max_uri + cfg->max_headers + 256) {
            int st = c->req.nhdr ? 431 : 414;
            http__metrics_count(HTTP__C_parse_errors);
            c->closing = 1;
            http__reply_error(c, HTTP__R_NONE, st, limit_code(st),
                              limit_detail(st), NULL);
            return HTTP__CLOSE;
        }
    } else if (c->req.expect_continue && !c->req.continue_sent) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (http_buf_append(&c->out, cont, sizeof cont - 1) < 0)
            return HTTP__CLOSE;
        c->req.continue_sent = 1;
    }
    return HTTP__MORE;
}
