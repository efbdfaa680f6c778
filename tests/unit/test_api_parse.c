/*
 * test_api_parse.c: api/'s request handling without sockets: parsing,
 * limits, pipelining order, keep-alive, router, auth and the admin token's
 * run-time swap, the JSON routes, readiness, the error mapping and its
 * headers, and the contract check against api/openapi.yaml.
 */
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/http_int.h"
#include "tests/support/memservice.h"

typedef struct fixture {
    http_service *svc;
    http_server srv;
    http_conn c;
    kit_buf all;        /* every byte written to the "socket" */
    int state;
} fixture;

static fixture *fx_new(const char *token, void (*tune)(http_server_config *))
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->svc = http_memservice_new();
    assert_non_null(f->svc);
    assert_int_equal(http_memservice_put(f->svc, "hot", 100, 0, 0), 0);
    assert_int_equal(http_memservice_put(f->svc, "lim", 100, 2, 0), 0);
    assert_int_equal(http_memservice_put(f->svc, "later", 100, 0, 4102444800000LL), 0);
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.admin_token = token;
    if (tune)
        tune(&cfg);
    assert_int_equal(http__server_init(&f->srv, &cfg, f->svc), 0);
    http__conn_init(&f->c, &f->srv);
    f->c.id = 7;
    return f;
}

static void fx_free(fixture *f)
{
    http__conn_fini(&f->c);
    http__server_fini(&f->srv);
    http_memservice_free(f->svc);
    kit_buf_free(&f->all);
    free(f);
}

/* Feeds data in chunks of `chunk` bytes (0 = all at once), as reads would
 * deliver it, collecting the output. Returns the output as a C string owned
 * by f (valid until the next feed). */
static const char *feed(fixture *f, const char *data, size_t len, size_t chunk)
{
    f->all.len = 0;
    size_t pos = 0;
    if (chunk == 0)
        chunk = len ? len : 1;
    f->state = HTTP__MORE;
    while (pos < len) {
        size_t room;
        char *p = http__conn_read_ptr(&f->c, &room);
        assert_non_null(p);
        size_t n = len - pos < chunk ? len - pos : chunk;
        if (n > room)
            n = room;
        memcpy(p, data + pos, n);
        f->c.in_len += n;
        pos += n;
        do {
            f->state = http__conn_process(&f->c);
            kit_buf_append(&f->all, f->c.out.data, f->c.out.len);
            f->c.out.len = 0;
        } while (f->state == HTTP__FLUSH);
        if (f->state == HTTP__CLOSE)
            break;
    }
    kit_buf_append(&f->all, "", 1);
    return f->all.data;
}

static const char *feeds(fixture *f, const char *s)
{
    return feed(f, s, strlen(s), 0);
}

/* The in-memory service's stock of "hot". */
static int64_t stock_of(fixture *f)
{
    http_item it;
    http_tier tier;
    assert_int_equal(f->svc->get_item(f->svc->ctx, "hot", &it, &tier), 0);
    return it.stock;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* An unknown item's 404 says which tier knew it absent. */
static void test_get_absent(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    const char *o = feeds(f, "GET /v1/items/none HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 404 Not Found\r\n"));
    assert_non_null(strstr(o, "\r\nX-Cache: local\r\n"));
    assert_non_null(strstr(o, "{\"error\":\"not_found\""));
    fx_free(f);
}

static void test_get_item(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    const char *o = feeds(f, "GET /v1/items/hot HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(f->state, HTTP__MORE);
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(o, "\r\nX-Cache: local\r\n"));
    assert_non_null(strstr(o, "\r\nX-Request-Id: 7-0\r\n"));
    assert_non_null(strstr(o, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(o, "\r\n\r\n{\"sku\":\"hot\",\"stock\":100,\"version\":1,"
                              "\"per_user_limit\":0,\"sale_starts_at_ms\":0}"));
    assert_null(strstr(o, "Connection:"));
    fx_free(f);
}

static void test_keepalive_reuse(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    for (int i = 0; i < 5; i++) {
        const char *o = feeds(f, "GET /healthz HTTP/1.1\r\n\r\n");
        assert_int_equal(f->state, HTTP__MORE);
        assert_non_null(strstr(o, "{\"status\":\"ok\"}"));
        char id[32];
        snprintf(id, sizeof id, "X-Request-Id: 7-%x\r\n", i);
        assert_non_null(strstr(o, id));
    }
    assert_int_equal(f->c.in_len, 0);
    fx_free(f);
}

static const char pipeline[] =
    "GET /v1/items/hot HTTP/1.1\r\n\r\n"
    "GET /v1/items/nope HTTP/1.1\r\n\r\n"
    "POST /v1/items/hot/decrement HTTP/1.1\r\nContent-Length: 26\r\n\r\n"
    "{\"user_id\":\"u1\",\"qty\":3}  "
    "GET /healthz HTTP/1.1\r\n\r\n"
    "GET /v1/items/hot HTTP/1.1\r\n\r\n";

static void check_pipeline(const char *o)
{
    const char *a = strstr(o, "\"stock\":100");
    const char *b = strstr(o, "404 Not Found");
    const char *c = strstr(o, "\"order_id\":1,");
    const char *d = strstr(o, "{\"status\":\"ok\"}");
    const char *e = strstr(o, "\"stock\":97,\"version\":2,\"per_user_limit\"");
    assert_true(a && b && c && d && e);
    assert_true(a < b && b < c && c < d && d < e);
    assert_int_equal(count(o, "HTTP/1.1 "), 5);
}

static void test_pipelining_order(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    check_pipeline(feed(f, pipeline, sizeof pipeline - 1, 0));
    assert_int_equal(f->state, HTTP__MORE);
    fx_free(f);
}

static void test_pipelining_bytewise(void **st)
{
    (void)st;
    for (size_t chunk = 1; chunk < 40; chunk += 7) {
        fixture *f = fx_new(NULL, NULL);
        check_pipeline(feed(f, pipeline, sizeof pipeline - 1, chunk));
        fx_free(f);
    }
}

static void small_pipeline_out(http_server_config *c)
{
    c->max_pipeline_out = 300;
}

static void test_pipeline_flush_bound(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, small_pipeline_out);
    kit_buf in = {0};
    for (int i = 0; i < 50; i++)
        kit_buf_puts(&in, "GET /healthz HTTP/1.1\r\n\r\n");
    size_t room;
    char *p = http__conn_read_ptr(&f->c, &room);
    assert_true(room >= in.len);
    memcpy(p, in.data, in.len);
    f->c.in_len = in.len;
    int flushes = 0, answered = 0;
    for (;;) {
        int s = http__conn_process(&f->c);
        assert_true(f->c.out.len < 300 + 400);
        answered += count(f->c.out.len ? (kit_buf_append(&f->c.out, "", 1),
                                          f->c.out.data) : "", "200 OK");
        f->c.out.len = 0;
        if (s != HTTP__FLUSH)
            break;
        flushes++;
    }
    assert_int_equal(answered, 50);
    assert_true(flushes > 5);
    kit_buf_free(&in);
    fx_free(f);
}

static void test_uri_limit(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    kit_buf b = {0};
    kit_buf_puts(&b, "GET /v1/items/");
    for (int i = 0; i < 2100; i++)
        kit_buf_puts(&b, "a");
    kit_buf_puts(&b, " HTTP/1.1\r\n\r\n");
    const char *o = feed(f, b.data, b.len, 0);
    assert_int_equal(f->state, HTTP__CLOSE);
    assert_non_null(strstr(o, "HTTP/1.1 414 URI Too Long\r\n"));
    assert_non_null(strstr(o, "{\"error\":\"uri_too_long\""));
    assert_non_null(strstr(o, "Connection: close\r\n"));
    fx_free(f);
    /* The same arriving in small pieces. */
    f = fx_new(NULL, NULL);
    o = feed(f, b.data, b.len, 100);
    assert_non_null(strstr(o, "414"));
    fx_free(f);
    kit_buf_free(&b);
}

static void test_header_limit(void **st)
{
    (void)st;
    for (size_t chunk = 0; chunk <= 500; chunk += 500) {
        fixture *f = fx_new(NULL, NULL);
        kit_buf b = {0};
        kit_buf_puts(&b, "GET /healthz HTTP/1.1\r\nX-Big: ");
        for (int i = 0; i < 9000; i++)
            kit_buf_puts(&b, "a");
        kit_buf_puts(&b, "\r\n\r\n");
        const char *o = feed(f, b.data, b.len, chunk);
        assert_int_equal(f->state, HTTP__CLOSE);
        assert_non_null(strstr(o, "HTTP/1.1 431 "));
        assert_non_null(strstr(o, "headers_too_large"));
        kit_buf_free(&b);
        fx_free(f);
    }
    /* Many small headers add up. */
    fixture *f = fx_new(NULL, NULL);
    kit_buf b = {0};
    kit_buf_puts(&b, "GET /healthz HTTP/1.1\r\n");
    for (int i = 0; i < 100; i++)
        kit_buf_printf(&b, "X-H%d: v\r\n", i);
    kit_buf_puts(&b, "\r\n");
    assert_non_null(strstr(feed(f, b.data, b.len, 0), "HTTP/1.1 431 "));
    kit_buf_free(&b);
    fx_free(f);
    /* Just under the limit passes. */
    f = fx_new(NULL, NULL);
    b = (kit_buf){0};
    kit_buf_puts(&b, "GET /healthz HTTP/1.1\r\nX-Big: ");
    for (int i = 0; i < 8000; i++)
        kit_buf_puts(&b, "a");
    kit_buf_puts(&b, "\r\n\r\n");
    assert_non_null(strstr(feed(f, b.data, b.len, 0), "200 OK"));
    kit_buf_free(&b);
    fx_free(f);
}

static void test_body_limit(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    const char *o = feeds(f, "POST /v1/items/hot/decrement HTTP/1.1\r\n"
                             "Content-Length: 70000\r\n\r\n{");
    assert_int_equal(f->state, HTTP__CLOSE);
    assert_non_null(strstr(o, "HTTP/1.1 413 Payload Too Large\r\n"));
    fx_free(f);
}

/* A chunked decrement, fed whole and in reads of every size from 1 to 40
 * bytes: one 200, the chunks joined, the extension and trailer dropped,
 * and the pipelined GET behind it answered after it. */
static void test_chunked(void **st)
{
    (void)st;
    static const char req[] =
        "POST /v1/items/hot/decrement HTTP/1.1\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
        "a\r\n{\"user_id\"\r\n"
        "4;name=value\r\n:\"u1\r\n"
        "A\r\n\",\"qty\":1}\r\n"
        "0\r\nX-Trailer: yes\r\n\r\n"
        "GET /v1/items/hot HTTP/1.1\r\n\r\n";
    for (size_t chunk = 0; chunk <= 40; chunk++) {
        fixture *f = fx_new(NULL, NULL);
        const char *o = feed(f, req, sizeof req - 1, chunk);
        assert_int_equal(f->state, HTTP__MORE);
        assert_int_equal(count(o, "HTTP/1.1 200 OK\r\n"), 2);
        assert_non_null(strstr(o, "\"user_id\":\"u1\",\"qty\":1,\"stock\":99"));
        assert_non_null(strstr(o, "{\"sku\":\"hot\",\"stock\":99,"));
        fx_free(f);
    }
}

static void tune_small_body(http_server_config *c)
{
    c->max_body = 64;
    c->max_headers = 256;
}

/* Transfer codings other than chunked are 501; chunked bodies, their
 * framing and their trailers have limits. */
static void test_chunked_refusals(void **st)
{
    (void)st;
    static const struct { const char *req; const char *status; } cases[] = {
        {"POST /v1/items/hot/decrement HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
         "501 Not Implemented"},
        {"POST /v1/items/hot/decrement HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
         "501 Not Implemented"},
        {"POST /v1/items/hot/decrement HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
         "400 Bad Request"},
        {"POST /v1/items/hot/decrement HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400 Bad Request"},
        {"POST /v1/items/hot/decrement HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\n",
         "400 Bad Request"},
        {"POST /v1/items/hot/decrement HTTP/1.1\r\nContent-Length: 5\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400 Bad Request"},
        {"POST /v1/items/hot/decrement HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         "400 Bad Request"},
        {"POST /v1/items/hot/decrement HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
         "400 Bad Request"},
        /* 2 x 40 bytes of data: over the 64-byte body limit. */
        {"POST /v1/items/hot/decrement HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         "28\r\n                                        \r\n"
         "28\r\n                                        \r\n0\r\n\r\n", "413 Payload Too Large"},
        /* One byte of data behind 400 bytes of extension: the framing is
         * bounded by the body limit plus the header limit. */
        {"POST /v1/items/hot/decrement HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         "1;eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
         "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
         "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
         "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
         "413 Payload Too Large"},
        {"POST /v1/items/hot/decrement HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
         "X-T: tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt"
         "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt"
         "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt\r\n\r\n",
         "431 Request Header Fields Too Large"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t chunk = 0; chunk <= 7; chunk += 7) {
            fixture *f = fx_new(NULL, tune_small_body);
            const char *o = feed(f, cases[i].req, strlen(cases[i].req), chunk);
            char want[80];
            snprintf(want, sizeof want, "HTTP/1.1 %s\r\n", cases[i].status);
            if (strstr(o, want) == NULL || f->state != HTTP__CLOSE)
                fail_msg("case %zu (reads of %zu): want %s, got %.200s", i, chunk,
                         cases[i].status, o);
            assert_int_equal(stock_of(f), 100);
            fx_free(f);
        }
    }
}

/* Header sections that a proxy in front might read another way: all 400,
 * whole or fed a byte at a time, and nothing applied. */
static void test_strict_headers(void **st)
{
    (void)st;
#define DECR "POST /v1/items/hot/decrement HTTP/1.1\r\n"
#define BODY "{\"user_id\":\"u1\",\"qty\":1}"
    static const char *const bad[] = {
        DECR "Content-Length : 24\r\n\r\n" BODY,
        DECR "Content-Length\t: 24\r\n\r\n" BODY,
        DECR " Content-Length: 24\r\n\r\n" BODY,
        DECR "Content-Length:\r\n 24\r\n\r\n" BODY,
        DECR "X-A: one\r\n two\r\nContent-Length: 24\r\n\r\n" BODY,
        DECR "Content-Length: +24\r\n\r\n" BODY,
        DECR "Content-Length: 24, 24\r\n\r\n" BODY,
        DECR "Content-Length: 24\r\nContent-Length: 24\r\n\r\n" BODY,
        DECR "Content-Length: 0x18\r\n\r\n" BODY,
        DECR "Content-Length: 0000000000000000000024\r\n\r\n" BODY,
        DECR "Content-Length: \r\n\r\n" BODY,
        DECR "Content-Length: 24\nX-A: b\r\n\r\n" BODY,
        DECR "Content-Length: 24\r\n\n" BODY,
        "POST /v1/items/hot/decrement  HTTP/1.1\r\nContent-Length: 24\r\n\r\n" BODY,
        "POST /v1/items/hot/decrement HTTP/1.1\nContent-Length: 24\r\n\r\n" BODY,
        DECR "X-A: a\x01z\r\nContent-Length: 24\r\n\r\n" BODY,
        DECR "X-A: a\x7fz\r\nContent-Length: 24\r\n\r\n" BODY,
        DECR "X[A]: a\r\nContent-Length: 24\r\n\r\n" BODY,
    };
#undef DECR
#undef BODY
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (size_t chunk = 0; chunk <= 1; chunk++) {
            fixture *f = fx_new(NULL, NULL);
            const char *o = feed(f, bad[i], strlen(bad[i]), chunk);
            if (strstr(o, "HTTP/1.1 400 Bad Request\r\n") == NULL || f->state != HTTP__CLOSE)
                fail_msg("case %zu (reads of %zu): got %.200s", i, chunk, o);
            assert_int_equal(stock_of(f), 100);
            fx_free(f);
        }
    }
    /* What stays accepted: OWS around values, an empty value, any case. */
    fixture *f = fx_new(NULL, NULL);
    const char *o = feeds(f, "POST /v1/items/hot/decrement HTTP/1.1\r\n"
                             "content-LENGTH:24 \r\nX-Empty:\r\nX-B: \t b \t\r\n\r\n"
                             "{\"user_id\":\"u1\",\"qty\":1}");
    if (strstr(o, "HTTP/1.1 200 OK\r\n") == NULL)
        fail_msg("got %.500s", o);
    fx_free(f);
}

/* The body reader: what it accepts, what it refuses and why. */
static void test_json_reader(void **st)
{
    (void)st;
    static const char *const good[] = {
        "{}", " {} ", "{\"a\":1}", "{\"a\":-0}", "{\"a\":\"\"}", "{\"a\":1.5e3}",
        "{\"a\":true,\"b\":false,\"c\":null}", "\t{\r\n\"a\" : \"x\" ,\"b\":2}\n",
        "{\"a\":\"\\u00e9\\ud83d\\ude00\\n\\\"\\/\"}", "{\"a\":\"caf\xc3\xa9\"}",
        "{\"a\":-9223372036854775808}", "{\"a\":9223372036854775807}",
        "{\"a\":123456789012345678901234567890}",
    };
    static const char *const bad[] = {
        "", " ", "[]", "\"a\"", "1", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}",
        "{,}", "{\"a\":1}x", "{\"a\":1}{}", "{\"a\":1,\"a\":2}",
        "{\"a\":1,\"\\u0061\":2}", "{'a':1}", "{a:1}", "{\"a\":01}", "{\"a\":1.}",
        "{\"a\":.5}", "{\"a\":1e}", "{\"a\":+1}", "{\"a\":-}", "{\"a\":tru}",
        "{\"a\":nul}", "{\"a\":[1]}", "{\"a\":{}}", "{\"a\":\"x\\u0000y\"}",
        "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"\\ud800\\u0041\"}",
        "{\"a\":\"\\x41\"}", "{\"a\":\"\\u12G4\"}", "{\"a\":\"x\ty\"}",
        "{\"a\":\"\xff\"}", "{\"a\":\"\xc0\xaf\"}", "{\"a\":\"\xed\xa0\x80\"}",
        "{\"a\":\"\xf4\x90\x80\x80\"}", "{\"a\":\"\xe2\x82\"}", "{\"a\":\"abc",
        "{\"a\"1}", "\xef\xbb\xbf{}",
    };
    http__jobj o;
    char buf[256];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        size_t n = strlen(good[i]);
        memcpy(buf, good[i], n);
        if (http__json_object(buf, n, &o) != 0)
            fail_msg("refused %s: %s at %zu", good[i], o.err, o.err_at);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = strlen(bad[i]);
        memcpy(buf, bad[i], n);
        if (http__json_object(buf, n, &o) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(o.err);
        assert_true(o.err_at <= n);
    }
    /* A NUL byte inside a string, which strlen-based tables cannot hold. */
    memcpy(buf, "{\"a\":\"x\0y\"}", 11);
    assert_int_equal(http__json_object(buf, 11, &o), -1);
    /* Values, unescaped in place. */
    static const char in[] = "{\"s\":\"a\\\"b\\u00e9\\ud83d\\ude00\",\"n\":-42,\"f\":1e2,"
                             "\"big\":9223372036854775808,\"t\":true}";
    memcpy(buf, in, sizeof in - 1);
    assert_int_equal(http__json_object(buf, sizeof in - 1, &o), 0);
    assert_int_equal(o.n, 5);
    const http__jmember *m = http__json_get(&o, "s");
    assert_non_null(m);
    assert_int_equal(m->type, HTTP__J_STRING);
    assert_int_equal(m->str_len, 3 + 2 + 4);
    assert_memory_equal(m->str, "a\"b\xc3\xa9\xf0\x9f\x98\x80", 9);
    m = http__json_get(&o, "n");
    assert_true(m->type == HTTP__J_NUMBER && m->int_ok && m->i == -42);
    m = http__json_get(&o, "f");
    assert_true(m->type == HTTP__J_NUMBER && !m->int_ok);
    m = http__json_get(&o, "big");
    assert_true(m->type == HTTP__J_NUMBER && !m->int_ok);
    assert_int_equal(http__json_get(&o, "t")->type, HTTP__J_TRUE);
    assert_null(http__json_get(&o, "missing"));
    /* More members than the reader keeps. */
    kit_buf many = {0};
    kit_buf_puts(&many, "{");
    for (int i = 0; i <= HTTP__JSON_MAX_MEMBERS; i++)
        kit_buf_printf(&many, "%s\"m%d\":%d", i ? "," : "", i, i);
    kit_buf_puts(&many, "}");
    assert_int_equal(http__json_object(many.data, many.len, &o), -1);
    kit_buf_free(&many);
}

static void test_malformed(void **st)
{
    (void)st;
    const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "GET / HTTP/1.1\r\nHost x\r\n\r\n",
        "GET /healthz HTTP/9.9x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "\x01\x02\x03",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fixture *f = fx_new(NULL, NULL);
        const char *o = feeds(f, bad[i]);
        assert_int_equal(f->state, HTTP__CLOSE);
        assert_non_null(strstr(o, "HTTP/1.1 400 Bad Request\r\n"));
        assert_non_null(strstr(o, "\"error\":\"bad_request\""));
        fx_free(f);
    }
}

static void test_head(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    const char *o = feeds(f, "HEAD /v1/items/hot HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(o, "Content-Length: 78\r\n"));
    size_t len = strlen(o);
    assert_true(len >= 4 && strcmp(o + len - 4, "\r\n\r\n") == 0);
    fx_free(f);
}

static void test_connection_close(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    const char *o = feeds(f, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"
                             "GET /healthz HTTP/1.1\r\n\r\n");
    assert_int_equal(f->state, HTTP__CLOSE);
    assert_int_equal(count(o, "HTTP/1.1 200"), 1);
    assert_non_null(strstr(o, "Connection: close\r\n"));
    fx_free(f);

    f = fx_new(NULL, NULL);
    o = feeds(f, "GET /healthz HTTP/1.0\r\n\r\n");
    assert_int_equal(f->state, HTTP__CLOSE);
    fx_free(f);

    f = fx_new(NULL, NULL);
    o = feeds(f, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(f->state, HTTP__MORE);
    assert_non_null(strstr(o, "Connection: keep-alive\r\n"));
    fx_free(f);
}

static void test_expect_continue(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    const char *o = feeds(f, "POST /v1/items/hot/decrement HTTP/1.1\r\n"
                             "Expect: 100-continue\r\nContent-Length: 23\r\n\r\n");
    assert_int_equal(f->state, HTTP__MORE);
    assert_string_equal(o, "HTTP/1.1 100 Continue\r\n\r\n");
    o = feeds(f, "{\"user_id\":\"u\",\"qty\":1}");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_null(strstr(o, "100 Continue"));
    fx_free(f);

    f = fx_new(NULL, NULL);
    o = feeds(f, "GET /healthz HTTP/1.1\r\nExpect: teapot\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 417 "));
    fx_free(f);
}

static void test_router(void **st)
{
    (void)st;
    http__match m;
    http__route_match(HTTP_GET, "/v1/items/abc", 13, &m);
    assert_int_equal(m.route, HTTP__R_GET_ITEM);
    assert_int_equal(m.nparams, 1);
    assert_int_equal(m.param_len[0], 3);
    assert_memory_equal(m.param[0], "abc", 3);
    http__route_match(HTTP_HEAD, "/v1/items/abc", 13, &m);
    assert_int_equal(m.route, HTTP__R_GET_ITEM);
    http__route_match(HTTP_POST, "/v1/items/x/decrement", 21, &m);
    assert_int_equal(m.route, HTTP__R_DECREMENT);
    http__route_match(HTTP_GET, "/admin/items/x/audit", 20, &m);
    assert_int_equal(m.route, HTTP__R_AUDIT);
    http__route_match(HTTP_GET, "/v1/items/", 10, &m);
    assert_int_equal(m.status, 404);
    http__route_match(HTTP_GET, "/v1/items/a/b", 13, &m);
    assert_int_equal(m.status, 404);
    http__route_match(HTTP_GET, "/nope", 5, &m);
    assert_int_equal(m.status, 404);
    http__route_match(HTTP_DELETE, "/v1/items/abc", 13, &m);
    assert_int_equal(m.status, 405);
    assert_string_equal(m.allow, "GET, HEAD, PUT");
    http__route_match(HTTP_GET, "/v1/items/abc/decrement", 23, &m);
    assert_int_equal(m.status, 405);
    assert_string_equal(m.allow, "POST");

    fixture *f = fx_new(NULL, NULL);
    const char *o = feeds(f, "DELETE /admin/config HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 405 Method Not Allowed\r\n"));
    assert_non_null(strstr(o, "Allow: GET, HEAD, PUT\r\n"));
    assert_non_null(strstr(o, "\"error\":\"method_not_allowed\""));
    o = feeds(f, "GET /v1/items/bad%20sku HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 400 "));
    o = feeds(f, "GET /nothing/here HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 404 "));
    assert_non_null(strstr(o, "\"error\":\"not_found\""));
    fx_free(f);
}

static void test_auth(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    const char *o = feeds(f, "GET /admin/config HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 403 Forbidden\r\n"));
    assert_non_null(strstr(o, "admin_token"));
    fx_free(f);

    f = fx_new("s3cret", NULL);
    o = feeds(f, "GET /admin/config HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 401 Unauthorized\r\n"));
    assert_non_null(strstr(o, "WWW-Authenticate: Bearer"));
    o = feeds(f, "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer s3cres\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 401 "));
    o = feeds(f, "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer s3cret1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 401 "));
    o = feeds(f, "GET /admin/config HTTP/1.1\r\nAuthorization: Basic s3cret\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 401 "));
    o = feeds(f, "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(o, "{\"invalidation_delay_ms\":500,\"local_ttl_ms\":2000,"
                              "\"log_level\":\"info\",\"settings\":{"));
    o = feeds(f, "PUT /admin/config HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n"
                 "Content-Length: 50\r\n\r\n"
                 "{\"invalidation_delay_ms\":900,\"log_level\":\"debug\"} ");
    assert_non_null(strstr(o, "{\"invalidation_delay_ms\":900,\"local_ttl_ms\":2000,"
                              "\"log_level\":\"debug\"}"));
    o = feeds(f, "PUT /admin/config HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n"
                 "Content-Length: 22\r\n\r\n{\"log_level\":\"loud\"}  ");
    assert_non_null(strstr(o, "HTTP/1.1 400 "));
    fx_free(f);

    assert_true(http_consttime_eq("abc", 3, "abc", 3));
    assert_false(http_consttime_eq("abd", 3, "abc", 3));
    assert_false(http_consttime_eq("ab", 2, "abc", 3));
    assert_false(http_consttime_eq("abcd", 4, "abc", 3));
    assert_true(http_consttime_eq("", 0, "", 0));
}

static const char *post(fixture *f, const char *sku, const char *body,
                        const char *key)
{
    char req[1024];
    snprintf(req, sizeof req,
             "POST /v1/items/%s/decrement HTTP/1.1\r\n%s%s%sContent-Length: %zu\r\n\r\n%s",
             sku, key ? "Idempotency-Key: " : "", key ? key : "", key ? "\r\n" : "",
             strlen(body), body);
    return feeds(f, req);
}

static void test_decrement_codes(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    const char *o;
    o = post(f, "hot", "{\"user_id\":\"u1\",\"qty\":2}", "k1");
    assert_non_null(strstr(o, "{\"order_id\":1,\"sku\":\"hot\",\"user_id\":\"u1\","
                              "\"qty\":2,\"stock\":98,\"version\":2,\"replayed\":false}"));
    o = post(f, "hot", "{\"user_id\":\"u1\",\"qty\":2}", "k1");
    assert_non_null(strstr(o, "{\"order_id\":1,\"sku\":\"hot\",\"user_id\":\"u1\","
                              "\"qty\":2,\"stock\":98,\"version\":2,\"replayed\":true}"));
    /* The key with another buyer, qty or item: 422, nothing applied. */
    static const char *const other[][2] = {
        {"hot", "{\"user_id\":\"mallory\",\"qty\":2}"},
        {"hot", "{\"user_id\":\"u1\",\"qty\":3}"},
        {"lim", "{\"user_id\":\"u1\",\"qty\":2}"},
    };
    for (size_t i = 0; i < 3; i++) {
        o = post(f, other[i][0], other[i][1], "k1");
        assert_non_null(strstr(o, "HTTP/1.1 422 Unprocessable Content\r\n"));
        assert_non_null(strstr(o, "\"error\":\"idempotency_key_mismatch\""));
    }
    assert_int_equal(stock_of(f), 98);
    /* The order, looked up by its key and buyer. */
    o = feeds(f, "GET /v1/orders/by-key?user_id=u1 HTTP/1.1\r\nIdempotency-Key: k1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(o, "{\"order_id\":1,\"sku\":\"hot\",\"user_id\":\"u1\","
                              "\"qty\":2,\"stock\":98,\"version\":2}"));
    o = feeds(f, "GET /v1/orders/by-key?user_id=mallory HTTP/1.1\r\nIdempotency-Key: k1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 404 Not Found\r\n"));
    o = feeds(f, "GET /v1/orders/by-key?user_id=u1 HTTP/1.1\r\nIdempotency-Key: k9\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 404 Not Found\r\n"));
    o = feeds(f, "GET /v1/orders/by-key?user_id=u1 HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 400 Bad Request\r\n"));
    o = feeds(f, "GET /v1/orders/by-key HTTP/1.1\r\nIdempotency-Key: k1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 400 Bad Request\r\n"));
    o = post(f, "hot", "{\"user_id\":\"u1\",\"qty\":99}", NULL);
    assert_non_null(strstr(o, "HTTP/1.1 409 Conflict"));
    assert_non_null(strstr(o, "\"error\":\"insufficient_stock\""));
    o = post(f, "hot", "{\"user_id\":\"u1\",\"qty\":98}", NULL);
    assert_non_null(strstr(o, "200 OK"));
    o = post(f, "hot", "{\"user_id\":\"u1\",\"qty\":1}", NULL);
    assert_non_null(strstr(o, "\"error\":\"sold_out\""));
    o = post(f, "lim", "{\"user_id\":\"u1\",\"qty\":3}", NULL);
    assert_non_null(strstr(o, "\"error\":\"limit_exceeded\""));
    o = post(f, "later", "{\"user_id\":\"u1\",\"qty\":1}", NULL);
    assert_non_null(strstr(o, "HTTP/1.1 425 Too Early"));
    assert_non_null(strstr(o, "\"error\":\"sale_not_started\""));
    o = post(f, "nope", "{\"user_id\":\"u1\",\"qty\":1}", NULL);
    assert_non_null(strstr(o, "HTTP/1.1 404 "));
    const char *bad[] = {"{", "[]", "{\"user_id\":\"u1\"}", "{\"user_id\":\"u1\",\"qty\":0}",
                         "{\"user_id\":\"u1\",\"qty\":1000001}", "{\"user_id\":\"u1\",\"qty\":1.5}",
                         "{\"user_id\":\"u 1\",\"qty\":1}", "{\"user_id\":5,\"qty\":1}",
                         "{\"user_id\":\"u1\",\"qty\":\"1\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = post(f, "lim", bad[i], NULL);
        assert_non_null(strstr(o, "HTTP/1.1 400 "));
        assert_non_null(strstr(o, "\"error\":\"bad_request\""));
    }
    o = feeds(f, "POST /v1/items/lim/decrement HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 400 "));

    struct { int err; const char *line, *code; } map[] = {
        {HTTP_E_OVERLOADED, "HTTP/1.1 429 ", "overloaded"},
        {HTTP_E_UNAVAILABLE, "HTTP/1.1 503 ", "unavailable"},
        {HTTP_E_OUTCOME_UNKNOWN, "HTTP/1.1 503 ", "outcome_unknown"},
        {-ETIMEDOUT, "HTTP/1.1 503 ", "unavailable"},
        {-EINVAL, "HTTP/1.1 500 ", "internal"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        http_memservice_fail(f->svc, map[i].err);
        o = post(f, "lim", "{\"user_id\":\"u1\",\"qty\":1}", NULL);
        assert_non_null(strstr(o, map[i].line));
        char code[64];
        snprintf(code, sizeof code, "\"error\":\"%s\"", map[i].code);
        assert_non_null(strstr(o, code));
        /* Every 429 and 503 says when to come back. */
        if (map[i].line[9] == '4' || map[i].line[9] == '5')
            assert_int_equal(count(o, "Retry-After:"), map[i].err == -EINVAL ? 0 : 1);
        if (map[i].err != -EINVAL)
            assert_non_null(strstr(o, "\r\nRetry-After: 1\r\n"));
    }
    http_memservice_fail(f->svc, 0);
    fx_free(f);
}

/* The service's Retry-After wins over the default; every 503 of every
 * route carries one; 425 says when the sale starts. */
static void test_retry_after(void **st)
{
    (void)st;
    fixture *f = fx_new("t", NULL);
    const char *o;
    http_memservice_retry_after(f->svc, 7);
    const int errs[] = {HTTP_E_OVERLOADED, HTTP_E_UNAVAILABLE, HTTP_E_OUTCOME_UNKNOWN, -ETIMEDOUT};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        http_memservice_fail(f->svc, errs[i]);
        o = post(f, "hot", "{\"user_id\":\"u1\",\"qty\":1}", NULL);
        assert_non_null(strstr(o, "\r\nRetry-After: 7\r\n"));
        assert_int_equal(count(o, "Retry-After:"), 1);
    }
    http_memservice_retry_after(f->svc, 0);
    http_memservice_fail(f->svc, HTTP_E_UNAVAILABLE);
    static const char *const reqs[] = {
        "GET /v1/items/hot HTTP/1.1\r\n\r\n",
        "HEAD /v1/items/hot HTTP/1.1\r\n\r\n",
        "POST /v1/items/hot/decrement HTTP/1.1\r\nContent-Length: 23\r\n\r\n{\"user_id\":\"u\",\"qty\":1}",
        "PUT /v1/items/hot HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 11\r\n\r\n{\"stock\":1}",
        "GET /v1/orders/by-key?user_id=u HTTP/1.1\r\nIdempotency-Key: k\r\n\r\n",
        "GET /admin/items/hot/audit HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n",
        "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n",
        "PUT /admin/config HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 18\r\n\r\n{\"local_ttl_ms\":5}",
        "GET /readyz HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        o = feeds(f, reqs[i]);
        if (strstr(o, "HTTP/1.1 503 Service Unavailable\r\n") == NULL ||
            strstr(o, "\r\nRetry-After: 1\r\n") == NULL)
            fail_msg("no 503 with Retry-After: 1 for %s:\n%s", reqs[i], o);
    }
    http_memservice_fail(f->svc, 0);

    /* 425: the start in the envelope, Retry-After the seconds until then. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t start = now + 90 * 1000 + 500;
    assert_int_equal(http_memservice_put(f->svc, "soon", 10, 0, start), 0);
    o = post(f, "soon", "{\"user_id\":\"u1\",\"qty\":1}", NULL);
    assert_non_null(strstr(o, "HTTP/1.1 425 Too Early\r\n"));
    char body[160];
    snprintf(body, sizeof body,
             "{\"error\":\"sale_not_started\",\"detail\":\"%s\",\"sale_starts_at_ms\":%lld}",
             http_strerror(HTTP_E_SALE_NOT_STARTED), (long long)start);
    assert_non_null(strstr(o, body));
    const char *ra = strstr(o, "\r\nRetry-After: ");
    assert_non_null(ra);
    long wait_s = strtol(ra + 15, NULL, 10);
    assert_true(wait_s >= 89 && wait_s <= 91);
    /* A start a few milliseconds away still asks for at least 1 s. */
    assert_int_equal(http_memservice_put(f->svc, "now", 10, 0, now + 400), 0);
    o = post(f, "now", "{\"user_id\":\"u1\",\"qty\":1}", NULL);
    if (strstr(o, "HTTP/1.1 425 ") != NULL)
        assert_non_null(strstr(o, "\r\nRetry-After: 1\r\n"));
    fx_free(f);
}

/* A service whose decrement refuses with sale_not_started without saying
 * when (sale_starts_at_ms 0): Retry-After 1, no member. */
static int not_started_unknown(void *ctx, const http_decrement_req *req, http_decrement_res *out)
{
    (void)ctx;
    (void)req;
    (void)out;
    return HTTP_E_SALE_NOT_STARTED;
}

static void test_not_started_unknown(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    http_service svc = *f->svc;
    svc.decrement = not_started_unknown;
    f->srv.svc = &svc;
    const char *o = post(f, "hot", "{\"user_id\":\"u1\",\"qty\":1}", NULL);
    assert_non_null(strstr(o, "HTTP/1.1 425 Too Early\r\n"));
    assert_non_null(strstr(o, "\r\nRetry-After: 1\r\n"));
    assert_null(strstr(o, "sale_starts_at_ms"));
    assert_non_null(strstr(o, "{\"error\":\"sale_not_started\",\"detail\":"));
    f->srv.svc = f->svc;
    fx_free(f);
}

/* GET /readyz: 503 only while draining or with the store down; a Redis
 * or Kafka outage is 200 "degraded" and named. */
static void test_readyz(void **st)
{
    (void)st;
    fixture *f = fx_new(NULL, NULL);
    const char *o;
    o = feeds(f, "GET /readyz HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(o, "\r\n\r\n{\"status\":\"ready\",\"store\":\"up\",\"redis\":\"none\","
                              "\"kafka\":\"none\",\"degraded\":[]}"));
    assert_null(strstr(o, "Retry-After"));
    static const struct {
        http_dep_state redis, kafka;
        int draining, fail;
        const char *line, *body;
    } cases[] = {
        {HTTP_DEP_UP, HTTP_DEP_UP, 0, 0, "HTTP/1.1 200 OK\r\n",
         "{\"status\":\"ready\",\"store\":\"up\",\"redis\":\"up\",\"kafka\":\"up\",\"degraded\":[]}"},
        {HTTP_DEP_DOWN, HTTP_DEP_UP, 0, 0, "HTTP/1.1 200 OK\r\n",
         "{\"status\":\"degraded\",\"store\":\"up\",\"redis\":\"down\",\"kafka\":\"up\","
         "\"degraded\":[\"redis\"]}"},
        {HTTP_DEP_UP, HTTP_DEP_DOWN, 0, 0, "HTTP/1.1 200 OK\r\n",
         "{\"status\":\"degraded\",\"store\":\"up\",\"redis\":\"up\",\"kafka\":\"down\","
         "\"degraded\":[\"kafka\"]}"},
        {HTTP_DEP_DOWN, HTTP_DEP_DOWN, 0, 0, "HTTP/1.1 200 OK\r\n",
         "{\"status\":\"degraded\",\"store\":\"up\",\"redis\":\"down\",\"kafka\":\"down\","
         "\"degraded\":[\"redis\",\"kafka\"]}"},
        {HTTP_DEP_NONE, HTTP_DEP_DOWN, 0, 0, "HTTP/1.1 200 OK\r\n",
         "{\"status\":\"degraded\",\"store\":\"up\",\"redis\":\"none\",\"kafka\":\"down\","
         "\"degraded\":[\"kafka\"]}"},
        {HTTP_DEP_UP, HTTP_DEP_UP, 0, 1, "HTTP/1.1 503 Service Unavailable\r\n",
         "{\"status\":\"not_ready\",\"store\":\"down\",\"redis\":\"up\",\"kafka\":\"up\","
         "\"degraded\":[]}"},
        {HTTP_DEP_DOWN, HTTP_DEP_UP, 0, 1, "HTTP/1.1 503 Service Unavailable\r\n",
         "{\"status\":\"not_ready\",\"store\":\"down\",\"redis\":\"down\",\"kafka\":\"up\","
         "\"degraded\":[\"redis\"]}"},
        {HTTP_DEP_UP, HTTP_DEP_UP, 1, 0, "HTTP/1.1 503 Service Unavailable\r\n",
         "{\"status\":\"draining\",\"store\":\"up\",\"redis\":\"up\",\"kafka\":\"up\","
         "\"degraded\":[]}"},
        {HTTP_DEP_DOWN, HTTP_DEP_UP, 1, 1, "HTTP/1.1 503 Service Unavailable\r\n",
         "{\"status\":\"draining\",\"store\":\"down\",\"redis\":\"down\",\"kafka\":\"up\","
         "\"degraded\":[\"redis\"]}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_memservice_set_ready(f->svc, cases[i].redis, cases[i].kafka, cases[i].draining);
        http_memservice_fail(f->svc, cases[i].fail ? HTTP_E_UNAVAILABLE : 0);
        o = feeds(f, "GET /readyz HTTP/1.1\r\n\r\n");
        if (!strstr(o, cases[i].line) || !strstr(o, cases[i].body))
            fail_msg("case %zu: want %s%s, got:\n%s", i, cases[i].line, cases[i].body, o);
        int is503 = cases[i].line[9] == '5';
        assert_int_equal(count(o, "\r\nRetry-After: 1\r\n"), is503);
        assert_non_null(strstr(o, "Content-Type: application/json\r\n"));
    }
    /* A service without ready() is ready. */
    http_service svc = *f->svc;
    svc.ready = NULL;
    f->srv.svc = &svc;
    o = feeds(f, "GET /readyz HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "{\"status\":\"ready\",\"store\":\"up\",\"redis\":\"none\","
                              "\"kafka\":\"none\",\"degraded\":[]}"));
    f->srv.svc = f->svc;
    http_memservice_fail(f->svc, 0);
    fx_free(f);
}

static int settings_fail(void *ctx, kit_buf *out)
{
    (void)ctx;
    (void)out;
    return HTTP_E_UNAVAILABLE;
}

static int settings_junk(void *ctx, kit_buf *out)
{
    (void)ctx;
    return kit_buf_puts(out, "\"not an object\"");
}

/* GET /admin/config carries the service's settings verbatim; PUT's
 * answer and a service without config_settings do not. */
static void test_config_settings(void **st)
{
    (void)st;
    fixture *f = fx_new("t", NULL);
    const char *o;
    o = feeds(f, "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(o,
        "\r\n\r\n{\"invalidation_delay_ms\":500,\"local_ttl_ms\":2000,\"log_level\":\"info\","
        "\"settings\":{\"kafka.invalidation_delay_ms\":{\"value\":500,\"source\":\"default\"},"
        "\"cache.local_ttl_ms\":{\"value\":2000,\"source\":\"default\"},"
        "\"log.level\":{\"value\":\"info\",\"source\":\"default\"}}}"));
    o = feeds(f, "PUT /admin/config HTTP/1.1\r\nAuthorization: Bearer t\r\n"
                 "Content-Length: 20\r\n\r\n{\"local_ttl_ms\":750}");
    assert_non_null(strstr(o, "\r\n\r\n{\"invalidation_delay_ms\":500,\"local_ttl_ms\":750,"
                              "\"log_level\":\"info\"}"));
    assert_null(strstr(o, "settings"));
    o = feeds(f, "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n");
    assert_non_null(strstr(o, "\"cache.local_ttl_ms\":{\"value\":750,\"source\":\"set\"}"));
    http_service svc = *f->svc;
    f->srv.svc = &svc;
    svc.config_settings = NULL;
    o = feeds(f, "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n");
    assert_non_null(strstr(o, "\r\n\r\n{\"invalidation_delay_ms\":500,\"local_ttl_ms\":750,"
                              "\"log_level\":\"info\"}"));
    svc.config_settings = settings_fail;
    o = feeds(f, "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 503 "));
    assert_non_null(strstr(o, "\r\n\r\n{\"error\":\"unavailable\""));
    assert_non_null(strstr(o, "\r\nRetry-After: 1\r\n"));
    svc.config_settings = settings_junk;
    o = feeds(f, "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n");
    assert_non_null(strstr(o, "HTTP/1.1 500 "));
    assert_non_null(strstr(o, "\r\n\r\n{\"error\":\"internal\""));
    f->srv.svc = f->svc;
    fx_free(f);
}

static const char *get_config(fixture *f, const char *token)
{
    char req[256];
    snprintf(req, sizeof req, "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n",
             token);
    return feeds(f, req);
}

/* http_server_set_admin_token: the next check uses the new token; NULL or
 * "" disables the admin routes; bad tokens are refused and change
 * nothing. */
static void test_admin_token_swap(void **st)
{
    (void)st;
    fixture *f = fx_new("first", NULL);
    assert_non_null(strstr(get_config(f, "first"), "HTTP/1.1 200 OK\r\n"));
    assert_int_equal(http_server_set_admin_token(&f->srv, "second-token"), 0);
    assert_non_null(strstr(get_config(f, "first"), "HTTP/1.1 401 "));
    assert_non_null(strstr(get_config(f, "second-token"), "HTTP/1.1 200 OK\r\n"));
    assert_int_equal(http_server_set_admin_token(&f->srv, "bad token"), -EINVAL);
    assert_int_equal(http_server_set_admin_token(&f->srv, "bad\ntoken"), -EINVAL);
    assert_int_equal(http_server_set_admin_token(&f->srv, "bad\x7f"), -EINVAL);
    assert_int_equal(http_server_set_admin_token(&f->srv, "b\xc3\xa4" "d"), -EINVAL);
    assert_non_null(strstr(get_config(f, "second-token"), "HTTP/1.1 200 OK\r\n"));
    assert_int_equal(http_server_set_admin_token(&f->srv, ""), 0);
    assert_non_null(strstr(get_config(f, "second-token"), "HTTP/1.1 403 Forbidden\r\n"));
    assert_int_equal(http_server_set_admin_token(&f->srv, "third"), 0);
    assert_non_null(strstr(get_config(f, "third"), "HTTP/1.1 200 OK\r\n"));
    assert_int_equal(http_server_set_admin_token(&f->srv, NULL), 0);
    assert_non_null(strstr(get_config(f, "third"), "HTTP/1.1 403 Forbidden\r\n"));
    assert_null(f->srv.token);
    /* A token set at run time on a server started without one. */
    fx_free(f);
    f = fx_new(NULL, NULL);
    assert_non_null(strstr(get_config(f, "x"), "HTTP/1.1 403 "));
    assert_int_equal(http_server_set_admin_token(&f->srv, "x"), 0);
    assert_non_null(strstr(get_config(f, "x"), "HTTP/1.1 200 OK\r\n"));
    fx_free(f);
}

/* Readers racing with swaps between two tokens see one or the other whole:
 * a mix of the two (A's bytes with B's length, half of each) never
 * matches, and each token matches only while it is set. */
#define SWAP_A "aaaaaaaaaaaaaaaa"
#define SWAP_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
typedef struct swap_arg {
    http_server *srv;
    _Atomic int *stop;
    long matches_a, matches_b, torn;
} swap_arg;

static void *swap_reader(void *p)
{
    swap_arg *a = p;
    static const char *const torn[] = {
        "aaaaaaaabbbbbbbb", "bbbbbbbbaaaaaaaa", "bbbbbbbbbbbbbbbb",
        "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    };
    static const size_t torn_len[] = {16, 16, 16, 32, 32};
    while (!atomic_load(a->stop)) {
        a->matches_a += http__admin_token_check(a->srv, SWAP_A, 16) == 1;
        a->matches_b += http__admin_token_check(a->srv, SWAP_B, 32) == 1;
        for (size_t i = 0; i < 5; i++)
            a->torn += http__admin_token_check(a->srv, torn[i], torn_len[i]) != 0;
    }
    return NULL;
}

static void test_admin_token_concurrent(void **st)
{
    (void)st;
    fixture *f = fx_new(SWAP_A, NULL);
    _Atomic int stop = 0;
    swap_arg args[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (swap_arg){.srv = &f->srv, .stop = &stop};
        assert_int_equal(pthread_create(&th[i], NULL, swap_reader, &args[i]), 0);
    }
    /* Swap for at least 20000 rounds and 300 ms, so that the readers run
     * under both tokens even on a loaded machine. */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0;; i++) {
        assert_int_equal(http_server_set_admin_token(&f->srv, i & 1 ? SWAP_A : SWAP_B), 0);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (i >= 20000 && (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= 300)
            break;
    }
    assert_int_equal(http_server_set_admin_token(&f->srv, SWAP_A), 0);
    atomic_store(&stop, 1);
    long a = 0, b = 0, torn = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        a += args[i].matches_a;
        b += args[i].matches_b;
        torn += args[i].torn;
    }
    assert_int_equal(torn, 0);
    assert_true(a > 0 && b > 0);
    /* The last swap set A: only A matches now. */
    assert_int_equal(http__admin_token_check(&f->srv, SWAP_A, 16), 1);
    assert_int_equal(http__admin_token_check(&f->srv, SWAP_B, 32), 0);
    fx_free(f);
}

static void test_admin_items(void **st)
{
    (void)st;
    fixture *f = fx_new("t", NULL);
    const char *o;
    o = feeds(f, "PUT /v1/items/new1 HTTP/1.1\r\nAuthorization: Bearer t\r\n"
                 "Content-Length: 14\r\n\r\n{\"stock\":10}  ");
    assert_non_null(strstr(o, "HTTP/1.1 201 Created\r\n"));
    assert_non_null(strstr(o, "{\"sku\":\"new1\",\"stock\":10,\"version\":1,"));
    o = feeds(f, "PUT /v1/items/new2 HTTP/1.1\r\nAuthorization: Bearer t\r\n"
                 "Content-Length: 22\r\n\r\n{\"per_user_limit\":1}  ");
    assert_non_null(strstr(o, "HTTP/1.1 400 "));
    o = feeds(f, "PUT /v1/items/new1 HTTP/1.1\r\nAuthorization: Bearer t\r\n"
                 "Content-Length: 14\r\n\r\n{\"stock\":-1}  ");
    assert_non_null(strstr(o, "HTTP/1.1 400 "));
    post(f, "new1", "{\"user_id\":\"a\",\"qty\":2}", NULL);
    post(f, "new1", "{\"user_id\":\"b\",\"qty\":3}", NULL);
    o = feeds(f, "PUT /v1/items/new1 HTTP/1.1\r\nAuthorization: Bearer t\r\n"
                 "Content-Length: 12\r\n\r\n{\"stock\":20}");
    assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
    o = feeds(f, "GET /admin/items/new1/audit?orders=true HTTP/1.1\r\n"
                 "Authorization: Bearer t\r\n\r\n");
    assert_non_null(strstr(o, "{\"sku\":\"new1\",\"stock\":20,\"version\":4,"
                              "\"units_supplied\":25,\"units_sold\":5,\"orders\":2,"
                              "\"max_user_qty\":3,\"duplicate_idempotency_keys\":0,"
                              "\"order_ids\":[1,2]}"));
    o = feeds(f, "GET /admin/items/new1/audit HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n");
    assert_null(strstr(o, "order_ids"));
    o = feeds(f, "GET /metrics HTTP/1.1\r\n\r\n");
    assert_non_null(strstr(o, "Content-Type: text/plain; version=0.0.4\r\n"));
    assert_non_null(strstr(o, "memservice_items 4\n"));
    assert_non_null(strstr(o, "http_requests_total{route=\"/v1/items/{sku}\",method=\"PUT\",code=\"201\"}"));
    assert_non_null(strstr(o, "http_request_duration_seconds_bucket{route=\"/admin/items/{sku}/audit\""));
    assert_non_null(strstr(o, "http_connections_open"));
    o = feeds(f, "GET /healthz HTTP/1.1\r\nX-Request-Id: abc-123\r\n\r\n");
    assert_non_null(strstr(o, "X-Request-Id: abc-123\r\n"));
    fx_free(f);
}

/* Every route of the router is in api/openapi.yaml and vice versa. */
static void test_openapi_contract(void **st)
{
    (void)st;
    const char *src = getenv("CACHESVC_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/api/openapi.yaml", src ? src : ".");
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[512], cur[256] = "";
    int in_paths = 0, found[HTTP__R_NONE] = {0}, spec_ops = 0;
    while (fgets(line, sizeof line, fp)) {
        line[strcspn(line, "\r\n")] = 0;
        if (strcmp(line, "paths:") == 0) {
            in_paths = 1;
            continue;
        }
        if (in_paths && line[0] != ' ' && line[0] != 0 && line[0] != '#')
            in_paths = 0;
        if (!in_paths)
            continue;
        if (strncmp(line, "  /", 3) == 0 && line[strlen(line) - 1] == ':') {
            snprintf(cur, sizeof cur, "%.*s", (int)strlen(line) - 3, line + 2);
            continue;
        }
        static const char *methods[] = {"get", "put", "post", "delete", "patch", "head"};
        for (size_t k = 0; k < 6; k++) {
            char want[32];
            snprintf(want, sizeof want, "    %s:", methods[k]);
            if (strcmp(line, want) != 0)
                continue;
            char up[8];
            size_t n = strlen(methods[k]);
            for (size_t i = 0; i <= n; i++)
                up[i] = (char)(methods[k][i] >= 'a' ? methods[k][i] - 32 : methods[k][i]);
            int hit = 0;
            for (int r = 0; r < HTTP__R_NONE; r++)
                if (strcmp(http__routes[r].pattern, cur) == 0 &&
                    (strcmp(http__routes[r].method, up) == 0 ||
                     (strcmp(up, "HEAD") == 0 && strcmp(http__routes[r].method, "GET") == 0))) {
                    if (strcmp(up, "HEAD") != 0)
                        found[r]++;
                    hit = 1;
                }
            if (!hit)
                fail_msg("openapi.yaml has %s %s, the router does not", up, cur);
            spec_ops++;
        }
    }
    fclose(fp);
    for (int r = 0; r < HTTP__R_NONE; r++)
        if (found[r] != 1)
            fail_msg("router has %s %s, openapi.yaml lists it %d times",
                     http__routes[r].method, http__routes[r].pattern, found[r]);
    assert_true(spec_ops >= HTTP__R_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_item),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_pipelining_order),
        cmocka_unit_test(test_pipelining_bytewise),
        cmocka_unit_test(test_pipeline_flush_bound),
        cmocka_unit_test(test_uri_limit),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_chunked_refusals),
        cmocka_unit_test(test_strict_headers),
        cmocka_unit_test(test_json_reader),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_connection_close),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_router),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_decrement_codes),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_not_started_unknown),
        cmocka_unit_test(test_readyz),
        cmocka_unit_test(test_config_settings),
        cmocka_unit_test(test_admin_token_swap),
        cmocka_unit_test(test_admin_token_concurrent),
        cmocka_unit_test(test_get_absent),
        cmocka_unit_test(test_admin_items),
        cmocka_unit_test(test_openapi_contract),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
