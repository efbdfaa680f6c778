/*
 * test_api_alloc.c: api/'s runtime-free core under allocation failure
 * (failalloc.h): the read buffer, request parsing, the JSON bodies, the
 * handlers and the responses built in the connection's kit_bufs, for
 * every route and the parser's refusals, then the server's own
 * allocations (its admin token, the token's swap, the metrics text).
 * The in-memory service behind it (tests/support/memservice.c) allocates
 * too; its failures reach the server as -ENOMEM.
 *
 * Whatever fails, the client sees whole answers only: each request is
 * answered as with memory, or 503 `unavailable` (a -ENOMEM), or not at all
 * with the connection closing (its answer could not be built). Fewer
 * answers than requests on a connection that stays open would leave a
 * client waiting: refused. A connection that stays open answers the next
 * requests as with memory; one that closes can still write a 503.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/http_int.h"
#include "tests/support/failalloc.h"
#include "tests/support/http_feed.h"
#include "tests/support/memservice.h"

#define TOKEN "s3cret"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"

typedef struct fixture {
    http_service *svc;
    http_server srv;
    http_conn c;
    kit_buf out;        /* every answer written, with room reserved */
    int state;          /* http_feed_into's last answer */
} fixture;

static fixture *fx_open(void)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_non_null(f->svc = http_memservice_new());
    assert_int_equal(http_memservice_put(f->svc, "hot", 100, 0, 0), 0);
    assert_int_equal(http_memservice_put(f->svc, "later", 100, 0, 4102444800000LL), 0);
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.admin_token = TOKEN;
    assert_int_equal(http__server_init(&f->srv, &cfg, f->svc), 0);
    http__conn_init(&f->c, &f->srv);
    f->c.id = 7;
    assert_int_equal(kit_buf_reserve(&f->out, 1 << 20), 0);
    return f;
}

static void fx_close(fixture *f)
{
    http__conn_fini(&f->c);
    http__server_fini(&f->srv);
    http_memservice_free(f->svc);
    kit_buf_free(&f->out);
    free(f);
}

/* Feeds s in reads of chunk bytes; the answers are in f->out from 0. */
static void feed(fixture *f, const char *s, size_t chunk)
{
    f->out.len = 0;
    f->state = http_feed_into(&f->c, s, strlen(s), chunk, &f->out);
}

/* Splits f->out into whole answers: their statuses go to st[] (at most
 * max), the count is returned. An answer cut short, a Content-Length that
 * is not the body's, or a 503 that is not the `unavailable` envelope with
 * Retry-After fails the test. */
static int answers(const fixture *f, int *st, int max)
{
    const char *p = f->out.data, *end = f->out.data + f->out.len;
    int n = 0;
    while (p < end) {
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        assert_non_null(hend);
        assert_true(n < max);
        assert_memory_equal(p, "HTTP/1.1 ", 9);
        st[n] = atoi(p + 9);
        size_t body = 0;
        const char *cl = memmem(p, (size_t)(hend - p), "\r\nContent-Length: ", 18);
        if (st[n] != 100) {
            assert_non_null(cl);
            body = strtoul(cl + 18, NULL, 10);
        }
        hend += 4;
        assert_true((size_t)(end - hend) >= body);
        if (st[n] == 503) {
            assert_non_null(memmem(p, (size_t)(hend - p), "\r\nRetry-After: ", 15));
            assert_non_null(memmem(hend, body, "\"error\":\"unavailable\"", 21));
        }
        p = hend + body;
        n++;
    }
    return n;
}

/* ---- every route and refusal --------------------------------------------- */

typedef struct api_case {
    const char *name;
    const char *setup;   /* a request answered 200 first, or NULL */
    const char *req;
    size_t chunk;        /* read size; 0 = all at once */
    int status[4];       /* the answers with memory, 0-terminated */
} api_case;

static const api_case cases[] = {
    {"GET item", NULL, "GET /v1/items/hot HTTP/1.1\r\nHost: x\r\n\r\n", 0, {200}},
    {"GET absent item", NULL, "GET /v1/items/none HTTP/1.1\r\n\r\n", 0, {404}},
    {"decrement", NULL,
     "POST /v1/items/hot/decrement HTTP/1.1\r\nIdempotency-Key: k-1\r\n"
     "Content-Length: 24\r\n\r\n{\"user_id\":\"u1\",\"qty\":2}",
     0, {200}},
    {"decrement, chunked body in 7-byte reads", NULL,
     "POST /v1/items/hot/decrement HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     "c\r\n{\"user_id\":\"\r\ne\r\nu2\",\"qty\":1}  \r\n0\r\n\r\n",
     7, {200}},
    {"decrement before the sale", NULL,
     "POST /v1/items/later/decrement HTTP/1.1\r\nContent-Length: 24\r\n\r\n"
     "{\"user_id\":\"u1\",\"qty\":1}",
     0, {425}},
    {"decrement, bad JSON", NULL,
     "POST /v1/items/hot/decrement HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"user_id\":}",
     0, {400}},
    {"decrement, Expect: 100-continue", NULL,
     "POST /v1/items/hot/decrement HTTP/1.1\r\nExpect: 100-continue\r\n"
     "Content-Length: 24\r\n\r\n{\"user_id\":\"u3\",\"qty\":1}",
     83, {100, 200}},   /* the first read ends with the headers */
    {"PUT new item", NULL,
     "PUT /v1/items/new HTTP/1.1\r\n" AUTH "Content-Length: 12\r\n\r\n{\"stock\":50}",
     0, {201}},
    {"order by key",
     "POST /v1/items/hot/decrement HTTP/1.1\r\nIdempotency-Key: k-9\r\n"
     "Content-Length: 24\r\n\r\n{\"user_id\":\"u9\",\"qty\":1}",
     "GET /v1/orders/by-key?user_id=u9 HTTP/1.1\r\nIdempotency-Key: k-9\r\n\r\n", 0, {200}},
    {"audit with order ids",
     "POST /v1/items/hot/decrement HTTP/1.1\r\nContent-Length: 24\r\n\r\n"
     "{\"user_id\":\"u4\",\"qty\":1}",
     "GET /admin/items/hot/audit?orders=true HTTP/1.1\r\n" AUTH "\r\n", 0, {200}},
    {"GET config", NULL, "GET /admin/config HTTP/1.1\r\n" AUTH "\r\n", 0, {200}},
    {"PUT config", NULL,
     "PUT /admin/config HTTP/1.1\r\n" AUTH "Content-Length: 40\r\n\r\n"
     "{\"log_level\":\"debug\",\"local_ttl_ms\":500}",
     0, {200}},
    {"purge (not implemented)", NULL, "POST /admin/cache/purge HTTP/1.1\r\n" AUTH "\r\n", 0,
     {501}},
    {"admin without a token", NULL, "GET /admin/config HTTP/1.1\r\n\r\n", 0, {401}},
    {"metrics", NULL, "GET /metrics HTTP/1.1\r\n\r\n", 0, {200}},
    {"readyz", NULL, "GET /readyz HTTP/1.1\r\n\r\n", 0, {200}},
    {"pipelined", NULL,
     "GET /v1/items/hot HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"
     "GET /metrics HTTP/1.1\r\n\r\n",
     0, {200, 200, 200}},
    {"no route", NULL, "GET /nowhere HTTP/1.1\r\n\r\n", 0, {404}},
    {"wrong method", NULL, "DELETE /v1/items/hot HTTP/1.1\r\n\r\n", 0, {405}},
    {"malformed header", NULL, "GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n", 0, {400}},
    {"URI too long", NULL, NULL, 512, {414}},
    {"body in 1000-byte reads (the read buffer grows)", NULL, NULL, 1000, {200}},
};

/* The two requests built at run time: a 3000-byte URI, and a 20 KB body
 * (whitespace in the JSON) that makes the read buffer grow. */
static char *long_request(const api_case *k)
{
    char *r = malloc(32 << 10);
    assert_non_null(r);
    if (k->status[0] == 414) {
        int n = sprintf(r, "GET /v1/items/");
        memset(r + n, 'a', 3000);
        strcpy(r + n + 3000, " HTTP/1.1\r\n\r\n");
    } else {
        char body[20100];
        int b = sprintf(body, "{\"local_ttl_ms\":5");
        memset(body + b, ' ', 20000);
        strcpy(body + b + 20000, "}");
        sprintf(r, "PUT /admin/config HTTP/1.1\r\n" AUTH "Content-Length: %zu\r\n\r\n%s",
                strlen(body), body);
    }
    return r;
}

static void run_case(void *ctx)
{
    const api_case *k = ctx;
    fixture *f = fx_open();
    char *built = k->req == NULL ? long_request(k) : NULL;
    int st[8], want = 0;
    while (want < 4 && k->status[want])
        want++;
    if (k->setup != NULL) {
        /* On a connection of its own: the one under test starts with no
         * buffer. */
        http_conn s;
        http__conn_init(&s, &f->srv);
        assert_int_equal(http_feed_into(&s, k->setup, strlen(k->setup), 0, &f->out), HTTP__MORE);
        assert_int_equal(answers(f, st, 8), 1);
        assert_int_equal(st[0], 200);
        http__conn_fini(&s);
    }
    failalloc_begin();
    feed(f, built ? built : k->req, k->chunk);
    failalloc_end();
    int n = answers(f, st, 8);
    if (!failalloc_failed()) {
        assert_int_equal(n, want);
        for (int i = 0; i < n; i++)
            assert_int_equal(st[i], k->status[i]);
    } else {
        assert_true(n <= want);
        for (int i = 0; i < n; i++)
            if (st[i] != 503)
                assert_int_equal(st[i], k->status[i]);
    }
    int open = f->state == HTTP__MORE;
    if (n < want)
        assert_false(open);
    if (open) {
        /* The connection goes on as with memory. */
        feed(f, "GET /metrics HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n", 0);
        assert_int_equal(answers(f, st, 8), 2);
        assert_int_equal(st[0], 200);
        assert_int_equal(st[1], 200);
    } else {
        /* Closing (or its read buffer refused): it can still say 503. */
        f->out.len = 0;
        http__reply_error(&f->c, HTTP__R_NONE, 503, "unavailable", "out of memory", NULL);
        kit_buf_append(&f->out, f->c.out.data, f->c.out.len);
        assert_int_equal(answers(f, st, 8), 1);
        assert_int_equal(st[0], 503);
    }
    free(built);
    fx_close(f);
}

static void test_routes(void **state)
{
    (void)state;
    long total = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long points = failalloc_loop(cases[i].name, run_case, (void *)&cases[i]);
        assert_true(points > 0);
        total += points;
    }
    printf("api: %ld allocation points over %zu requests\n", total,
           sizeof cases / sizeof cases[0]);
}

/* ---- the server's own allocations ------------------------------------------- */

static void run_server_init(void *ctx)
{
    (void)ctx;
    http_server srv;
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.admin_token = TOKEN;
    failalloc_begin();
    int rc = http__server_init(&srv, &cfg, NULL);
    failalloc_end();
    if (failalloc_failed()) {
        /* As http_server_start does: nothing to release but srv itself. */
        assert_int_equal(rc, -ENOMEM);
        assert_null(srv.token);
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(http__admin_token_check(&srv, TOKEN, strlen(TOKEN)), 1);
    http__server_fini(&srv);
}

static void test_server_init(void **state)
{
    (void)state;
    assert_int_equal(failalloc_loop("http__server_init", run_server_init, NULL), 1);
}

/* A token swap that cannot copy the new token keeps the old one. */
static void run_set_token(void *ctx)
{
    (void)ctx;
    fixture *f = fx_open();
    failalloc_begin();
    int rc = http_server_set_admin_token(&f->srv, "n3w-token");
    failalloc_end();
    const char *now = failalloc_failed() ? TOKEN : "n3w-token";
    assert_int_equal(rc, failalloc_failed() ? -ENOMEM : 0);
    assert_int_equal(http__admin_token_check(&f->srv, now, strlen(now)), 1);
    fx_close(f);
}

static void test_set_token(void **state)
{
    (void)state;
    assert_int_equal(failalloc_loop("http_server_set_admin_token", run_set_token, NULL), 1);
}

/* The metrics text: -ENOMEM whenever the buffer could not grow. */
static void run_metrics(void *ctx)
{
    (void)ctx;
    kit_buf b = {0};
    failalloc_begin();
    int rc = http_metrics_append(NULL, &b);
    failalloc_end();
    assert_int_equal(rc, failalloc_failed() ? -ENOMEM : 0);
    kit_buf_reset(&b);
    assert_int_equal(http_metrics_append(NULL, &b), 0);
    assert_non_null(strstr(kit_buf_cstr(&b), "http_connections_open "));
    kit_buf_free(&b);
}

static void test_metrics(void **state)
{
    (void)state;
    assert_true(failalloc_loop("http_metrics_append", run_metrics, NULL) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FAILALLOC_TEST(test_routes),
        FAILALLOC_TEST(test_server_init),
        FAILALLOC_TEST(test_set_token),
        FAILALLOC_TEST(test_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
