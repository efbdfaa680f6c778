/*
 * fs_http.c: the tester's fast path for answers: a whole small HTTP/1.1
 * response that arrived in one read is read here without http-parser's
 * byte-by-byte state machine and callbacks (7-8 % of the tester's CPU).
 * Anything it does not recognise goes to http-parser unchanged.
 */
#include "fs.h"

#include <string.h>
#include <strings.h>

/* The header name at line[0..len) is name (lower case, nl bytes). */
static int is_name(const char *line, size_t len, const char *name, size_t nl)
{
    return len > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0;
}

/* The value of a header line after "name:", without surrounding blanks. */
static const char *value_of(const char *line, size_t len, size_t nl, size_t *vl)
{
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *vl = (size_t)(end - v);
    return v;
}

int fs_http_simple(const char *b, size_t n, fs_http_simple_resp *out)
{
    /* "HTTP/1.1 200 OK\r\n": the status line. */
    if (n < 17 || memcmp(b, "HTTP/1.1 ", 9) != 0)
        return 0;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (b[i] < '0' || b[i] > '9')
            return 0;
        status = status * 10 + (b[i] - '0');
    }
    if (b[12] != ' ' && b[12] != '\r')
        return 0;
    const char *p = memchr(b, '\n', n), *end = b + n;
    if (p == NULL || p[-1] != '\r')
        return 0;
    p++;
    int64_t clen = -1;
    int keep_alive = 1;
    out->xcache = NULL;
    out->xcache_len = 0;
    for (;;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL || nl == p || nl[-1] != '\r')
            return 0;
        size_t len = (size_t)(nl - 1 - p);
        if (len == 0) {   /* the blank line: the body follows */
            p = nl + 1;
            break;
        }
        if (*p == ' ' || *p == '\t')
            return 0;     /* a folded header line */
        size_t vl;
        const char *v;
        if (is_name(p, len, "content-length", 14)) {
            v = value_of(p, len, 14, &vl);
            if (vl == 0 || vl > 12 || clen >= 0)
                return 0;
            clen = 0;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return 0;
                clen = clen * 10 + (v[i] - '0');
            }
        } else if (is_name(p, len, "x-cache", 7)) {
            out->xcache = value_of(p, len, 7, &out->xcache_len);
        } else if (is_name(p, len, "connection", 10)) {
            v = value_of(p, len, 10, &vl);
            if (vl == 5 && strncasecmp(v, "close", 5) == 0)
                keep_alive = 0;
            else if (!(vl == 10 && strncasecmp(v, "keep-alive", 10) == 0))
                return 0;
        } else if (is_name(p, len, "transfer-encoding", 17)) {
            return 0;
        }
        p = nl + 1;
    }
    /* 1xx, 204 and 304 have no body whatever the headers say: not ours. */
    if (clen < 0 || status < 200 || status == 204 || status == 304 || end - p != clen)
        return 0;
    out->status = status;
    out->keep_alive = keep_alive;
    out->body = p;
    out->body_len = (size_t)clen;
    return 1;
}
