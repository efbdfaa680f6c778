/*
 * test_service_stack_budget.c: how much of a connection coroutine's stack (the
 * runtime's default, 64 KiB) the code that runs on it uses at its worst,
 * library calls included. Each entry runs on a coroutine of that size; the
 * stack below the caller is painted, the call made, and the deepest byte
 * written is found by scanning up from the bottom. The figures are printed
 * (docs/runtime.md, "Stack budget", quotes them) and each must stay within
 * STACK_BUDGET, a quarter of the stack, so that every path keeps a wide
 * margin for what calls it.
 *
 * Sanitizer builds widen every frame (redzones, fake stacks), so there the
 * figures are printed and held to the whole stack instead.
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
#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "api/http_int.h"
#include "cachesvc/log.h"
#include "cachesvc/metrics.h"
#include "runtime/rt.h"
#include "tests/support/http_feed.h"
#include "tests/support/memservice.h"
#include "tests/support/sanitized.h"


#define CO_STACK (64 * 1024)
#define STACK_BUDGET (16 * 1024)
#define PAINT_DEPTH (56 * 1024)   /* painted below the measuring frame */
#define PAINT_GAP 1024            /* left alone just below it (our calls) */
#define PAINT_BYTE 0xa5

__attribute__((noinline)) static void paint(char *lo, size_t n)
{
    memset(lo, PAINT_BYTE, n);
}

/* Runs fn(arg) and returns the bytes of stack it used below our frame. */
__attribute__((noinline)) static size_t measure(void (*fn)(void *), void *arg)
{
    char *top = __builtin_frame_address(0);
    char *lo = top - PAINT_DEPTH;
    paint(lo, PAINT_DEPTH - PAINT_GAP);
    fn(arg);
    const volatile unsigned char *p = (const volatile unsigned char *)lo;
    while ((const char *)p < top - PAINT_GAP && *p == PAINT_BYTE)
        p++;
    return (size_t)(top - (const char *)p);
}

/* ------------------------------------------------------------------------ */
/* What is measured                                                          */

static http_service *svc;
static http_server srv;

/* Feeds req to a fresh connection and answers it: the whole request path
 * (http-parser, the header checks, the router, the body reader, the
 * handlers, the response formatting with its snprintf calls). */
static void http_request(void *arg)
{
    const char *req = arg;
    http_conn c;
    http__conn_init(&c, &srv);
    http_feed(&c, req, strlen(req), 0);
    http__conn_fini(&c);
}

/* hiredis's reader on a reply nested past its limit and on a large bulk
 * string, and its command formatter (the Redis client runs both on the
 * calling coroutine). */
static void hiredis_reader(void *arg)
{
    (void)arg;
    redisReader *r = redisReaderCreate();
    assert_non_null(r);
    char nested[256] = "";
    for (int i = 0; i < 32; i++)
        strcat(nested, "*1\r\n");
    strcat(nested, ":1\r\n");
    void *reply = NULL;
    redisReaderFeed(r, nested, strlen(nested));
    redisReaderGetReply(r, &reply);   /* a protocol error: too deep */
    if (reply)
        freeReplyObject(reply);
    redisReaderFree(r);

    r = redisReaderCreate();
    static char bulk[70000];
    int n = snprintf(bulk, sizeof bulk, "$%d\r\n", 65536);
    memset(bulk + n, 'x', 65536);
    memcpy(bulk + n + 65536, "\r\n", 2);
    redisReaderFeed(r, bulk, (size_t)n + 65538);
    reply = NULL;
    assert_int_equal(redisReaderGetReply(r, &reply), REDIS_OK);
    freeReplyObject(reply);
    redisReaderFree(r);

    const char *argv[] = {"EVALSHA", "0123456789012345678901234567890123456789", "1",
                          "stock:{sku}", "42", "10|0|0", "3600000"};
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, 7, argv, NULL);
    assert_true(len > 0);
    redisFreeCommand(cmd);
}

/* libpq's connection start as the PostgreSQL store makes it on a request's
 * coroutine (pool_get -> conn_open): URL parsing and name resolution. The
 * port is closed, so it ends in a refused connection. */
static void libpq_connect(void *arg)
{
    PGconn *c = PQconnectStart((const char *)arg);
    if (c == NULL)
        return;
    for (int i = 0; i < 100 && PQstatus(c) != CONNECTION_BAD; i++) {
        PostgresPollingStatusType ps = PQconnectPoll(c);
        if (ps == PGRES_POLLING_FAILED || ps == PGRES_POLLING_OK)
            break;
    }
    PQfinish(c);
}

/* The service's log line (logfmt through vsnprintf, with the widest %.3f
 * a double can ask for) and the double formats of its metrics page. */
static void service_log(void *arg)
{
    (void)arg;
    svc_log(SVC_LOG_ERROR, "req-1", "stack budget", "sku=%s err=\"%s\" v=%lld ms=%.3f",
            "hot", "a long error text from a dependency", 123456789LL, 1.7e308);
}

static void service_metrics(void *arg)
{
    (void)arg;
    kit_buf b = {0};
    svc_metrics_render(&b);
    kit_buf_free(&b);
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g %g %.17g", 1.7e308, 4.9e-324, -2.2250738585072014e-308);
}

/* cJSON (which no longer parses request bodies) at 100 levels, to show the
 * per-level cost that ruled it out: it recurses once per level. */
static void cjson_100(void *arg)
{
    (void)arg;
    char doc[256];
    memset(doc, '[', 100);
    memset(doc + 100, ']', 100);
    doc[200] = 0;
    cJSON *j = cJSON_Parse(doc);
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------------ */

struct entry {
    const char *what;
    void (*fn)(void *);
    void *arg;
    int budgeted;   /* held to STACK_BUDGET (else reported only) */
    size_t used;
};

static struct entry *entries;
static size_t nentries;

static void run_entries(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < nentries; i++) {
        size_t used = 0;
        for (int k = 0; k < 2; k++) {   /* the second run: lazy paths warmed */
            size_t u = measure(entries[i].fn, entries[i].arg);
            if (u > used)
                used = u;
        }
        entries[i].used = used;
    }
}

static char deep_body_req[80000];
static char chunked_req[4096];

static void test_stack_budget(void **st)
{
    (void)st;
    svc = http_memservice_new();
    assert_int_equal(http_memservice_put(svc, "hot", 1000000, 0, 0), 0);
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.admin_token = "tok";
    assert_int_equal(http__server_init(&srv, &cfg, svc), 0);
    svc_log_set_fd(-1);

    /* The deepest body the default limit lets through: 65,000 '['. */
    int n = snprintf(deep_body_req, sizeof deep_body_req,
                     "POST /v1/items/hot/decrement HTTP/1.1\r\nContent-Length: 65000\r\n\r\n");
    memset(deep_body_req + n, '[', 65000);
    deep_body_req[n + 65000] = 0;
    snprintf(chunked_req, sizeof chunked_req,
             "POST /v1/items/hot/decrement HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
             "Idempotency-Key: k-1\r\n\r\n"
             "5\r\n{\"use\r\n13;ext=1\r\nr_id\":\"u1\",\"qty\":1}\r\n0\r\nT: x\r\n\r\n"
             "GET /v1/items/hot HTTP/1.1\r\n\r\n");
    struct entry e[] = {
        {"api: GET an item", http_request, "GET /v1/items/hot HTTP/1.1\r\nHost: x\r\n\r\n", 1, 0},
        {"api: decrement, chunked body, pipelined GET", http_request, chunked_req, 1, 0},
        {"api: decrement with 65,000 nested arrays", http_request, deep_body_req, 1, 0},
        {"api: PUT /admin/config", http_request,
         "PUT /admin/config HTTP/1.1\r\nAuthorization: Bearer tok\r\nContent-Length: 62\r\n\r\n"
         "{\"invalidation_delay_ms\":5,\"local_ttl_ms\":10,\"log_level\":\"info\"}", 1, 0},
        {"api: GET /metrics", http_request, "GET /metrics HTTP/1.1\r\n\r\n", 1, 0},
        {"api: malformed header section", http_request,
         "GET /v1/items/hot HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", 1, 0},
        {"hiredis: reader (nested, 64 KiB bulk), formatter", hiredis_reader, NULL, 1, 0},
        {"libpq: PQconnectStart/Poll, numeric host", libpq_connect,
         "postgresql://x@127.0.0.1:1/x?connect_timeout=2", 1, 0},
        {"libpq: PQconnectStart/Poll, host name", libpq_connect,
         "postgresql://x@localhost:1/x?connect_timeout=2", 1, 0},
        {"cachesvc: log line with %.3f of 1.7e308", service_log, NULL, 1, 0},
        {"cachesvc: metrics page, %.17g of extreme doubles", service_metrics, NULL, 1, 0},
        {"cJSON_Parse, 100 levels (not used on coroutines)", cjson_100, NULL, 0, 0},
    };
    entries = e;
    nentries = sizeof e / sizeof e[0];

    rt_config rc = {.workers = 1, .stack_size = CO_STACK, .hog_threshold_ms = -1};
    assert_int_equal(rt_main(&rc, run_entries, NULL), 0);

    size_t limit = SANITIZED ? CO_STACK : STACK_BUDGET;
    printf("stack use on a %d KiB coroutine (budget %zu bytes%s):\n", CO_STACK / 1024,
           limit, SANITIZED ? ", sanitizer build" : "");
    int over = 0;
    for (size_t i = 0; i < nentries; i++) {
        printf("  %6zu  %s\n", e[i].used, e[i].what);
        if (e[i].budgeted && e[i].used > limit) {
            printf("          ^ over the budget\n");
            over = 1;
        }
    }
    fflush(stdout);
    assert_false(over);
    http__server_fini(&srv);
    http_memservice_free(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stack_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
