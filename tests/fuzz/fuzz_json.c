/*
 * fuzz_json.c: libFuzzer target over request bodies. Each input is a body:
 * it is read by the body reader alone (whose answer is checked against
 * what it promises: members inside the buffer, unique names, well-formed
 * UTF-8 without NUL in every string), then sent as the body of a
 * decrement, an item write and a configuration write through the whole
 * request path (parser, router, handlers, the in-memory service) on a
 * coroutine of the production stack size (fuzz_co.h), with the default
 * body limit, so nesting as deep as a 64 KiB body allows is tried.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http_int.h"
#include "tests/fuzz/fuzz_co.h"
#include "tests/support/http_feed.h"

static int utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        if (k == 0 || i + k > n || c == 0)
            return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k;
    }
    return 1;
}

static void check_reader(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return;
    memcpy(buf, data, size);
    http__jobj o;
    if (http__json_object(buf, size, &o) == 0) {
        if (o.n < 0 || o.n > HTTP__JSON_MAX_MEMBERS)
            abort();
        for (int i = 0; i < o.n; i++) {
            const http__jmember *m = &o.m[i];
            if (m->name < buf || m->name + m->name_len > buf + size ||
                !utf8_ok((const unsigned char *)m->name, m->name_len))
                abort();
            if (m->type == HTTP__J_STRING &&
                (m->str < buf || m->str + m->str_len > buf + size ||
                 !utf8_ok((const unsigned char *)m->str, m->str_len)))
                abort();
            for (int j = 0; j < i; j++)
                if (o.m[j].name_len == m->name_len &&
                    memcmp(o.m[j].name, m->name, m->name_len) == 0)
                    abort();
        }
    } else if (o.err == NULL || o.err_at > size) {
        abort();
    }
    free(buf);
}

struct input {
    const uint8_t *data;
    size_t size;
};

static void run(void *arg)
{
    const struct input *in = arg;
    static const char *const heads[] = {
        "POST /v1/items/hot/decrement HTTP/1.1\r\nIdempotency-Key: k1\r\n",
        "POST /v1/items/lim/decrement HTTP/1.1\r\n",
        "PUT /v1/items/hot HTTP/1.1\r\nAuthorization: Bearer tok\r\n",
        "PUT /admin/config HTTP/1.1\r\nAuthorization: Bearer tok\r\n",
    };
    check_reader(in->data, in->size);
    char *req = malloc(in->size + 256);
    if (req == NULL)
        return;
    for (size_t h = 0; h < sizeof heads / sizeof heads[0]; h++) {
        int hl = snprintf(req, 256, "%sContent-Length: %zu\r\n\r\n", heads[h], in->size);
        memcpy(req + hl, in->data, in->size);
        http_conn c;
        http__conn_init(&c, fuzz_server(0));
        http_feed(&c, req, (size_t)hl + in->size, 0);
        http__conn_fini(&c);
    }
    free(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    fuzz_on_coroutine(run, &in);
    return 0;
}
