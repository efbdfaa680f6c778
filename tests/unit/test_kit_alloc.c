/*
 * test_kit_alloc.c: the kit under allocation failure (failalloc.h): every
 * allocation of kit_buf's appends and of the Prometheus writers fails in
 * turn. A failed append returns -ENOMEM and leaves the text as it was; the
 * buffer's oom flag then says the text has a hole (kit_buf_cstr gives "")
 * until kit_buf_reset, after which the buffer works as new.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kit/buf.h"
#include "kit/metrics.h"
#include "tests/support/failalloc.h"

/* ---- kit_buf ------------------------------------------------------------ */

/* Appends pieces of every kind, growing the buffer several times; expect
 * gets the pieces that were accepted, in order. */
static void appends(kit_buf *b, kit_buf *expect)
{
    char big[3000];
    memset(big, 'x', sizeof big);
    for (int i = 0; i < 6; i++) {
        int rc;
        char piece[64];
        switch (i % 3) {
        case 0:
            rc = kit_buf_puts(b, "label=\"value\"\n");
            snprintf(piece, sizeof piece, "label=\"value\"\n");
            break;
        case 1:
            rc = kit_buf_printf(b, "n%d %lld\n", i, 1234567890123LL * i);
            snprintf(piece, sizeof piece, "n%d %lld\n", i, 1234567890123LL * i);
            break;
        default:
            rc = kit_buf_append(b, big, sizeof big);
            piece[0] = '\0';
            break;
        }
        assert_true(rc == 0 || rc == -ENOMEM);
        if (rc == 0 && piece[0])
            kit_buf_puts(expect, piece);
        else if (rc == 0)
            kit_buf_append(expect, big, sizeof big);
    }
}

static void run_buf(void *ctx)
{
    (void)ctx;
    kit_buf b = {0}, expect = {0};
    kit_buf_reserve(&expect, 1 << 16);   /* the checks allocate nothing armed */
    failalloc_begin();
    appends(&b, &expect);
    failalloc_end();
    if (failalloc_failed()) {
        assert_int_equal(b.oom, 1);
        assert_string_equal(kit_buf_cstr(&b), "");
    } else {
        assert_int_equal(b.oom, 0);
    }
    /* What was accepted is there, byte for byte, whatever failed. */
    assert_int_equal(b.len, expect.len);
    assert_true(b.len == 0 || memcmp(b.data, expect.data, b.len) == 0);
    /* Reset: usable as new. */
    kit_buf_reset(&b);
    assert_int_equal(b.oom, 0);
    expect.len = 0;
    appends(&b, &expect);
    assert_string_equal(kit_buf_cstr(&b), kit_buf_cstr(&expect));
    kit_buf_free(&b);
    kit_buf_free(&expect);
}

static void test_buf(void **state)
{
    (void)state;
    assert_true(failalloc_loop("kit_buf appends", run_buf, NULL) > 0);
}

/* A reservation refused leaves the buffer as it was. */
static void run_reserve(void *ctx)
{
    (void)ctx;
    kit_buf b = {0};
    assert_int_equal(kit_buf_puts(&b, "kept"), 0);
    size_t cap = b.cap;
    char *data = b.data;
    failalloc_begin();
    int rc = kit_buf_reserve(&b, 100000);
    failalloc_end();
    if (failalloc_failed()) {
        assert_int_equal(rc, -ENOMEM);
        assert_int_equal(b.cap, cap);
        assert_ptr_equal(b.data, data);
        assert_int_equal(b.len, 4);
        assert_memory_equal(b.data, "kept", 4);
    } else {
        assert_int_equal(rc, 0);
        assert_true(b.cap - b.len > 100000);
    }
    kit_buf_free(&b);
}

static void test_reserve(void **state)
{
    (void)state;
    assert_int_equal(failalloc_loop("kit_buf_reserve", run_reserve, NULL), 1);
}

/* A reservation no allocator could grant answers -ENOMEM at once, the
 * buffer as it was. */
static void test_reserve_too_large(void **state)
{
    (void)state;
    kit_buf b = {0};
    assert_int_equal(kit_buf_puts(&b, "kept"), 0);
    assert_int_equal(kit_buf_reserve(&b, SIZE_MAX / 2 + 2), -ENOMEM);
    assert_int_equal(kit_buf_reserve(&b, SIZE_MAX - 2), -ENOMEM);
    assert_int_equal(kit_buf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.oom, 1);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "kept", 5);
    kit_buf_free(&b);
}

/* ---- the Prometheus writers ---------------------------------------------- */

#define TEST_COUNTERS(X)                                                       \
    X(alpha, "First counter") X(beta, "Second counter") X(gamma, "Third")     \
    X(delta, "Fourth counter") X(epsilon, "Fifth counter")
static const kit_metric counters[] = {TEST_COUNTERS(KIT_METRIC)};
static const double le[] = {0.001, 0.01, 0.1, 1, 10};
#define NB ((int)(sizeof le / sizeof le[0]))
KIT_CELLS_STATIC(hcells, KIT_HIST_CELLS(NB));

/* Every writer of metrics.h but kit_prom_process (whose values move). */
static void render(kit_buf *b)
{
    uint64_t v[] = {1, 2, 3, 4, 5};
    uint64_t counts[NB + 1] = {1, 2, 3, 4, 5, 6};
    kit_prom_header(b, "t_requests_total", "counter", "Requests.");
    kit_prom_sample(b, "t_requests_total", "route=\"/a\"", 12.5);
    kit_prom_sample(b, "t_requests_total", NULL, NAN);
    kit_prom_sample_u64(b, "t_requests_total", "route=\"/b\"", 18446744073709551615ull);
    kit_prom_one(b, "t_open", "gauge", "Open things", 3);
    kit_prom_one_u64(b, "t_seen_total", "counter", "Seen things", 7);
    kit_prom_list(b, "t_", "_total", "counter", "Test: ", counters, v, 5);
    kit_prom_hist(b, "t_seconds", "route=\"/a\"", le, counts, NB, 1.25);
    kit_prom_hist_cells(b, "t_cell_seconds", NULL, &hcells, 0, le, NB, 1e-9);
    kit_buf_puts(b, "t_label{v=\"");
    kit_prom_label_value(b, "quote\" backslash\\ newline\n");
    kit_buf_puts(b, "\"} 1\n");
}

static void run_prom(void *ctx)
{
    const char *reference = ctx;
    kit_buf b = {0};
    failalloc_begin();
    render(&b);
    failalloc_end();
    if (failalloc_failed()) {
        assert_int_equal(b.oom, 1);
        assert_string_equal(kit_buf_cstr(&b), "");
    } else {
        assert_string_equal(kit_buf_cstr(&b), reference);
    }
    kit_buf_reset(&b);
    render(&b);
    assert_string_equal(kit_buf_cstr(&b), reference);
    kit_buf_free(&b);
}

static void test_prom(void **state)
{
    (void)state;
    kit_hist_observe(&hcells, 0, le, NB, 0.05, 50000000);
    kit_buf ref = {0};
    render(&ref);
    assert_int_equal(ref.oom, 0);
    assert_true(failalloc_loop("kit_prom writers", run_prom, ref.data) > 0);
    kit_buf_free(&ref);
}

/* The process metrics read /proc (libc's own allocations are not counted);
 * only the buffer's growth fails. */
static void run_process(void *ctx)
{
    (void)ctx;
    kit_buf b = {0};
    failalloc_begin();
    kit_prom_process(&b);
    failalloc_end();
    assert_int_equal(b.oom, failalloc_failed() > 0);
    if (!b.oom)
        assert_non_null(strstr(kit_buf_cstr(&b), "\nprocess_open_fds "));
    kit_buf_reset(&b);
    kit_prom_process(&b);
    assert_non_null(strstr(kit_buf_cstr(&b), "\nprocess_max_fds "));
    kit_buf_free(&b);
}

static void test_process(void **state)
{
    (void)state;
    assert_true(failalloc_loop("kit_prom_process", run_process, NULL) > 0);
}

/* ---- the shim itself ------------------------------------------------------ */

/* A run that forgets the first block when the second allocation fails:
 * the loop must report it (the test frees the block afterwards, for
 * LeakSanitizer). */
static void run_leaky(void *ctx)
{
    void **kept = ctx;
    failalloc_begin();
    char *a = malloc(16), *b = strdup("b");
    failalloc_end();
    if (a != NULL && b == NULL)
        *kept = a;
    else
        free(a);
    free(b);
}

static void test_shim_sees_leaks(void **state)
{
    (void)state;
    void *kept = NULL;
    assert_int_equal(failalloc_loop("a leaky run", run_leaky, &kept), -1);
    assert_non_null(kept);
    free(kept);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FAILALLOC_TEST(test_buf),
        FAILALLOC_TEST(test_reserve),
        FAILALLOC_TEST(test_reserve_too_large),
        FAILALLOC_TEST(test_prom),
        FAILALLOC_TEST(test_process),
        FAILALLOC_TEST(test_shim_sees_leaks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
