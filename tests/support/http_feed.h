/*
 * http_feed.h: drives api/'s connection core without sockets, as the read
 * loop of api/server.c would: bytes go into the connection's read buffer
 * in reads of a chosen size and every complete request is answered.
 * Header-only, for the fuzz targets and the tests that need no cmocka
 * fixture.
 */
#ifndef CACHESVC_TESTS_HTTP_FEED_H
#define CACHESVC_TESTS_HTTP_FEED_H

#include <stdlib.h>
#include <string.h>

#include "api/http_int.h"

/* Feeds data[0, size) to c in reads of at most chunk bytes (0 = as much as
 * the buffer takes), answering every complete request. Each batch of
 * output must start with a status line (else abort(), which a fuzzer
 * reports); it is then dropped. Stops at the first HTTP__CLOSE and returns
 * the last state (HTTP__MORE or HTTP__CLOSE). */
static inline int http_feed(http_conn *c, const void *data, size_t size, size_t chunk)
{
    const char *d = data;
    size_t pos = 0;
    int st = HTTP__MORE;
    while (pos < size) {
        size_t room;
        char *p = http__conn_read_ptr(c, &room);
        if (p == NULL)
            abort();
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
            if (c->out.len && memcmp(c->out.data, "HTTP/1.1 ", 9) != 0)
                abort();
            c->out.len = 0;
        } while (st == HTTP__FLUSH);
        if (st == HTTP__CLOSE)
            break;
    }
    return st;
}

#endif /* CACHESVC_TESTS_HTTP_FEED_H */
