/*
 * test_invalidator.c: unit tests of the invalidator's parts that need no
 * broker: the event codec, the histograms, the contiguous-offset tracker
 * and the delay queue (one pending entry per sku, highest version wins).
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

#include "invalidator/inv_int.h"

static inv_event mkev(const char *sku, int64_t version, int64_t committed,
                      int64_t due)
{
    inv_event ev;
    memset(&ev, 0, sizeof(ev));
    snprintf(ev.sku, sizeof(ev.sku), "%s", sku);
    ev.sku_len = strlen(ev.sku);
    ev.version = version;
    ev.committed_at_ms = committed;
    ev.due_at_ms = due;
    return ev;
}

/* ---------------------------------------------------------------------- */
/* Codec                                                                    */

static void test_event_roundtrip(void **state)
{
    (void)state;
    inv_event ev = mkev("hot-item_1.a:b", 188, 1700000000123, 1700000000323);
    char buf[INV_EVENT_JSON_MAX];
    int n = inv__event_encode(&ev, buf, sizeof(buf));
    assert_true(n > 0);
    assert_string_equal(buf, "{\"sku\":\"hot-item_1.a:b\",\"version\":188,"
                             "\"committed_at_ms\":1700000000123,"
                             "\"due_at_ms\":1700000000323}");
    inv_event out;
    assert_int_equal(inv__event_decode(buf, (size_t)n, &out), 0);
    assert_string_equal(out.sku, "hot-item_1.a:b");
    assert_int_equal(out.sku_len, 14);
    assert_int_equal(out.version, 188);
    assert_int_equal(out.committed_at_ms, 1700000000123);
    assert_int_equal(out.due_at_ms, 1700000000323);
}

static void test_event_max_length(void **state)
{
    (void)state;
    char sku[INV_SKU_MAX + 1];
    memset(sku, 'x', INV_SKU_MAX);
    sku[INV_SKU_MAX] = '\0';
    inv_event ev = mkev(sku, INT64_MAX, INT64_MAX, INT64_MAX);
    char buf[INV_EVENT_JSON_MAX];
    int n = inv__event_encode(&ev, buf, sizeof(buf));
    assert_true(n > 0);
    inv_event out;
    assert_int_equal(inv__event_decode(buf, (size_t)n, &out), 0);
    assert_int_equal(out.version, INT64_MAX);
    assert_int_equal(inv__event_encode(&ev, buf, 20), -ENOSPC);
}

static void test_event_encode_rejects(void **state)
{
    (void)state;
    char buf[INV_EVENT_JSON_MAX];
    inv_event ev = mkev("bad sku", 1, 1, 1);
    assert_int_equal(inv__event_encode(&ev, buf, sizeof(buf)), -EINVAL);
    ev = mkev("", 1, 1, 1);
    assert_int_equal(inv__event_encode(&ev, buf, sizeof(buf)), -EINVAL);
    ev = mkev("ok", -1, 1, 1);
    assert_int_equal(inv__event_encode(&ev, buf, sizeof(buf)), -EINVAL);
}

static void test_event_decode_variants(void **state)
{
    (void)state;
    inv_event ev;
    const char *ok[] = {
        " { \"due_at_ms\" : 5 , \"sku\":\"a\",\"version\":0,"
        "\"committed_at_ms\":3 }\n",
        "{\"sku\":\"a\",\"extra\":\"x y\",\"version\":1,\"n\":7,"
        "\"committed_at_ms\":3,\"due_at_ms\":5}",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_int_equal(inv__event_decode(ok[i], strlen(ok[i]), &ev), 0);
    const char *bad[] = {
        "",
        "{}",
        "[]",
        "{\"sku\":\"a\",\"version\":1,\"committed_at_ms\":3}",
        "{\"sku\":\"a\",\"version\":1,\"committed_at_ms\":3,\"due_at_ms\":5",
        "{\"sku\":\"a\",\"version\":1,\"committed_at_ms\":3,\"due_at_ms\":5}x",
        "{\"sku\":\"a\",\"sku\":\"b\",\"version\":1,\"committed_at_ms\":3,"
        "\"due_at_ms\":5}",
        "{\"sku\":\"a b\",\"version\":1,\"committed_at_ms\":3,\"due_at_ms\":5}",
        "{\"sku\":\"a\\\"\",\"version\":1,\"committed_at_ms\":3,"
        "\"due_at_ms\":5}",
        "{\"sku\":\"a\",\"version\":-1,\"committed_at_ms\":3,\"due_at_ms\":5}",
        "{\"sku\":\"a\",\"version\":1.5,\"committed_at_ms\":3,\"due_at_ms\":5}",
        "{\"sku\":\"a\",\"version\":01,\"committed_at_ms\":3,\"due_at_ms\":5}",
        "{\"sku\":\"a\",\"version\":99999999999999999999,"
        "\"committed_at_ms\":3,\"due_at_ms\":5}",
        "{\"sku\":\"a\",\"version\":1,\"committed_at_ms\":3,\"due_at_ms\":5,}",
        "{\"sku\":\"a\",\"x\":{},\"version\":1,\"committed_at_ms\":3,"
        "\"due_at_ms\":5}",
        "{\"sku\":1,\"version\":1,\"committed_at_ms\":3,\"due_at_ms\":5}",
        /* a purge is purge_at_ms alone, positive */
        "{\"purge_at_ms\":0}",
        "{\"purge_at_ms\":5,\"sku\":\"a\"}",
        "{\"purge_at_ms\":5,\"sku\":\"a\",\"version\":1,\"committed_at_ms\":3,\"due_at_ms\":5}",
        "{\"purge_at_ms\":5,\"purge_at_ms\":6}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(inv__event_decode(bad[i], strlen(bad[i]), &ev),
                         -EINVAL);
    /* A purge round-trips and carries no item. */
    inv_event pe = {.purge_at_ms = 1234};
    char pbuf[INV_EVENT_JSON_MAX];
    int pn = inv__event_encode(&pe, pbuf, sizeof(pbuf));
    assert_true(pn > 0);
    assert_int_equal(inv__event_decode(pbuf, (size_t)pn, &ev), 0);
    assert_int_equal(ev.purge_at_ms, 1234);
    assert_int_equal(ev.sku_len, 0);
    /* Truncations of a valid event are all rejected. */
    const char *full = ok[1];
    for (size_t n = 0; n < strlen(full); n++)
        assert_int_equal(inv__event_decode(full, n, &ev), -EINVAL);
}

/* An update event carries the committed row; it round-trips whole, the
 * longest one fits INV_EVENT_JSON_MAX, a partial row is refused, and an
 * event without the row (an older writer's) decodes with has_item 0. */
static void test_event_with_item(void **state)
{
    (void)state;
    inv_event ev = mkev("hot", 12, 1700000000000, 1700000000200);
    ev.has_item = 1;
    ev.item = (inv_item){.stock = 95, .per_user_limit = 1, .sale_starts_at_ms = 0};
    char buf[INV_EVENT_JSON_MAX];
    int n = inv__event_encode(&ev, buf, sizeof(buf));
    assert_true(n > 0);
    assert_string_equal(buf, "{\"sku\":\"hot\",\"version\":12,"
                             "\"committed_at_ms\":1700000000000,\"due_at_ms\":1700000000200,"
                             "\"stock\":95,\"per_user_limit\":1,\"sale_starts_at_ms\":0}");
    inv_event out;
    assert_int_equal(inv__event_decode(buf, (size_t)n, &out), 0);
    assert_int_equal(out.has_item, 1);
    assert_int_equal(out.version, 12);
    assert_int_equal(out.item.stock, 95);
    assert_int_equal(out.item.per_user_limit, 1);
    assert_int_equal(out.item.sale_starts_at_ms, 0);

    char sku[INV_SKU_MAX + 1];
    memset(sku, 'x', INV_SKU_MAX);
    sku[INV_SKU_MAX] = '\0';
    inv_event big = mkev(sku, INT64_MAX, INT64_MAX, INT64_MAX);
    big.has_item = 1;
    big.item = (inv_item){INT64_MAX, INT64_MAX, INT64_MAX};
    n = inv__event_encode(&big, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(inv__event_decode(buf, (size_t)n, &out), 0);
    assert_int_equal(out.item.sale_starts_at_ms, INT64_MAX);

    ev.item.stock = -1;
    assert_int_equal(inv__event_encode(&ev, buf, sizeof(buf)), -EINVAL);

    const char *old = "{\"sku\":\"a\",\"version\":3,\"committed_at_ms\":1,\"due_at_ms\":2}";
    assert_int_equal(inv__event_decode(old, strlen(old), &out), 0);
    assert_int_equal(out.has_item, 0);
    const char *partial[] = {
        "{\"sku\":\"a\",\"version\":3,\"committed_at_ms\":1,\"due_at_ms\":2,\"stock\":5}",
        "{\"sku\":\"a\",\"version\":3,\"committed_at_ms\":1,\"due_at_ms\":2,\"stock\":5,"
        "\"per_user_limit\":0}",
        "{\"sku\":\"a\",\"version\":3,\"committed_at_ms\":1,\"due_at_ms\":2,\"stock\":-5,"
        "\"per_user_limit\":0,\"sale_starts_at_ms\":0}",
        "{\"sku\":\"a\",\"version\":3,\"committed_at_ms\":1,\"due_at_ms\":2,\"stock\":5,"
        "\"stock\":5,\"per_user_limit\":0,\"sale_starts_at_ms\":0}",
        "{\"purge_at_ms\":5,\"stock\":5,\"per_user_limit\":0,\"sale_starts_at_ms\":0}",
        "{\"stock\":5,\"per_user_limit\":0,\"sale_starts_at_ms\":0}",
    };
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++)
        assert_int_equal(inv__event_decode(partial[i], strlen(partial[i]), &out), -EINVAL);
}

/* ---------------------------------------------------------------------- */
/* Histogram                                                                */

static void test_hist(void **state)
{
    (void)state;
    /* Bucket bounds are increasing and every value maps into its bucket. */
    for (int i = 1; i < INV_HIST_BUCKETS; i++)
        assert_true(inv__hist_bucket_hi(i) > inv__hist_bucket_hi(i - 1));
    for (int64_t v = 0; v < (1 << 20); v += 7) {
        int idx = inv__hist_index(v);
        assert_true(v <= inv__hist_bucket_hi(idx));
        assert_true(idx == 0 || v > inv__hist_bucket_hi(idx - 1));
    }
    assert_int_equal(inv__hist_index(INT64_MAX), INV_HIST_BUCKETS - 1);

    inv_hist *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    assert_int_equal(inv_hist_quantile(h, 0.5), 0);
    for (int v = 1; v <= 100; v++)
        inv__hist_add(h, v);
    assert_int_equal(h->count, 100);
    assert_int_equal(h->sum_ms, 5050);
    assert_int_equal(inv_hist_quantile(h, 0.5), 50);
    int64_t p99 = inv_hist_quantile(h, 0.99);
    assert_true(p99 >= 99 && p99 <= 99 * 1.07);
    assert_int_equal(inv_hist_count_le(h, 10), 10);
    inv__hist_add(h, -5);                    /* clamps to 0 */
    assert_int_equal(inv_hist_count_le(h, 0), 1);
    inv_hist *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    inv__hist_copy(c, h);
    assert_int_equal(c->count, 101);
    free(c);
    free(h);
}

/* ---------------------------------------------------------------------- */
/* Offsets                                                                  */

static void test_offq(void **state)
{
    (void)state;
    inv_offq q;
    inv__offq_init(&q);
    assert_int_equal(inv__offq_advance(&q, NULL), -1);
    for (int64_t o = 10; o < 210; o += 2)    /* gaps are allowed */
        assert_int_equal(inv__offq_add(&q, o), 0);
    assert_int_equal(inv__offq_add(&q, 5), -EINVAL);
    assert_int_equal(inv__offq_advance(&q, NULL), 10);
    assert_int_equal(inv__offq_done(&q, 11), -ENOENT);
    assert_int_equal(inv__offq_done(&q, 14), 0);   /* out of order */
    assert_int_equal(inv__offq_advance(&q, NULL), 10);
    assert_int_equal(inv__offq_done(&q, 10), 0);
    assert_int_equal(inv__offq_done(&q, 12), 0);
    size_t popped = 0;
    assert_int_equal(inv__offq_advance(&q, &popped), 16);
    assert_int_equal(popped, 3);
    for (int64_t o = 16; o < 210; o += 2)
        assert_int_equal(inv__offq_done(&q, o), 0);
    assert_int_equal(inv__offq_advance(&q, NULL), 209);
    /* The ring wraps and grows. */
    for (int64_t o = 300; o < 1000; o++)
        assert_int_equal(inv__offq_add(&q, o), 0);
    for (int64_t o = 300; o < 999; o++)
        assert_int_equal(inv__offq_done(&q, o), 0);
    assert_int_equal(inv__offq_advance(&q, NULL), 999);
    assert_int_equal(inv__offq_done(&q, 999), 0);
    assert_int_equal(inv__offq_advance(&q, NULL), 1000);
    inv__offq_free(&q);
}

/* ---------------------------------------------------------------------- */
/* Delay queue                                                              */

typedef struct done_log {
    int n;
    int64_t offsets[64];
} done_log;

static void on_done(void *arg, const inv_pentry *e, const inv_ref *r)
{
    (void)e;
    done_log *d = arg;
    if (d->n < 64)
        d->offsets[d->n] = r->offset;
    d->n++;
}

static void test_pq_order_and_due(void **state)
{
    (void)state;
    inv_pq pq;
    inv__pq_init(&pq);
    bool co;
    inv_event a = mkev("a", 1, 0, 300), b = mkev("b", 1, 0, 100),
              c = mkev("c", 1, 0, 200);
    assert_int_equal(inv__pq_add(&pq, &a, 0, 1, 0, &co), 0);
    assert_false(co);
    assert_int_equal(inv__pq_add(&pq, &b, 0, 1, 1, &co), 0);
    assert_int_equal(inv__pq_add(&pq, &c, 1, 1, 0, &co), 0);
    assert_int_equal(inv__pq_next_due(&pq), 100);
    assert_null(inv__pq_pop_due(&pq, 99));   /* not before its due time */
    inv_pentry *e = inv__pq_pop_due(&pq, 250);
    assert_non_null(e);
    assert_string_equal(e->sku, "b");
    inv_pentry *f = inv__pq_pop_due(&pq, 250);
    assert_string_equal(f->sku, "c");
    assert_null(inv__pq_pop_due(&pq, 250));
    assert_int_equal(inv__pq_next_due(&pq), 300);
    done_log d = {0};
    assert_true(inv__pq_complete(&pq, e, true, 0, on_done, &d));
    assert_true(inv__pq_complete(&pq, f, true, 0, on_done, &d));
    assert_int_equal(d.n, 2);
    assert_int_equal(pq.refs, 1);
    assert_int_equal(pq.entries, 1);
    inv__pq_free(&pq);
}

static void test_pq_coalesce_highest_version(void **state)
{
    (void)state;
    inv_pq pq;
    inv__pq_init(&pq);
    bool co;
    inv_event e1 = mkev("hot", 5, 0, 100), e2 = mkev("hot", 7, 10, 110),
              e0 = mkev("hot", 3, 20, 120);
    assert_int_equal(inv__pq_add(&pq, &e1, 0, 1, 10, &co), 0);
    assert_false(co);
    assert_int_equal(inv__pq_add(&pq, &e2, 0, 1, 11, &co), 0);
    assert_true(co);
    assert_int_equal(inv__pq_add(&pq, &e0, 0, 1, 12, &co), 0);
    assert_true(co);
    assert_int_equal(pq.entries, 1);
    assert_int_equal(pq.refs, 3);
    /* Fires at the earliest due time with the highest version. */
    assert_null(inv__pq_pop_due(&pq, 99));
    inv_pentry *e = inv__pq_pop_due(&pq, 115);
    assert_non_null(e);
    assert_int_equal(e->fired_version, 7);
    /* A message arriving during the call joins the entry in flight. */
    inv_event e3 = mkev("hot", 9, 30, 130);
    assert_int_equal(inv__pq_add(&pq, &e3, 0, 1, 13, &co), 0);
    assert_true(co);
    assert_int_equal(inv__pq_next_due(&pq), INT64_MAX);   /* in flight */
    done_log d = {0};
    /* The refs due by 115 are done; the one due at 120 and the one that
     * arrived stay, and the entry rearms at 120 with version 9. */
    assert_false(inv__pq_complete(&pq, e, true, 0, on_done, &d));
    assert_int_equal(d.n, 2);
    assert_int_equal(d.offsets[0], 10);
    assert_int_equal(d.offsets[1], 11);
    assert_int_equal(inv__pq_next_due(&pq), 120);
    assert_int_equal(e->version, 9);
    e = inv__pq_pop_due(&pq, 200);
    assert_non_null(e);
    assert_int_equal(e->fired_version, 9);
    assert_true(inv__pq_complete(&pq, e, true, 0, on_done, &d));
    assert_int_equal(d.n, 4);
    assert_int_equal(pq.refs, 0);
    assert_int_equal(pq.entries, 0);
    inv__pq_free(&pq);
}

static void test_pq_failure_retries(void **state)
{
    (void)state;
    inv_pq pq;
    inv__pq_init(&pq);
    bool co;
    inv_event ev = mkev("x", 2, 0, 50);
    assert_int_equal(inv__pq_add(&pq, &ev, 3, 1, 7, &co), 0);
    inv_pentry *e = inv__pq_pop_due(&pq, 60);
    done_log d = {0};
    assert_false(inv__pq_complete(&pq, e, false, 160, on_done, &d));
    assert_int_equal(d.n, 0);
    assert_int_equal(e->attempts, 1);
    assert_int_equal(inv__pq_next_due(&pq), 160);
    assert_null(inv__pq_pop_due(&pq, 159));
    e = inv__pq_pop_due(&pq, 160);
    assert_non_null(e);
    assert_true(inv__pq_complete(&pq, e, true, 0, on_done, &d));
    assert_int_equal(d.n, 1);
    inv__pq_free(&pq);
}

static void test_pq_drop_partition(void **state)
{
    (void)state;
    inv_pq pq;
    inv__pq_init(&pq);
    bool co;
    char sku[16];
    for (int i = 0; i < 2000; i++) {           /* grows table and heap */
        snprintf(sku, sizeof(sku), "s%d", i);
        inv_event ev = mkev(sku, 1, 0, 1000 + i);
        assert_int_equal(inv__pq_add(&pq, &ev, i % 2, 1, i, &co), 0);
    }
    assert_int_equal(pq.entries, 2000);
    inv_pentry *inflight = inv__pq_pop_due(&pq, 1000);   /* s0, partition 0 */
    assert_non_null(inflight);
    assert_int_equal(inflight->partition, 0);
    assert_int_equal(inv__pq_drop_partition(&pq, 0), 1000);
    assert_true(inflight->dropped);
    /* A new message for s0 starts a fresh entry. */
    inv_event again = mkev("s0", 2, 0, 5);
    assert_int_equal(inv__pq_add(&pq, &again, 0, 2, 3000, &co), 0);
    assert_false(co);
    done_log d = {0};
    assert_true(inv__pq_complete(&pq, inflight, true, 0, on_done, &d));
    assert_int_equal(d.n, 0);                  /* dropped: nothing done */
    assert_int_equal(pq.entries, 1001);
    /* The rest pop in due order. */
    int64_t last = -1;
    inv_pentry *e;
    int n = 0;
    while ((e = inv__pq_pop_due(&pq, INT64_MAX - 1)) != NULL) {
        assert_true(e->due_ms >= last);
        last = e->due_ms;
        inv__pq_complete(&pq, e, true, 0, NULL, NULL);
        n++;
    }
    assert_int_equal(n, 1001);
    assert_int_equal(pq.entries, 0);
    inv__pq_free(&pq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_roundtrip),
        cmocka_unit_test(test_event_max_length),
        cmocka_unit_test(test_event_encode_rejects),
        cmocka_unit_test(test_event_decode_variants),
        cmocka_unit_test(test_event_with_item),
        cmocka_unit_test(test_hist),
        cmocka_unit_test(test_offq),
        cmocka_unit_test(test_pq_order_and_due),
        cmocka_unit_test(test_pq_coalesce_highest_version),
        cmocka_unit_test(test_pq_failure_retries),
        cmocka_unit_test(test_pq_drop_partition),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
