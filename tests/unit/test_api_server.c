/*
 * test_api_server.c: the server on the runtime, over loopback (ports
 * 21400-21420): keep-alive reuse, idle and header deadlines, the connection
 * cap, graceful stop with a request in flight, a stop whose deadline
 * passes, an admin token swapped while an admin request is in flight, and
 * idle connections that hold no coroutine.
 *
 * cmocka's assertions longjmp, which must not cross coroutine stacks, so
 * the coroutines count failures with CHECK (tests/support/check.h) and the
 * test asserts on the count after rt_main() returned.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/http.h"
#include "api/http_service.h"
#include "runtime/rt.h"
#include "tests/support/check.h"
#include "tests/support/memservice.h"

static http_service *mem;
static int64_t slow_ms;     /* get_item parks this long (slow service) */

static int slow_get_item(void *ctx, const char *sku, http_item *out,
                         http_tier *tier)
{
    if (slow_ms)
        rt_sleep(slow_ms);
    return mem->get_item(mem->ctx, sku, out, tier);
}

/* get_config parks slow_ms too (an admin route in flight). */
static int slow_get_config(void *ctx, http_config_values *out)
{
    if (slow_ms)
        rt_sleep(slow_ms);
    return mem->get_config(mem->ctx, out);
}

static http_service slow_svc;

static void run(rt_fn fn)
{
    check_reset();
    mem = http_memservice_new();
    assert_non_null(mem);
    http_memservice_put(mem, "hot", 100, 0, 0);
    slow_svc = *mem;
    slow_svc.get_item = slow_get_item;
    slow_svc.get_config = slow_get_config;
    slow_ms = 0;
    rt_config cfg = {.workers = 2};
    assert_int_equal(rt_main(&cfg, fn, NULL), 0);
    http_memservice_free(mem);
    assert_checks_passed();
}

static http_server *start(int port, void (*tune)(http_server_config *))
{
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.port = port;
    cfg.acceptors = 2;
    if (tune)
        tune(&cfg);
    http_server *srv = NULL;
    int rc = http_server_start(&cfg, &slow_svc, &srv);
    CHECK(rc == 0);
    return rc == 0 ? srv : NULL;
}

static const char get_hot[] = "GET /v1/items/hot HTTP/1.1\r\n\r\n";

/* Reads one response into buf (NUL-terminated). Returns its length, 0 on
 * EOF before any byte, or a negative errno. */
static int read_resp(int fd, char *buf, size_t cap, int64_t ms)
{
    size_t have = 0;
    int64_t dl = rt_deadline_ms(ms);
    for (;;) {
        buf[have] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            char *cl = strcasestr(buf, "Content-Length:");
            size_t blen = cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0;
            if (have >= (size_t)(end + 4 - buf) + blen)
                return (int)have;
        }
        ssize_t n = rt_read(fd, buf + have, cap - 1 - have, dl);
        if (n <= 0)
            return n == 0 && have ? -EPIPE : (int)n;
        have += (size_t)n;
    }
}

/* ------------------------------------------------------------------------ */

static void co_keepalive(void *arg)
{
    (void)arg;
    http_server *srv = start(21400, NULL);
    if (!srv)
        return;
    CHECK(http_server_port(srv) == 21400);
    int fd = rt_dial_tcp("127.0.0.1", 21400, rt_deadline_ms(2000));
    CHECK(fd >= 0);
    char buf[4096], first_id[64] = "";
    for (int i = 0; i < 3; i++) {
        CHECK(rt_write(fd, get_hot, sizeof get_hot - 1, rt_deadline_ms(1000)) > 0);
        CHECK(read_resp(fd, buf, sizeof buf, 2000) > 0);
        CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
        /* Same connection: same id prefix, sequence i. */
        char *id = strstr(buf, "X-Request-Id: ");
        CHECK(id != NULL);
        if (!id)
            break;
        char *dash = strchr(id + 14, '-');
        char seq[8];
        snprintf(seq, sizeof seq, "-%x\r", i);
        CHECK(dash && strncmp(dash, seq, strlen(seq)) == 0);
        if (i == 0)
            snprintf(first_id, sizeof first_id, "%.*s", (int)(dash - id), id);
        else
            CHECK(strncmp(id, first_id, strlen(first_id)) == 0);
    }
    rt_close(fd);
    CHECK(http_server_stop(srv, rt_deadline_ms(2000)) == 0);
}

static void test_keepalive(void **st)
{
    (void)st;
    run(co_keepalive);
}

static void short_timeouts(http_server_config *c)
{
    c->idle_timeout_ms = 200;
    c->header_timeout_ms = 200;
}

static void co_deadlines(void *arg)
{
    (void)arg;
    http_server *srv = start(21401, short_timeouts);
    if (!srv)
        return;
    char buf[4096];
    /* Idle keep-alive connection: closed after the idle timeout. */
    int fd = rt_dial_tcp("127.0.0.1", 21401, rt_deadline_ms(2000));
    CHECK(rt_write(fd, get_hot, sizeof get_hot - 1, rt_deadline_ms(1000)) > 0);
    CHECK(read_resp(fd, buf, sizeof buf, 2000) > 0);
    CHECK(rt_read(fd, buf, sizeof buf, rt_deadline_ms(3000)) == 0);
    rt_close(fd);
    /* Half a request: 408 at the header deadline, then close. */
    fd = rt_dial_tcp("127.0.0.1", 21401, rt_deadline_ms(2000));
    CHECK(rt_write(fd, "GET /v1/it", 10, rt_deadline_ms(1000)) == 10);
    int n = read_resp(fd, buf, sizeof buf, 3000);
    CHECK(n > 0 && strncmp(buf, "HTTP/1.1 408 ", 13) == 0);
    CHECK(strstr(buf, "Connection: close\r\n") != NULL);
    CHECK(rt_read(fd, buf, sizeof buf, rt_deadline_ms(3000)) == 0);
    rt_close(fd);
    CHECK(http_server_stop(srv, rt_deadline_ms(2000)) == 0);
}

static void test_deadlines(void **st)
{
    (void)st;
    run(co_deadlines);
}

static void cap2(http_server_config *c)
{
    c->max_conns = 2;
}

static void co_cap(void *arg)
{
    (void)arg;
    http_server *srv = start(21402, cap2);
    if (!srv)
        return;
    char buf[4096];
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = rt_dial_tcp("127.0.0.1", 21402, rt_deadline_ms(2000));
        CHECK(fds[i] >= 0);
        rt_sleep(50);   /* accepted in order */
    }
    for (int i = 0; i < 2; i++) {
        CHECK(rt_write(fds[i], get_hot, sizeof get_hot - 1, rt_deadline_ms(1000)) > 0);
        CHECK(read_resp(fds[i], buf, sizeof buf, 2000) > 0);
        CHECK(strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
    }
    CHECK(read_resp(fds[2], buf, sizeof buf, 2000) > 0);
    CHECK(strncmp(buf, "HTTP/1.1 503 ", 13) == 0);
    CHECK(strstr(buf, "\"error\":\"unavailable\"") != NULL);
    CHECK(strstr(buf, "\r\nRetry-After: 1\r\n") != NULL);
    for (int i = 0; i < 3; i++)
        rt_close(fds[i]);
    CHECK(http_server_stop(srv, rt_deadline_ms(2000)) == 0);
}

static void test_conn_cap(void **st)
{
    (void)st;
    run(co_cap);
}

typedef struct stopper {
    http_server *srv;
    int64_t delay_ms, deadline_ms;
    int rc;
    rt_wg *wg;
} stopper;

static void co_stopper(void *arg)
{
    stopper *s = arg;
    rt_sleep(s->delay_ms);
    s->rc = http_server_stop(s->srv, rt_deadline_ms(s->deadline_ms));
    rt_wg_done(s->wg);
}

/* A request in flight when the stop begins is answered, with
 * Connection: close; an idle connection is closed; the stop returns 0. */
static void co_drain(void *arg)
{
    (void)arg;
    http_server *srv = start(21403, NULL);
    if (!srv)
        return;
    char buf[4096];
    int idle = rt_dial_tcp("127.0.0.1", 21403, rt_deadline_ms(2000));
    CHECK(rt_write(idle, "GET /healthz HTTP/1.1\r\n\r\n", 25, rt_deadline_ms(1000)) == 25);
    CHECK(read_resp(idle, buf, sizeof buf, 2000) > 0);
    slow_ms = 300;
    int fd = rt_dial_tcp("127.0.0.1", 21403, rt_deadline_ms(2000));
    CHECK(rt_write(fd, get_hot, sizeof get_hot - 1, rt_deadline_ms(1000)) > 0);
    stopper s = {.srv = srv, .delay_ms = 100, .deadline_ms = 3000, .wg = rt_wg_new()};
    rt_wg_add(s.wg, 1);
    CHECK(rt_spawn(NULL, co_stopper, &s) == 0);
    int n = read_resp(fd, buf, sizeof buf, 3000);
    CHECK(n > 0 && strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(strstr(buf, "Connection: close\r\n") != NULL);
    CHECK(rt_read(fd, buf, sizeof buf, rt_deadline_ms(2000)) == 0);
    CHECK(rt_read(idle, buf, sizeof buf, rt_deadline_ms(2000)) == 0);
    CHECK(rt_wg_wait(s.wg, rt_deadline_ms(5000)) == 0);
    CHECK(s.rc == 0);
    /* Nothing listens any more. */
    int again = rt_dial_tcp("127.0.0.1", 21403, rt_deadline_ms(1000));
    CHECK(again < 0);
    if (again >= 0)
        rt_close(again);
    rt_close(fd);
    rt_close(idle);
    rt_wg_free(s.wg);
}

static void test_drain_inflight(void **st)
{
    (void)st;
    run(co_drain);
}

/* The handler outlives the stop's deadline: the stop cuts the socket,
 * waits for the handler and reports -ETIMEDOUT. */
static void co_drain_deadline(void *arg)
{
    (void)arg;
    http_server *srv = start(21404, NULL);
    if (!srv)
        return;
    char buf[4096];
    slow_ms = 800;
    int fd = rt_dial_tcp("127.0.0.1", 21404, rt_deadline_ms(2000));
    CHECK(rt_write(fd, get_hot, sizeof get_hot - 1, rt_deadline_ms(1000)) > 0);
    rt_sleep(50);
    int64_t t0 = rt_now_ms();
    CHECK(http_server_stop(srv, rt_deadline_ms(100)) == -ETIMEDOUT);
    CHECK(rt_now_ms() - t0 >= 500);   /* waited for the handler */
    CHECK(read_resp(fd, buf, sizeof buf, 2000) <= 0);
    rt_close(fd);
}

static void test_drain_deadline(void **st)
{
    (void)st;
    run(co_drain_deadline);
}

static void token_old(http_server_config *c)
{
    c->admin_token = "old-token";
}

static const char cfg_old[] =
    "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer old-token\r\n\r\n";
static const char cfg_new[] =
    "GET /admin/config HTTP/1.1\r\nAuthorization: Bearer new-token\r\n\r\n";

/* http_server_set_admin_token while an admin request (checked with the
 * old token) is parked in the service: that request is answered 200;
 * later ones need the new token, on the same connection too. */
static void co_token_swap(void *arg)
{
    (void)arg;
    http_server *srv = start(21405, token_old);
    if (!srv)
        return;
    char buf[4096];
    int fd = rt_dial_tcp("127.0.0.1", 21405, rt_deadline_ms(2000));
    CHECK(fd >= 0);
    slow_ms = 300;
    CHECK(rt_write(fd, cfg_old, sizeof cfg_old - 1, rt_deadline_ms(1000)) > 0);
    rt_sleep(100);
    CHECK(http_server_set_admin_token(srv, "new-token") == 0);
    int n = read_resp(fd, buf, sizeof buf, 3000);
    CHECK(n > 0 && strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(strstr(buf, "\"invalidation_delay_ms\":") != NULL);
    slow_ms = 0;
    CHECK(rt_write(fd, cfg_old, sizeof cfg_old - 1, rt_deadline_ms(1000)) > 0);
    n = read_resp(fd, buf, sizeof buf, 2000);
    CHECK(n > 0 && strncmp(buf, "HTTP/1.1 401 ", 13) == 0);
    CHECK(rt_write(fd, cfg_new, sizeof cfg_new - 1, rt_deadline_ms(1000)) > 0);
    n = read_resp(fd, buf, sizeof buf, 2000);
    CHECK(n > 0 && strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    rt_close(fd);
    CHECK(http_server_stop(srv, rt_deadline_ms(2000)) == 0);
}

static void test_token_swap(void **st)
{
    (void)st;
    run(co_token_swap);
}

static uint64_t live_coroutines(void)
{
    rt_stats st;
    rt_stats_get(&st);
    return st.live;
}

/* Idle keep-alive connections hold no coroutine (rt_fd_await): 200 of
 * them, each after one answer, leave the live coroutines where they were;
 * each still answers a second request, a pipelined pair, and a request
 * whose bytes arrive in two writes; closed, nothing is left. */
static void co_idle_no_coroutine(void *arg)
{
    (void)arg;
    enum { N = 200 };
    http_server *srv = start(21406, NULL);
    if (!srv)
        return;
    char buf[8192];
    int fds[N];
    rt_sleep(20);
    uint64_t live0 = live_coroutines();
    for (int i = 0; i < N; i++) {
        fds[i] = rt_dial_tcp("127.0.0.1", 21406, rt_deadline_ms(2000));
        CHECK(fds[i] >= 0);
        if (fds[i] < 0)
            continue;
        CHECK(rt_write(fds[i], get_hot, sizeof get_hot - 1, rt_deadline_ms(1000)) > 0);
        CHECK(read_resp(fds[i], buf, sizeof buf, 2000) > 0);
        CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    }
    rt_sleep(50);   /* the last answers' coroutines have ended */
    uint64_t live1 = live_coroutines();
    CHECK(live1 <= live0 + 2);
    if (live1 > live0 + 2)
        fprintf(stderr, "live coroutines: %llu with %d idle connections, %llu before\n",
                (unsigned long long)live1, N, (unsigned long long)live0);
    for (int i = 0; i < N; i++) {
        if (fds[i] < 0)
            continue;
        CHECK(rt_write(fds[i], get_hot, sizeof get_hot - 1, rt_deadline_ms(1000)) > 0);
        CHECK(read_resp(fds[i], buf, sizeof buf, 2000) > 0);
        CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    }
    /* Two pipelined requests on an idle connection, answered in order. */
    static const char two[] = "GET /healthz HTTP/1.1\r\n\r\nGET /v1/items/hot HTTP/1.1\r\n\r\n";
    CHECK(rt_write(fds[0], two, sizeof two - 1, rt_deadline_ms(1000)) > 0);
    int n = read_resp(fds[0], buf, sizeof buf, 2000);
    CHECK(n > 0 && strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(n > 0 && strstr(buf, "{\"status\":\"ok\"}") != NULL);
    if (n > 0 && !strstr(buf, "\"sku\""))
        n = read_resp(fds[0], buf, sizeof buf, 2000);
    CHECK(n > 0 && strstr(buf, "\"sku\":\"hot\"") != NULL);
    /* A request in two writes wakes the connection once and is answered
     * once it is whole. */
    CHECK(rt_write(fds[1], get_hot, 10, rt_deadline_ms(1000)) == 10);
    rt_sleep(30);
    CHECK(rt_write(fds[1], get_hot + 10, sizeof get_hot - 11, rt_deadline_ms(1000)) > 0);
    n = read_resp(fds[1], buf, sizeof buf, 2000);
    CHECK(n > 0 && strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            rt_close(fds[i]);
    int64_t dl = rt_deadline_ms(2000);
    while (live_coroutines() > live0 && rt_now_ns() < dl)
        rt_sleep(10);
    CHECK(live_coroutines() <= live0);
    CHECK(http_server_stop(srv, rt_deadline_ms(2000)) == 0);
}

static void test_idle_no_coroutine(void **st)
{
    (void)st;
    run(co_idle_no_coroutine);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_conn_cap),
        cmocka_unit_test(test_drain_inflight),
        cmocka_unit_test(test_drain_deadline),
        cmocka_unit_test(test_token_swap),
        cmocka_unit_test(test_idle_no_coroutine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
