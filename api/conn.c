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
 *
 * http-parser is lenient where a proxy in front may read a message another
 * way (RFC 9112 section 11.2, request smuggling), so the header section is
 * checked again as bytes once it is complete (header_section_ok): one space
 * in the request line, CRLF line ends, token names with the colon right
 * after them, no obs-fold, no control bytes in values, one Content-Length
 * of digits only, and Transfer-Encoding only as "chunked" in HTTP/1.1
 * without Content-Length. A chunked body is joined in place: each chunk's
 * data is moved down over the framing before it, which the parser has
 * already read, so the handlers see one contiguous body.
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
    r->hdr_begin = r->hdr_end = r->trailer_begin = 0;
    r->nhdr = 0;
    r->last_was_value = 1;
    r->headers_done = 0;
    r->chunked = 0;
    r->done = 0;
    r->expect_continue = 0;
    r->continue_sent = 0;
    r->err_status = 0;
    r->err_detail = NULL;
}

static int fail(http_conn *c, int status)
{
    c->req->err_status = status;
    return -1;
}

static int fail_why(http_conn *c, int status, const char *detail)
{
    c->req->err_detail = detail;
    return fail(c, status);
}

static int on_message_begin(http_parser *p)
{
    req_reset(conn_of(p)->req);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn *c = conn_of(p);
    http__req *r = c->req;
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
    if (end - c->req->hdr_begin > c->srv->cfg.max_headers)
        return fail(c, 431);
    return 0;
}

/* Trailer fields (after the last chunk) are read and dropped; their section
 * has the same size limit as the header section. */
static int trailer(http_conn *c, const char *at, size_t len)
{
    http__req *r = c->req;
    if (r->trailer_begin == 0)
        r->trailer_begin = off_of(c, at);
    if ((size_t)off_of(c, at) + len - r->trailer_begin > c->srv->cfg.max_headers)
        return fail_why(c, 431, "the trailer section is over the limit");
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    http_conn *c = conn_of(p);
    http__req *r = c->req;
    if (r->headers_done)
        return trailer(c, at, len);
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
        http__hdr *h = &r->hdr[r->nhdr - 1];
        if (off_of(c, at) != h->name_off + h->name_len)
            return fail_why(c, 400, "malformed header name");
        h->name_len += (uint32_t)len;
    }
    return header_limit(c, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    http_conn *c = conn_of(p);
    http__req *r = c->req;
    if (r->headers_done)
        return trailer(c, at, len);
    if (r->nhdr == 0)
        return fail(c, 400);
    http__hdr *h = &r->hdr[r->nhdr - 1];
    if (!r->last_was_value) {
        h->val_off = off_of(c, at);
        h->val_len = (uint32_t)len;
        r->last_was_value = 1;
    } else {
        /* A second piece that does not follow the first is a line folded
         * onto the next (obs-fold), which RFC 9112 lets a server refuse. */
        if (off_of(c, at) != h->val_off + h->val_len)
            return fail_why(c, 400, "obs-fold (a header line continued on the next) is not accepted");
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

/* tchar of RFC 9110 section 5.6.2. */
static int is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return 1;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* Walks the request line's tail and the header section as bytes, checking
 * that they are exactly what the parser's callbacks described: one space
 * and "HTTP/d.d" CRLF after the target; each field a token, the colon, OWS,
 * a value without control bytes, OWS, CRLF; then the empty line. On
 * success sets r->hdr_end. Returns NULL or why the section is refused. */
static const char *header_section_ok(http_conn *c)
{
    http__req *r = c->req;
    const char *b = c->in + c->req_start;
    size_t avail = c->in_len - c->req_start;
    size_t pos = (size_t)r->url_off + r->url_len;
#define NEED(n) do { if (pos + (n) > avail) return "malformed header section"; } while (0)
    NEED(11);
    if (memcmp(b + pos, " HTTP/", 6) != 0 || b[pos + 6] < '0' || b[pos + 6] > '9' ||
        b[pos + 7] != '.' || b[pos + 8] < '0' || b[pos + 8] > '9' ||
        b[pos + 9] != '\r' || b[pos + 10] != '\n')
        return "malformed request line (one space before the version, CRLF after it)";
    pos += 11;
    for (int i = 0; i < r->nhdr; i++) {
        const http__hdr *h = &r->hdr[i];
        if (h->name_off != pos || h->name_len == 0)
            return "malformed header line";
        for (uint32_t k = 0; k < h->name_len; k++)
            if (!is_tchar((unsigned char)b[h->name_off + k]))
                return "a header name with a byte that is not a token character "
                       "(whitespace before the colon is not accepted)";
        pos += h->name_len;
        NEED(1);
        if (b[pos] != ':')
            return "a header name must be followed by ':'";
        pos++;
        while (pos < avail && (b[pos] == ' ' || b[pos] == '\t'))
            pos++;
        if (h->val_len > 0) {
            if (h->val_off != pos)
                return "obs-fold (a header line continued on the next) is not accepted";
            for (uint32_t k = 0; k < h->val_len; k++) {
                unsigned char ch = (unsigned char)b[h->val_off + k];
                if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                    return "a control byte in a header value";
            }
            pos += h->val_len;
        }
        while (pos < avail && (b[pos] == ' ' || b[pos] == '\t'))
            pos++;
        NEED(2);
        if (b[pos] != '\r' || b[pos + 1] != '\n')
            return "header lines must end with CRLF";
        pos += 2;
    }
    NEED(2);
    if (b[pos] != '\r' || b[pos + 1] != '\n')
        return "the header section must end with an empty line";
#undef NEED
    r->hdr_end = (uint32_t)(pos + 2);
    return NULL;
}

/* Content-Length: 1 to 18 digits, once. Returns 1 when present, 0 when
 * absent, -1 when malformed or repeated. */
static int content_length_ok(http_conn *c)
{
    int seen = 0;
    for (int i = 0; i < c->req->nhdr; i++) {
        const http__hdr *h = &c->req->hdr[i];
        if (!hdr_is(c, h, "content-length"))
            continue;
        if (seen++)
            return -1;
        const char *v = c->in + c->req_start + h->val_off;
        size_t n = h->val_len;
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        if (n == 0 || n > 18)
            return -1;
        for (size_t k = 0; k < n; k++)
            if (v[k] < '0' || v[k] > '9')
                return -1;
    }
    return seen;
}

/* Transfer-Encoding: the codings of every such field, in order. Returns 0
 * when there is none, 1 for exactly "chunked", or fails the request: 501
 * for any other coding, 400 for an empty or repeated one. */
static int transfer_coding(http_conn *c)
{
    int chunked = 0, other = 0, empty = 0, any = 0;
    for (int i = 0; i < c->req->nhdr; i++) {
        const http__hdr *h = &c->req->hdr[i];
        if (!hdr_is(c, h, "transfer-encoding"))
            continue;
        any = 1;
        const char *v = c->in + c->req_start + h->val_off;
        const char *end = v + h->val_len;
        while (v <= end) {
            const char *comma = memchr(v, ',', (size_t)(end - v));
            const char *e = comma ? comma : end;
            const char *a = v, *z = e;
            while (a < z && (*a == ' ' || *a == '\t'))
                a++;
            while (z > a && (z[-1] == ' ' || z[-1] == '\t'))
                z--;
            if (a == z)
                empty = 1;
            else if (z - a == 7 && strncasecmp(a, "chunked", 7) == 0)
                chunked++;
            else
                other = 1;
            v = e + 1;
        }
    }
    if (!any)
        return 0;
    if (other)
        return fail_why(c, 501, "only the chunked transfer coding is supported");
    if (empty || chunked != 1)
        return fail_why(c, 400, "Transfer-Encoding must be exactly \"chunked\"");
    return 1;
}

static int on_headers_complete(http_parser *p)
{
    http_conn *c = conn_of(p);
    http__req *r = c->req;
    r->headers_done = 1;
    const char *why = header_section_ok(c);
    if (why != NULL)
        return fail_why(c, 400, why);
    int cl = content_length_ok(c);
    if (cl < 0)
        return fail_why(c, 400, "Content-Length must be one field of 1 to 18 digits");
    int te = 0;
    for (int i = 0; i < r->nhdr && !te; i++)
        te = hdr_is(c, &r->hdr[i], "transfer-encoding");
    if (te) {
        if (p->http_major == 1 && p->http_minor == 0)
            return fail_why(c, 400, "Transfer-Encoding is not accepted in an HTTP/1.0 request");
        if (cl)
            return fail_why(c, 400, "a request must not have both Content-Length and Transfer-Encoding");
        if ((te = transfer_coding(c)) < 0)
            return -1;
        if (!(p->flags & F_CHUNKED))
            return fail_why(c, 400, "Transfer-Encoding must be exactly \"chunked\"");
        r->chunked = 1;
    }
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
    http__req *r = c->req;
    if (r->body_len == 0) {
        r->body_off = off_of(c, at);
    } else if (r->chunked) {
        /* Join this chunk to the ones before it, over the framing between
         * them (already parsed, so never read again). */
        if ((size_t)r->body_len + len > c->srv->cfg.max_body)
            return fail(c, 413);
        char *dst = c->in + c->req_start + r->body_off + r->body_len;
        if (dst != at)
            memmove(dst, at, len);
    }
    r->body_len += (uint32_t)len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn_of(p)->req->done = 1;
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
    return 0;
}

void http__conn_fini(http_conn *c)
{
    http__conn_release(c);
}

void http__conn_release(http_conn *c)
{
    free(c->req);   /* the read buffer too */
    c->req = NULL;
    c->in = NULL;
    c->in_len = c->in_cap = c->parsed = c->req_start = 0;
    kit_buf_free(&c->out);
    kit_buf_free(&c->body);
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
    if (c->req == NULL) {
        /* One block: the request's bookkeeping, then the read buffer. */
        c->in_cap = c->srv->cfg.read_buf;
        if ((c->req = malloc(sizeof *c->req + c->in_cap)) == NULL)
            return NULL;
        req_reset(c->req);
        c->in = (char *)(c->req + 1);
    }
    if (c->in_cap - c->in_len < 1024 && c->req_start > 0)
        compact(c);
    if (c->in_len == c->in_cap) {
        /* One request fills the buffer: grow it. The parser's limits bound
         * a request, so this stops at roughly uri + headers + body. */
        size_t cap = c->in_cap * 2;
        http__req *p = realloc(c->req, sizeof *c->req + cap);
        if (p == NULL)
            return NULL;
        c->req = p;
        c->in = (char *)(p + 1);
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
    return c->req != NULL && c->req->headers_done;
}

static const char *limit_code(int status)
{
    switch (status) {
    case 413: return "payload_too_large";
    case 414: return "uri_too_long";
    case 417: return "expectation_failed";
    case 431: return "headers_too_large";
    case 501: return "not_implemented";
    default:  return "bad_request";
    }
}

static const char *limit_detail(int status)
{
    switch (status) {
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
    if (c->req == NULL)
        return HTTP__MORE;   /* nothing read since the buffers went back */
    for (;;) {
        if (c->parsed < c->in_len && !c->req->done) {
            size_t n = http_parser_execute(&c->parser, &settings,
                                           c->in + c->parsed,
                                           c->in_len - c->parsed);
            c->parsed += n;
        }
        if (c->req->done) {
            http_parser_pause(&c->parser, 0);
            if (!http_should_keep_alive(&c->parser) || c->parser.upgrade ||
                atomic_load_explicit(&c->srv->draining, memory_order_relaxed))
                c->closing = 1;
            http__dispatch(c);
            c->seq++;
            req_reset(c->req);
            c->req_start = c->parsed;
            if (c->closing)
                return HTTP__CLOSE;
            if (c->out.len >= cfg->max_pipeline_out)
                return HTTP__FLUSH;
            continue;
        }
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e != HPE_OK || c->parsed < c->in_len) {
            int st = c->req->err_status ? c->req->err_status : 400;
            http__metrics_count(HTTP__C_parse_errors);
            c->closing = 1;
            /* A refusal of ours carries its own detail; one of the
             * parser's says what the parser found. */
            const char *detail = c->req->err_detail;
            if (detail == NULL && c->req->err_status == 0 && e != HPE_OK &&
                e != HPE_PAUSED)
                detail = http_errno_description(e);
            http__reply_error(c, HTTP__R_NONE, st, limit_code(st),
                              detail ? detail : limit_detail(st), NULL);
            return HTTP__CLOSE;
        }
        break;
    }
    /* Everything buffered is parsed; a request may be partly here. */
    if (c->req_start == c->in_len) {
        c->in_len = c->parsed = c->req_start = 0;
    } else if (!c->req->headers_done) {
        size_t pending = c->in_len - c->req_start;
        if (pending > cfg->max_uri + cfg->max_headers + 256) {
            int st = c->req->nhdr ? 431 : 414;
            http__metrics_count(HTTP__C_parse_errors);
            c->closing = 1;
            http__reply_error(c, HTTP__R_NONE, st, limit_code(st),
                              limit_detail(st), NULL);
            return HTTP__CLOSE;
        }
    } else if (c->req->chunked &&
               c->in_len - c->req_start - c->req->hdr_end > cfg->max_body + cfg->max_headers) {
        /* Chunk-size lines, extensions and trailers are bounded together:
         * the body limit plus the header limit, whatever the chunk sizes. */
        http__metrics_count(HTTP__C_parse_errors);
        c->closing = 1;
        http__reply_error(c, HTTP__R_NONE, 413, limit_code(413),
                          "the chunked body with its framing is over the limit", NULL);
        return HTTP__CLOSE;
    } else if (c->req->expect_continue && !c->req->continue_sent) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (kit_buf_append(&c->out, cont, sizeof cont - 1) < 0)
            return HTTP__CLOSE;
        c->req->continue_sent = 1;
    }
    return HTTP__MORE;
}
