/*
 * fuzz_http.c: libFuzzer target over api/'s request parser, limits, router
 * and handlers (with the in-memory service). The first input byte picks how
 * the rest is cut into reads, so requests split at every boundary are
 * exercised; the limits are small so they are hit often.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/http_int.h"
#include "api/memservice.h"

static http_service *svc;
static http_server srv;

static void setup(void)
{
    svc = http_memservice_new();
    http_memservice_put(svc, "hot", 1000000, 0, 0);
    http_memservice_put(svc, "lim", 1000000, 2, 0);
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.admin_token = "tok";
    cfg.max_uri = 256;
    cfg.max_headers = 1024;
    cfg.max_body = 2048;
    cfg.read_buf = 1024;
    cfg.max_pipeline_out = 4096;
    http__server_init(&srv, &cfg, svc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (svc == NULL)
        setup();
    if (size == 0)
        return 0;
    size_t chunk = (size_t)(data[0] % 64) + 1;
    if (data[0] >= 192)
        chunk = size;        /* all at once */
    data++;
    size--;
    http_conn c;
    http__conn_init(&c, &srv);
    size_t pos = 0;
    while (pos < size) {
        size_t room;
        char *p = http__conn_read_ptr(&c, &room);
        if (p == NULL)
            break;
        size_t n = size - pos < chunk ? size - pos : chunk;
        if (n > room)
            n = room;
        memcpy(p, data + pos, n);
        c.in_len += n;
        pos += n;
        int st;
        do {
            st = http__conn_process(&c);
            /* Every response starts with a status line. */
            if (c.out.len && memcmp(c.out.data, "HTTP/1.1 ", 9) != 0)
                abort();
            c.out.len = 0;
        } while (st == HTTP__FLUSH);
        if (st == HTTP__CLOSE)
            break;
    }
    http__conn_fini(&c);

    /* The router alone, on the raw bytes as a path. */
    http__match m;
    http__route_match(HTTP_GET, (const char *)data, size, &m);
    http__route_match(HTTP_PUT, (const char *)data, size, &m);
    return 0;
}
