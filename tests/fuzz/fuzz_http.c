/*
 * fuzz_http.c: libFuzzer target over api/'s whole request path: parser,
 * limits, router, JSON bodies and handlers (with the in-memory service),
 * run on a coroutine of the production stack size (fuzz_co.h). The first
 * input byte picks how the rest is cut into reads, so requests split at
 * every boundary are exercised; the limits are small so they are hit often.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/http_int.h"
#include "tests/fuzz/fuzz_co.h"
#include "tests/support/http_feed.h"

struct input {
    const uint8_t *data;
    size_t size;
};

static void run(void *arg)
{
    const uint8_t *data = ((struct input *)arg)->data;
    size_t size = ((struct input *)arg)->size;
    size_t chunk = (size_t)(data[0] % 64) + 1;
    if (data[0] >= 192)
        chunk = size;        /* all at once */
    data++;
    size--;
    http_conn c;
    http__conn_init(&c, fuzz_server(1));
    http_feed(&c, data, size, chunk);
    http__conn_fini(&c);

    /* The router alone, on the raw bytes as a path. */
    http__match m;
    http__route_match(HTTP_GET, (const char *)data, size, &m);
    http__route_match(HTTP_PUT, (const char *)data, size, &m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    struct input in = {data, size};
    fuzz_on_coroutine(run, &in);
    return 0;
}
