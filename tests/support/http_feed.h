/*
 * http_feed.h: drives api/'s connection core without sockets, as the read
 * loop of api/server.c would: bytes go into the connection's read buffer
 * in reads of a chosen size and every complete request is answered.
 * Header-only, for the fuzz targets and the tests that drive the
 * connection core without a fixture of their own (the stack budget, the
 * allocation failures).
 */
#ifndef CACHESVC_TESTS_HTTP_FEED_H
#define CACHESVC_TESTS_HTTP_FEED_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/http_int.h"

/* Feeds data[0, size) to c in reads of at most chunk bytes (0 = as much as
 * the buffer takes), answering every complete request. With out, every
 * batch of output is appended to it (give it room first: an append that
 * allocates is an allocation of the caller's); without, each batch must
 * start with a status line (else abort(), which a fuzzer reports) and is
 * dropped. Stops at the first HTTP__CLOSE and returns the last state
 * (HTTP__MORE or HTTP__CLOSE), or -ENOMEM when the read buffer could not
 * be allocated or grown (the server closes the connection then). */
static inline int http_feed_into(http_conn *c, const void *data, size_t size, size_t chunk,
                                 kit_buf *out)
{
    const char *d = data;
    size_t pos = 0;
    int st = HTTP__MORE;
    while (pos < size) {
        size_t room;
        char *p = http__conn_read_ptr(c, &room);
        if (p == NULL)
            return -ENOMEM;
        size_t n = size - pos;
        if (chunk != 0 && n > chunk)
            n = chunk;
        if (n > room)
            n = room;
        memcpy(p, d + pos, n);
        c->in_len += n;
        pos += n;
        do {
            st = http__conn_process(c);
            if (out != NULL)
                kit_buf_append(out, c->out.data, c->out.len);
            else if (c->out.len && memcmp(c->out.data, "HTTP/1.1 ", 9) != 0)
                abort();
            c->out.len = 0;
        } while (st == HTTP__FLUSH);
        if (st == HTTP__CLOSE)
            break;
    }
    return st;
}

/* http_feed_into without collecting; a read buffer that cannot be had
 * aborts. */
static inline int http_feed(http_conn *c, const void *data, size_t size, size_t chunk)
{
    int st = http_feed_into(c, data, size, chunk, NULL);
    if (st < 0)
        abort();
    return st;
}

#endif /* CACHESVC_TESTS_HTTP_FEED_H */
