/*
 * test_flashsale.c: unit tests of the load tester's pure parts: the
 * log-linear histogram, the staleness counter on scripted version
 * sequences, the verification logic, JSON scanning, options and reports.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"

#define ACK(id, u, q) ((fs_ack){.order_id = (id), .user = (u), .qty = (q)})

#define MS(x) ((int64_t)(x) * 1000000)

/* ------------------------------------------------------------------------ */
/* Histogram                                                                 */

static void hist_buckets_are_contiguous(void **state)
{
    (void)state;
    fs_hist h;
    assert_int_equal(fs_hist_init(&h, 7, 40), 0);
    for (size_t i = 0; i + 1 < h.nbuckets; i++) {
        assert_true(fs_hist_lowest(&h, i) <= fs_hist_highest(&h, i));
        assert_int_equal(fs_hist_highest(&h, i) + 1, fs_hist_lowest(&h, i + 1));
    }
    assert_int_equal(fs_hist_highest(&h, h.nbuckets - 1), ((uint64_t)1 << 40) - 1);
    fs_hist_free(&h);
}

static void hist_index_brackets_value(void **state)
{
    (void)state;
    fs_hist h;
    assert_int_equal(fs_hist_init(&h, 9, 40), 0);
    uint64_t v = 1;
    for (int i = 0; i < 5000; i++) {
        size_t idx = fs_hist_index(&h, v);
        assert_true(idx < h.nbuckets);
        assert_true(fs_hist_lowest(&h, idx) <= v);
        assert_true(fs_hist_highest(&h, idx) >= v);
        /* Relative width of a bucket: at most 1/2^(sub_bits-1). */
        uint64_t w = fs_hist_highest(&h, idx) - fs_hist_lowest(&h, idx) + 1;
        assert_true(w == 1 || (double)w / (double)fs_hist_lowest(&h, idx) <= 1.0 / 256 + 1e-12);
        v = v * 1.0071 + 1;
        if (v >= ((uint64_t)1 << 40))
            break;
    }
    /* Values above the range are clamped into the top bucket. */
    assert_int_equal(fs_hist_index(&h, UINT64_MAX), h.nbuckets - 1);
    fs_hist_free(&h);
}

static void hist_percentiles(void **state)
{
    (void)state;
    fs_hist h;
    assert_int_equal(fs_hist_init(&h, 9, 40), 0);
    assert_int_equal(fs_hist_percentile(&h, 99), 0);
    assert_int_equal(fs_hist_min(&h), 0);
    /* 1..10000 microseconds, in ns. */
    for (uint64_t i = 1; i <= 10000; i++)
        fs_hist_record(&h, i * 1000);
    assert_int_equal(fs_hist_count(&h), 10000);
    const double ps[] = {50, 90, 99, 99.9};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        double want = ps[i] * 100 * 1000;   /* the ps[i]% value */
        double got = (double)fs_hist_percentile(&h, ps[i]);
        assert_true(got >= want);
        assert_true(got <= want * (1 + 1.0 / 256));
    }
    assert_int_equal(fs_hist_percentile(&h, 100), 10000 * 1000);
    assert_int_equal(fs_hist_max(&h), 10000 * 1000);
    assert_int_equal(fs_hist_min(&h), 1000);
    assert_int_equal(fs_hist_percentile(&h, 0), 1000);
    assert_true(fs_hist_mean(&h) > 5000000 && fs_hist_mean(&h) < 5001000);

    /* A single slow outlier among fast values is the max, not the p99. */
    fs_hist g;
    assert_int_equal(fs_hist_init(&g, 9, 40), 0);
    fs_hist_record_n(&g, 100000, 999);
    fs_hist_record(&g, MS(2000));
    assert_true(fs_hist_percentile(&g, 99) < 101000);
    assert_int_equal(fs_hist_percentile(&g, 99.95), MS(2000));

    /* Merge keeps counts, max and min. */
    assert_int_equal(fs_hist_merge(&h, &g), 0);
    assert_int_equal(fs_hist_count(&h), 11000);
    assert_int_equal(fs_hist_max(&h), MS(2000));
    assert_int_equal(fs_hist_min(&h), 1000);
    fs_hist bad;
    assert_int_equal(fs_hist_init(&bad, 7, 40), 0);
    assert_int_equal(fs_hist_merge(&h, &bad), -EINVAL);
    fs_hist_free(&bad);
    fs_hist_reset(&h);
    assert_int_equal(fs_hist_count(&h), 0);
    assert_int_equal(fs_hist_percentile(&h, 50), 0);
    assert_int_equal(fs_hist_init(&bad, 1, 40), -EINVAL);
    assert_int_equal(fs_hist_init(&bad, 10, 10), -EINVAL);
    fs_hist_free(&h);
    fs_hist_free(&g);
}

/* ------------------------------------------------------------------------ */
/* Staleness                                                                 */

static void stale_scripted_sequence(void **state)
{
    (void)state;
    fs_stale s;
    const int64_t win[] = {0, 100, 1000};
    assert_int_equal(fs_stale_init(&s, 2, 2, win, 3), 0);

    /* Writes acknowledged: v1 at 0 ms, v2 at 100 ms, v3 at 200 ms. */
    fs_stale_commit(&s, 0, 1, MS(0));
    fs_stale_commit(&s, 0, 2, MS(100));
    fs_stale_commit(&s, 0, 3, MS(200));

    /* v1 read, sent at 50 ms: v2 was not known yet, fresh. */
    assert_int_equal(fs_stale_read(&s, 0, 0, 1, MS(50), MS(51)), 0);
    /* v1 read, sent at 150 ms: v2 known for 50 ms. */
    assert_int_equal(fs_stale_read(&s, 0, 0, 1, MS(150), MS(151)), MS(50));
    /* v1 read, sent at 350 ms: v2 known for 250 ms. */
    assert_int_equal(fs_stale_read(&s, 0, 1, 1, MS(350), MS(351)), MS(250));
    /* v2 read at 1500 ms: v3 known for 1300 ms. */
    assert_int_equal(fs_stale_read(&s, 0, 1, 2, MS(1500), MS(1501)), MS(1300));
    /* The newest version is never stale. */
    assert_int_equal(fs_stale_read(&s, 0, 0, 3, MS(2000), MS(2001)), 0);
    /* A read sent exactly when v2 became known is not stale (strictly more
     * than W before the send). */
    assert_int_equal(fs_stale_read(&s, 0, 0, 1, MS(100), MS(101)), 0);

    /* Per target and per window. */
    assert_int_equal(fs_stale_reads(&s, 0), 4);
    assert_int_equal(fs_stale_reads(&s, 1), 2);
    assert_int_equal(fs_stale_reads(&s, -1), 6);
    assert_int_equal(fs_stale_count(&s, 0, 0), 1);   /* 50 ms */
    assert_int_equal(fs_stale_count(&s, 0, 1), 0);
    assert_int_equal(fs_stale_count(&s, 1, 0), 2);   /* 250, 1300 ms */
    assert_int_equal(fs_stale_count(&s, 1, 1), 2);
    assert_int_equal(fs_stale_count(&s, 1, 2), 1);
    assert_int_equal(fs_stale_count(&s, -1, 0), 3);
    assert_int_equal(fs_stale_count(&s, -1, 2), 1);
    assert_int_equal(fs_stale_count(&s, -1, 7), 0);
    assert_int_equal(fs_hist_count(&s.age), 3);

    /* Item 1 is independent of item 0. */
    assert_int_equal(fs_stale_read(&s, 1, 0, 0, MS(5000), MS(5001)), 0);
    fs_stale_free(&s);
}

static void stale_reads_teach_versions(void **state)
{
    (void)state;
    fs_stale s;
    const int64_t win[] = {0};
    assert_int_equal(fs_stale_init(&s, 1, 1, win, 1), 0);
    /* A read that returned v7 proves v7 was committed when it arrived. */
    assert_int_equal(fs_stale_read(&s, 0, 0, 7, MS(400), MS(500)), 0);
    assert_int_equal(fs_stale_read(&s, 0, 0, 6, MS(600), MS(601)), MS(100));
    /* Version 0 (never written) against an item with history. */
    assert_int_equal(fs_stale_read(&s, 0, 0, 0, MS(700), MS(701)), MS(200));
    fs_stale_free(&s);
}

static void stale_out_of_order_observations(void **state)
{
    (void)state;
    fs_stale s;
    const int64_t win[] = {0, 100};
    assert_int_equal(fs_stale_init(&s, 1, 1, win, 2), 0);
    fs_stale_commit(&s, 0, 3, MS(200));
    fs_stale_commit(&s, 0, 5, MS(300));
    /* v4 learnt earlier than v5 but recorded after it. */
    fs_stale_commit(&s, 0, 4, MS(250));
    /* Dominated: older than v5 and learnt later. Must change nothing. */
    fs_stale_commit(&s, 0, 2, MS(400));
    /* v5 again, earlier: moves v5's time back and drops nothing else. */
    fs_stale_commit(&s, 0, 5, MS(280));
    /* Same time as v4, newer version: replaces (250, v4). */
    fs_stale_commit(&s, 0, 6, MS(250));
    assert_int_equal(s.items[0].n, 2);
    assert_int_equal(s.items[0].pts[0].v, 3);
    assert_int_equal(s.items[0].pts[1].v, 6);
    assert_int_equal(s.items[0].pts[1].t, MS(250));

    assert_int_equal(fs_stale_read(&s, 0, 0, 3, MS(260), MS(261)), MS(10));
    assert_int_equal(fs_stale_read(&s, 0, 0, 2, MS(260), MS(261)), MS(60));
    assert_int_equal(fs_stale_read(&s, 0, 0, 6, MS(900), MS(901)), 0);
    assert_int_equal(fs_stale_count(&s, 0, 0), 2);
    assert_int_equal(fs_stale_count(&s, 0, 1), 0);

    /* Many versions learnt in reverse order still give one frontier. */
    fs_stale r;
    assert_int_equal(fs_stale_init(&r, 1, 1, win, 2), 0);
    for (int v = 100; v >= 1; v--)
        fs_stale_commit(&r, 0, v, MS(v));
    assert_int_equal(r.items[0].n, 100);
    for (size_t i = 1; i < r.items[0].n; i++) {
        assert_true(r.items[0].pts[i].t > r.items[0].pts[i - 1].t);
        assert_true(r.items[0].pts[i].v > r.items[0].pts[i - 1].v);
    }
    /* Now v100 at time 0 dominates all of them. */
    fs_stale_commit(&r, 0, 100, 0);
    assert_int_equal(r.items[0].n, 1);
    fs_stale_free(&s);
    fs_stale_free(&r);
    fs_stale bad;
    assert_int_equal(fs_stale_init(&bad, 1, FS_MAX_TARGETS + 1, win, 2), -EINVAL);
    fs_stale_free(&bad);
}

/* ------------------------------------------------------------------------ */
/* Verification                                                              */

static fs_audit audit_of(int64_t supplied, int64_t sold, int64_t maxq, int64_t *ids, size_t n)
{
    fs_audit a = {0};
    a.units_supplied = supplied;
    a.units_sold = sold;
    a.stock = supplied - sold;
    a.orders = (int64_t)n;
    a.max_user_qty = maxq;
    a.order_ids = ids;
    a.norder_ids = n;
    a.has_order_ids = ids != NULL;
    return a;
}

static void verify_clean_sale_passes(void **state)
{
    (void)state;
    int64_t ids[] = {1, 2, 3, 4};
    fs_ack acks[] = {ACK(3, 30, 1), ACK(1, 10, 1), ACK(4, 40, 1), ACK(2, 20, 1)};
    fs_audit after = audit_of(4, 4, 1, ids, 4);
    fs_verify_in in = {.sku = "a", .per_user_limit = 1, .after = &after, .acks = acks, .nacks = 4};
    fs_verify_out out;
    fs_verify(&in, &out);
    assert_true(out.passed);
    assert_int_equal(out.acked_units, 4);
    assert_int_equal(out.sold_units, 4);

    /* An in-doubt buy explains a sale nobody acknowledged. */
    int64_t ids5[] = {1, 2, 3, 4, 5};
    fs_audit after5 = audit_of(5, 5, 1, ids5, 5);
    in.after = &after5;
    in.unknown_units = 1;
    fs_verify(&in, &out);
    assert_true(out.passed);
    in.unknown_units = 0;
    fs_verify(&in, &out);
    assert_false(out.passed);
    assert_int_equal(out.phantom_units, 1);
}

static void verify_detects_each_violation(void **state)
{
    (void)state;
    int64_t ids[] = {1, 2, 3};
    fs_ack acks[] = {ACK(1, 10, 1), ACK(2, 20, 1), ACK(3, 30, 1)};
    fs_verify_out out;

    /* Oversold: more sold than supplied, stock negative. */
    fs_audit a = audit_of(3, 4, 1, ids, 3);
    a.stock = -1;
    fs_verify_in in = {.sku = "a", .per_user_limit = 1, .after = &a, .acks = acks, .nacks = 3,
                       .unknown_units = 1};
    fs_verify(&in, &out);
    assert_false(out.passed);
    assert_int_equal(out.oversold, 1);
    assert_int_equal(out.ledger_mismatch, 0);

    /* Ledger: supplied - sold != stock. */
    a = audit_of(3, 3, 1, ids, 3);
    a.stock = 1;
    fs_verify(&in, &out);
    assert_false(out.passed);
    assert_int_equal(out.ledger_mismatch, 1);
    assert_int_equal(out.oversold, 0);

    /* Lost: an acknowledged order id missing from the database. */
    int64_t two[] = {1, 3};
    a = audit_of(3, 3, 1, two, 2);
    fs_verify(&in, &out);
    assert_false(out.passed);
    assert_int_equal(out.lost, 1);

    /* Lost without the id list: fewer units sold than acknowledged. */
    a = audit_of(3, 2, 1, NULL, 0);
    fs_verify(&in, &out);
    assert_int_equal(out.lost, 1);

    /* Duplicates: from the audit, and one order id acknowledged twice. */
    a = audit_of(3, 3, 1, ids, 3);
    a.duplicate_idempotency_keys = 2;
    fs_verify(&in, &out);
    assert_int_equal(out.duplicates, 2);
    a.duplicate_idempotency_keys = 0;
    fs_ack dup[] = {ACK(1, 10, 1), ACK(2, 20, 1), ACK(2, 30, 1)};
    in.acks = dup;
    fs_verify(&in, &out);
    assert_int_equal(out.duplicates, 1);
    assert_false(out.passed);

    /* Limit: the audit's max and a user acknowledged twice. */
    in.acks = acks;
    a.max_user_qty = 2;
    fs_verify(&in, &out);
    assert_int_equal(out.limit_violations, 1);
    a.max_user_qty = 1;
    fs_ack twice[] = {ACK(1, 10, 1), ACK(2, 10, 1), ACK(3, 10, 1)};
    in.acks = twice;
    fs_verify(&in, &out);
    assert_int_equal(out.limit_violations, 1);   /* one user, counted once */
    in.per_user_limit = 0;
    fs_verify(&in, &out);
    assert_true(out.passed);
}

static void verify_uses_the_baseline(void **state)
{
    (void)state;
    int64_t before_ids[] = {1, 2};
    int64_t after_ids[] = {1, 2, 7};
    fs_audit b = audit_of(10, 2, 1, before_ids, 2);
    fs_audit a = audit_of(10, 3, 1, after_ids, 3);
    fs_ack acks[] = {ACK(7, 1, 1)};
    fs_verify_in in = {.sku = "a", .per_user_limit = 1, .before = &b, .after = &a, .acks = acks,
                       .nacks = 1};
    fs_verify_out out;
    fs_verify(&in, &out);
    assert_true(out.passed);
    assert_int_equal(out.sold_units, 1);
}

static void audit_parse(void **state)
{
    (void)state;
    const char *body = "{\"sku\":\"hot\",\"stock\":0,\"version\":10001,\"units_supplied\":10000,"
                       "\"units_sold\":10000,\"orders\":3,\"max_user_qty\":1,"
                       "\"duplicate_idempotency_keys\":0,\"order_ids\":[3,1,2]}";
    fs_audit a;
    assert_int_equal(fs_audit_parse(body, strlen(body), &a), 0);
    assert_int_equal(a.version, 10001);
    assert_int_equal(a.units_sold, 10000);
    assert_true(a.has_order_ids);
    assert_int_equal(a.norder_ids, 3);
    assert_int_equal(a.order_ids[0], 1);
    assert_int_equal(a.order_ids[2], 3);
    fs_audit_free(&a);
    const char *no_ids = "{\"stock\":1,\"version\":2,\"units_supplied\":3,\"units_sold\":2,"
                         "\"orders\":2,\"max_user_qty\":1,\"duplicate_idempotency_keys\":0}";
    assert_int_equal(fs_audit_parse(no_ids, strlen(no_ids), &a), 0);
    assert_false(a.has_order_ids);
    fs_audit_free(&a);
    assert_int_equal(fs_audit_parse("{\"stock\":1}", 11, &a), -EINVAL);
    assert_int_equal(fs_audit_parse("nope", 4, &a), -EINVAL);
}

/* ------------------------------------------------------------------------ */
/* JSON scanning, outcomes                                                    */

static void json_scan(void **state)
{
    (void)state;
    const char *b = "{\"sku\":\"version\",\"stock\":9812, \"version\" : 188,\"neg\":-5,"
                    "\"replayed\":true,\"error\":\"sold_out\",\"f\":1.5}";
    size_t n = strlen(b);
    int64_t v;
    int flag;
    char s[32];
    assert_int_equal(fs_json_int(b, n, "version", &v), 0);
    assert_int_equal(v, 188);
    assert_int_equal(fs_json_int(b, n, "stock", &v), 0);
    assert_int_equal(v, 9812);
    assert_int_equal(fs_json_int(b, n, "neg", &v), 0);
    assert_int_equal(v, -5);
    assert_int_equal(fs_json_int(b, n, "missing", &v), -ENOENT);
    assert_int_equal(fs_json_int(b, n, "sku", &v), -EINVAL);
    assert_int_equal(fs_json_int(b, n, "f", &v), -EINVAL);
    assert_int_equal(fs_json_bool(b, n, "replayed", &flag), 0);
    assert_int_equal(flag, 1);
    assert_int_equal(fs_json_str(b, n, "error", s, sizeof(s)), 0);
    assert_string_equal(s, "sold_out");
    assert_int_equal(fs_json_str(b, n, "sku", s, sizeof(s)), 0);
    assert_string_equal(s, "version");
    /* Truncated bodies never read past n. */
    assert_int_equal(fs_json_int(b, 30, "version", &v), -ENOENT);
    assert_int_equal(fs_json_str("{\"error\":\"abc", 13, "error", s, sizeof(s)), -EINVAL);
}

static void outcome_classify(void **state)
{
    (void)state;
    assert_int_equal(fs_outcome_classify(200, NULL, 0), FS_O_OK);
    assert_int_equal(fs_outcome_classify(200, NULL, 1), FS_O_REPLAYED);
    assert_int_equal(fs_outcome_classify(409, "sold_out", 0), FS_O_SOLD_OUT);
    assert_int_equal(fs_outcome_classify(409, "limit_exceeded", 0), FS_O_LIMIT);
    assert_int_equal(fs_outcome_classify(409, "insufficient_stock", 0), FS_O_INSUFFICIENT);
    assert_int_equal(fs_outcome_classify(409, "other", 0), FS_O_OTHER_4XX);
    assert_int_equal(fs_outcome_classify(425, "sale_not_started", 0), FS_O_NOT_STARTED);
    assert_int_equal(fs_outcome_classify(503, "outcome_unknown", 0), FS_O_UNKNOWN);
    assert_int_equal(fs_outcome_classify(503, "unavailable", 0), FS_O_UNAVAILABLE);
    assert_int_equal(fs_outcome_classify(502, NULL, 0), FS_O_OTHER_5XX);
    assert_int_equal(fs_outcome_classify(302, NULL, 0), FS_O_BAD_RESPONSE);
    assert_true(fs_outcome_ok(FS_O_SOLD_OUT));
    assert_false(fs_outcome_ok(FS_O_TIMEOUT));
    assert_string_equal(fs_outcome_label(FS_O_LIMIT), "409 limit_exceeded");
}

/* ------------------------------------------------------------------------ */
/* Options                                                                   */

static int parse(fs_opts *o, const char *const *args, int n)
{
    char *argv[32];
    argv[0] = "flashsale";
    for (int i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    FILE *null = fopen("/dev/null", "w");
    int rc = fs_opts_parse(o, n + 1, argv, null, null);
    fclose(null);
    return rc;
}

static void opts_defaults_and_flags(void **state)
{
    (void)state;
    fs_opts o;
    assert_int_equal(parse(&o, NULL, 0), 0);
    assert_int_equal(o.ntargets, 1);
    assert_int_equal(o.targets[0].port, 8080);
    assert_int_equal(o.requests, 200000);
    assert_int_equal(o.nskus, 1);
    assert_true(o.skus_generated);
    fs_opts_free(&o);

    const char *args[] = {"--targets", "http://127.0.0.1:26001,localhost:26002/",
                          "--skus", "3", "--stock", "500", "--per-user-limit", "2",
                          "--users", "1000", "--read-ratio", "0.9", "--connections", "8",
                          "--duration", "2.5", "--rate", "1000", "--stale-windows", "0,50,1000",
                          "--sweep-delay", "0,200,50", "--admin-token", "tok", "--kv",
                          "--no-idempotency-keys"};
    assert_int_equal(parse(&o, args, 26), 0);
    assert_true(o.no_keys);
    assert_int_equal(o.ntargets, 2);
    assert_string_equal(o.targets[1].host, "127.0.0.1");
    assert_int_equal(o.targets[1].port, 26002);
    assert_string_equal(o.targets[0].url, "http://127.0.0.1:26001");
    assert_int_equal(o.nskus, 3);
    assert_int_equal(o.stock, 500);
    assert_int_equal(o.per_user_limit, 2);
    assert_true(o.read_ratio > 0.89 && o.read_ratio < 0.91);
    assert_int_equal(o.requests, 0);
    assert_true(o.duration_s == 2.5);
    assert_int_equal(o.nwindows, 3);
    assert_int_equal(o.windows_ms[1], 50);
    assert_int_equal(o.nsweep, 3);
    assert_int_equal(o.sweep_ms[2], 50);
    assert_string_equal(o.admin_token, "tok");
    assert_int_equal(fs_opts_name_skus(&o, 2, "x1"), 0);
    assert_string_equal(o.skus[1], "fs-x1-r2-1");
    assert_int_equal(fs_opts_name_skus(&o, -1, "x1"), 0);
    assert_string_equal(o.skus[2], "fs-x1-2");
    fs_opts_free(&o);

    const char *named[] = {"--skus", "hot,cold:1"};
    assert_int_equal(parse(&o, named, 2), 0);
    assert_int_equal(o.nskus, 2);
    assert_false(o.skus_generated);
    assert_string_equal(o.skus[1], "cold:1");
    assert_int_equal(fs_opts_name_skus(&o, 1, "x"), 0);
    assert_string_equal(o.skus[0], "hot");
    fs_opts_free(&o);

    const char *help[] = {"--help"};
    assert_int_equal(parse(&o, help, 1), 1);
    fs_opts_free(&o);
}

static void opts_rejects_bad_input(void **state)
{
    (void)state;
    fs_opts o;
    const char *cases[][2] = {
        {"--read-ratio", "1.5"},  {"--skus", "bad/name"},  {"--targets", "http://x"},
        {"--targets", "127.0.0.1:0"}, {"--connections", "0"}, {"--stale-windows", "100,50"},
        {"--qty", "0"},           {"--bogus", "1"},        {"--rate", "-1"},
        {"--sweep-delay", "0,x"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(&o, cases[i], 2), -EINVAL);
        fs_opts_free(&o);
    }
    const char *both[] = {"--requests", "10", "--duration", "1"};
    assert_int_equal(parse(&o, both, 4), -EINVAL);
    fs_opts_free(&o);
    const char *sweep[] = {"--sweep-delay", "0,100"};   /* needs a token */
    unsetenv("FLASHSALE_ADMIN_TOKEN");
    assert_int_equal(parse(&o, sweep, 2), -EINVAL);
    fs_opts_free(&o);
    const char *missing[] = {"--stock"};
    assert_int_equal(parse(&o, missing, 1), -EINVAL);
    fs_opts_free(&o);
}

/* ------------------------------------------------------------------------ */
/* Reports                                                                   */

/* Options parsed from args (items named) and an empty result of that many
 * seconds. */
static void result_for(fs_opts *o, fs_result *r, const char **args, int n, size_t seconds)
{
    assert_int_equal(parse(o, args, n), 0);
    assert_int_equal(fs_opts_name_skus(o, -1, "t"), 0);
    assert_int_equal(fs_result_init(r, o, seconds), 0);
}

/* Options of one item and an empty result of that many seconds. */
static void one_item_result(fs_opts *o, fs_result *r, size_t seconds)
{
    const char *args[] = {"--skus", "1"};
    result_for(o, r, args, 2, seconds);
}

/* The name=value lines of r, then its text report when text is set. The
 * caller frees the string. */
static char *report_of(const fs_opts *o, fs_result *r, int text)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    fs_result *rs[] = {r};
    fs_report_kv(m, o, rs, 1);
    if (text)
        fs_report_text(m, o, r);
    fclose(m);
    return buf;
}

static void report_outputs(void **state)
{
    (void)state;
    fs_opts o;
    const char *args[] = {"--skus", "2", "--stale-windows", "0,1000"};
    fs_result r;
    result_for(&o, &r, args, 4, 10);
    r.elapsed_s = 2.0;
    r.cpu_s = 0.00102;
    for (int i = 0; i < 100; i++) {
        fs_hist_record(&r.lat[FS_ROUTE_GET], MS(1));
        fs_hist_record(&r.all, MS(1));
        atomic_fetch_add(&r.outcomes[FS_ROUTE_GET][FS_O_OK], 1);
        atomic_fetch_add(&r.tiers[0][i % 10 == 0 ? FS_TIER_DB : FS_TIER_REDIS], 1);
    }
    atomic_fetch_add(&r.outcomes[FS_ROUTE_BUY][FS_O_TIMEOUT], 2);
    fs_slot *sl = fs_result_slot(&r, 1);
    assert_non_null(sl);
    assert_ptr_equal(fs_result_slot(&r, 1), sl);
    assert_null(fs_result_slot(&r, 10));
    atomic_fetch_add(&sl->requests, 102);
    fs_hist_record(&sl->lat, MS(1));
    fs_stale_commit(&r.stale, 0, 2, MS(0));
    fs_stale_read(&r.stale, 0, 0, 1, MS(1500), MS(1501));
    r.verified = 1;
    r.nverify = 2;
    for (int i = 0; i < 2; i++) {
        r.verify[i].passed = 1;
        snprintf(r.verify_sku[i], sizeof(r.verify_sku[i]), "%s", o.skus[i]);
    }
    assert_int_equal(fs_result_requests(&r), 102);
    assert_int_equal(fs_result_errors(&r), 2);
    assert_true(fs_result_rps(&r) == 51.0);
    assert_true(fs_result_redis_hit_ratio(&r) == 0.9);
    assert_true(fs_result_db_reads_per_s(&r) == 5.0);

    char *buf = report_of(&o, &r, 1);
    fs_result *rs[] = {&r};
    assert_non_null(strstr(buf, "requests_per_s=51\n"));
    assert_non_null(strstr(buf, "tester_cpu_us_per_request=10.00\n"));
    assert_non_null(strstr(buf, "tester CPU: 10.0 us per request (0.00 of a core)"));
    assert_non_null(strstr(buf, "stale_reads_over_1s=1\n"));
    assert_non_null(strstr(buf, "stale_reads_over_0ms=1\n"));
    assert_non_null(strstr(buf, "oversold=0\n"));
    assert_non_null(strstr(buf, "verify=pass\n"));
    assert_non_null(strstr(buf, "verification: PASSED"));
    free(buf);

    char path[] = "/tmp/test_flashsale.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    fs_result_tick(&r, MS(1250), MS(1), 0, 0, 0);   /* also 1.2-1.3 s */
    assert_int_equal(fs_report_json(path, &o, rs, 1), 0);
    FILE *f = fopen(path, "r");
    char text[65536];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    unlink(path);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "passed")));
    cJSON *run = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "runs"), 0);
    assert_int_equal(cJSON_GetObjectItem(run, "requests")->valueint, 102);
    cJSON *tl = cJSON_GetObjectItem(run, "timeline");
    assert_int_equal(cJSON_GetArraySize(tl), 1);
    cJSON *fine = cJSON_GetObjectItem(run, "timeline_100ms");
    assert_int_equal(cJSON_GetArraySize(fine), 1);
    assert_true(fabs(cJSON_GetObjectItem(cJSON_GetArrayItem(fine, 0), "t_s")->valuedouble - 1.2) <
                1e-9);
    cJSON_Delete(j);

    /* A failed check flips the summary; an unreadable audit says so. */
    r.verify_failed = 1;
    r.verify[1] = (fs_verify_out){.audit_failed = 1};
    buf = report_of(&o, &r, 1);
    assert_non_null(strstr(buf, "verify=fail\n"));
    assert_non_null(strstr(buf, "audits_failed=1\n"));
    assert_non_null(strstr(buf, "the audit could not be read: FAILED"));
    assert_non_null(strstr(buf, "verification: FAILED"));
    free(buf);

    fs_result_free(&r);
    fs_opts_free(&o);
}

/* An answer is counted in its second and, over the first minute, in its
 * 100 ms interval; later ones only per second. */
static void tick_fills_seconds_and_tenths(void **state)
{
    (void)state;
    fs_opts o;
    fs_result r;
    one_item_result(&o, &r, 100);
    fs_result_tick(&r, MS(1250), MS(3), 0, 1, 0);
    fs_result_tick(&r, MS(1299), MS(5), 1, 0, 1);
    fs_result_tick(&r, MS(70000), MS(1), 0, 0, 0);
    fs_result_tick(&r, -5, MS(1), 0, 0, 0);   /* before t0: the first interval */
    fs_slot *sec = fs_result_slot(&r, 1), *tenth = fs_result_fine_slot(&r, 12);
    assert_int_equal(atomic_load(&sec->requests), 2);
    assert_int_equal(atomic_load(&tenth->requests), 2);
    assert_int_equal(atomic_load(&tenth->errors), 1);
    assert_int_equal(atomic_load(&tenth->sold), 1);
    assert_int_equal(atomic_load(&tenth->sold_out), 1);
    assert_int_equal(fs_hist_count(&tenth->lat), 2);
    assert_int_equal(atomic_load(&fs_result_slot(&r, 70)->requests), 1);
    assert_null(fs_result_fine_slot(&r, FS_FINE_SLOTS));
    assert_int_equal(atomic_load(&fs_result_slot(&r, 0)->requests), 1);
    assert_int_equal(atomic_load(&fs_result_fine_slot(&r, 0)->requests), 1);
    assert_null(atomic_load(&r.fine[11]));
    fs_result_free(&r);
    fs_opts_free(&o);
}

/* The selling phase ends with the last acknowledged buy: requests counted
 * until then and after it give the two throughputs. */
static void phases_split_at_the_last_sale(void **state)
{
    (void)state;
    fs_opts o;
    fs_result r;
    one_item_result(&o, &r, 10);
    double sell_s, sell_rps, after_rps;
    assert_int_equal(fs_result_phases(&r, &sell_s, &sell_rps, &after_rps), -ENOENT);
    r.elapsed_s = 3.0;
    atomic_fetch_add(&r.outcomes[FS_ROUTE_BUY][FS_O_OK], 100);
    fs_result_sale(&r, MS(1000));
    atomic_fetch_add(&r.outcomes[FS_ROUTE_GET][FS_O_OK], 10);
    fs_result_sale(&r, MS(500));   /* an earlier answer counted late: no change */
    atomic_fetch_add(&r.outcomes[FS_ROUTE_BUY][FS_O_SOLD_OUT], 390);
    assert_int_equal(fs_result_phases(&r, &sell_s, &sell_rps, &after_rps), 0);
    assert_true(fabs(sell_s - 1.0) < 1e-9);
    assert_true(fabs(sell_rps - 100.0) < 1e-9);
    assert_true(fabs(after_rps - 200.0) < 1e-9);
    fs_result_free(&r);
    fs_opts_free(&o);
}

/* The selling phase's latency: the requests due until the interval of the
 * last acknowledged buy, whenever they were answered; the rest after it.
 * A run longer than the fine intervals splits per second. */
static void phase_percentiles_split_by_due_time(void **state)
{
    (void)state;
    fs_opts o;
    fs_result r;
    one_item_result(&o, &r, 100);
    uint64_t sell, after;
    assert_int_equal(fs_result_phase_percentile(&r, 99, &sell, &after), -ENOENT);
    r.elapsed_s = 3.0;
    for (int i = 0; i < 100; i++) {
        fs_result_due(&r, MS(i * 5), MS(i * 5), MS(8), 0);          /* 0-0.5 s: 8 ms */
        fs_result_due(&r, MS(600 + i * 20), MS(600 + i * 20), MS(1), 0);   /* 0.6-2.6 s */
    }
    fs_result_due(&r, MS(520), -1, MS(30), 0);   /* never left, still due in the last
                                               * selling interval */
    fs_result_sale(&r, MS(550));
    assert_int_equal(fs_result_phase_percentile(&r, 99, &sell, &after), 0);
    assert_true(sell >= MS(8) && sell <= MS(8) * 33 / 32);
    assert_true(after >= MS(1) && after <= MS(1) * 33 / 32);
    assert_int_equal(fs_result_phase_percentile(&r, 100, &sell, &after), 0);
    assert_true(sell >= MS(30) && sell <= MS(30) * 33 / 32);

    /* 200 s: per second, the sale's second (0) is selling. */
    r.elapsed_s = 200.0;
    assert_int_equal(fs_result_phase_percentile(&r, 50, &sell, &after), 0);
    assert_true(sell >= MS(8) && sell <= MS(8) * 33 / 32);
    assert_true(after >= MS(1) && after <= MS(1) * 33 / 32);

    /* Send lag and the rate sent: 201 sends, the last at 2.58 s. */
    assert_int_equal(fs_hist_count(&r.send_lag), 200);
    assert_int_equal(fs_hist_max(&r.send_lag), 0);
    atomic_fetch_add(&r.outcomes[FS_ROUTE_GET][FS_O_OK], 200);
    fs_result_due(&r, MS(2590), MS(2592), MS(3), 0);
    assert_int_equal(fs_hist_max(&r.send_lag), MS(2));
    assert_true(fabs(fs_result_sent_rate(&r, 100) - 200.0 / 2.602) < 1e-6);
    assert_true(fs_result_sent_rate(&r, 0) == 0.0);
    /* Due while its connection awaited an answer: not the tester's lag. */
    fs_result_due(&r, MS(2595), MS(2650), MS(60), 1);
    assert_int_equal(fs_hist_max(&r.send_lag), MS(2));
    assert_int_equal(atomic_load(&r.busy_sends), 1);
    fs_result_free(&r);
    fs_opts_free(&o);
}

/* An open-loop sale's name=value lines: the selling phase's p99 and how
 * the tester kept to its schedule. */
static void kv_open_loop_and_selling_p99(void **state)
{
    (void)state;
    fs_opts o;
    const char *args[] = {"--rate", "1000", "--duration", "1"};
    fs_result r;
    result_for(&o, &r, args, 4, 10);
    r.elapsed_s = 1.0;
    for (int i = 0; i < 1000; i++) {
        int64_t due = MS(i), lag = i % 50 == 0 ? MS(4) : 0;   /* 2 %: the p99 */
        int selling = i < 300;
        fs_result_due(&r, due, due + lag, selling ? MS(9) : MS(2), i == 999);
        fs_outcome oc = selling ? FS_O_OK : i >= 998 ? FS_O_OVERLOADED : FS_O_SOLD_OUT;
        atomic_fetch_add(&r.outcomes[FS_ROUTE_BUY][oc], 1);
        if (selling)
            fs_result_sale(&r, due + MS(9));
    }
    char *buf = report_of(&o, &r, 1);
    static const char *const want[] = {
        "offered_rate_per_s=1000\n",
        "achieved_rate_per_s=1000\n",   /* 1000 requests, the last sent at 0.999 s */
        "send_lag_p99_ms=4.",
        "send_lag_max_ms=4.000\n",
        "busy_connection_sends=1\n",
        "selling_s=0.308\n",
        "selling_p99_ms=9.",
        "after_selling_p99_ms=2.",
        "overloaded=2\n",
        "sent at 1000 requests/s, send lag p99 4.",
        "1 due while their connection awaited an answer",
        "requests/s until then (p99 9.",
        NULL,
    };
    for (const char *const *w = want; *w; w++)
        if (strstr(buf, *w) == NULL)
            fail_msg("report lacks \"%s\":\n%s", *w, buf);
    free(buf);

    /* Closed loop: no rate keys. */
    o.rate = 0;
    buf = report_of(&o, &r, 0);
    assert_null(strstr(buf, "offered_rate_per_s="));
    assert_null(strstr(buf, "send_lag_p99_ms="));
    assert_non_null(strstr(buf, "selling_p99_ms="));
    free(buf);
    fs_result_free(&r);
    fs_opts_free(&o);
}

/* The fast path reads a whole answer read in one go, and leaves anything
 * else to http-parser. */
static void http_simple_reads_whole_answers_only(void **state)
{
    (void)state;
    fs_http_simple_resp r;
    const char *ok = "HTTP/1.1 200 OK\r\nServer: cachesvc\r\nContent-Type: application/json\r\n"
                     "Content-Length: 13\r\nX-Request-Id: d6-0\r\nX-Cache:  redis \r\n\r\n"
                     "{\"version\":7}";
    assert_int_equal(fs_http_simple(ok, strlen(ok), &r), 1);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.keep_alive, 1);
    assert_int_equal(r.body_len, 13);
    assert_memory_equal(r.body, "{\"version\":7}", 13);
    assert_int_equal(r.xcache_len, 5);
    assert_memory_equal(r.xcache, "redis", 5);

    const char *sold_out = "HTTP/1.1 409 Conflict\r\ncontent-length: 20\r\nConnection: close\r\n\r\n"
                           "{\"error\":\"sold_out\"}";
    assert_int_equal(fs_http_simple(sold_out, strlen(sold_out), &r), 1);
    assert_int_equal(r.status, 409);
    assert_int_equal(r.keep_alive, 0);
    assert_null(r.xcache);

    const char *empty = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(fs_http_simple(empty, strlen(empty), &r), 1);
    assert_int_equal(r.body_len, 0);

    /* Left to http-parser. */
    static const char *const others[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"version\":",          /* partial body */
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",                         /* partial head */
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n", /* two answers */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\n\r\n{}",                                        /* no length */
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}",
        "HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 200 OK\nContent-Length: 2\n\n{}",                          /* bare LF */
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n folded\r\n\r\n{}",
        "HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\nConnection: upgrade\r\nContent-Length: 2\r\n\r\n{}",
        NULL,
    };
    for (const char *const *o = others; *o; o++)
        if (fs_http_simple(*o, strlen(*o), &r) != 0)
            fail_msg("fast path took \"%s\"", *o);
}

/* Removes the data files fs_report_plot_script wrote into dir, and dir. */
static void rm_plot_dir(const char *dir)
{
    static const char *files[] = {"timeline.dat", "curve0.dat", "curve1.dat", "curve2.dat",
                                  "sweep.dat"};
    char p[600];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* Every panel of both plots has a title, and every axis a label with its
 * unit; the open loop says latency counts from the intended send time. */
static void plot_scripts_label_everything(void **state)
{
    (void)state;
    fs_opts o;
    const char *args[] = {"--rate", "500", "--stale-windows", "0,1000", "--requests", "1000"};
    assert_int_equal(parse(&o, args, 6), 0);
    assert_int_equal(fs_opts_name_skus(&o, -1, "t"), 0);
    fs_result r[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fs_result_init(&r[i], &o, 10), 0);
        r[i].elapsed_s = 2.5;
        r[i].delay_ms = i * 500;
        fs_result_tick(&r[i], MS(50), MS(2), 0, 1, 0);
        fs_hist_record(&r[i].all, MS(2));
        fs_hist_record(&r[i].lat[FS_ROUTE_GET], MS(2));
        atomic_fetch_add(&r[i].outcomes[FS_ROUTE_GET][FS_O_OK], 10);
    }
    fs_result *rs[] = {&r[0], &r[1]};
    char dir[] = "/tmp/test_flashsale_plot.XXXXXX";
    assert_non_null(mkdtemp(dir));

    static const char *const run_has[] = {
        "10 requests, open loop at 500/s, 64 connections, 1 target",
        "set title 'Throughput",
        "set title 'Latency per 100 ms, all routes (from intended send time)'",
        "set y2label 'units sold (cumulative)'",
        "set title 'Latency by percentile",
        "set xlabel 'time since start (s)'",
        "set ylabel 'requests/s'",
        "set ylabel 'latency (ms)'",
        "set ylabel 'latency (ms, log scale)'",
        "set xlabel 'percentile (%)'",
        NULL,
    };
    static const char *const sweep_has[] = {
        "invalidation delay sweep",
        "set xlabel 'invalidation delay (ms)'",
        "set ylabel 'stale reads (% of reads)'",
        "title 'W=1s'",
        "set y2label 'database reads/s'",
        "set title 'Latency, all routes'",
        NULL,
    };
    for (int n = 1; n <= 2; n++) {
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        assert_int_equal(fs_report_plot_script(m, dir, "/tmp/x.png", &o, rs, n), 0);
        fclose(m);
        for (const char *const *want = n == 1 ? run_has : sweep_has; *want; want++)
            if (strstr(buf, *want) == NULL)
                fail_msg("plot script lacks \"%s\"", *want);
        free(buf);
    }

    /* The sweep's data: one row per delay. */
    char p[600], line[256];
    snprintf(p, sizeof(p), "%s/sweep.dat", dir);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    int rows = 0;
    while (fgets(line, sizeof(line), f))
        rows++;
    fclose(f);
    assert_int_equal(rows, 2);
    rm_plot_dir(dir);
    for (int i = 0; i < 2; i++)
        fs_result_free(&r[i]);
    fs_opts_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hist_buckets_are_contiguous),
        cmocka_unit_test(hist_index_brackets_value),
        cmocka_unit_test(hist_percentiles),
        cmocka_unit_test(stale_scripted_sequence),
        cmocka_unit_test(stale_reads_teach_versions),
        cmocka_unit_test(stale_out_of_order_observations),
        cmocka_unit_test(verify_clean_sale_passes),
        cmocka_unit_test(verify_detects_each_violation),
        cmocka_unit_test(verify_uses_the_baseline),
        cmocka_unit_test(audit_parse),
        cmocka_unit_test(json_scan),
        cmocka_unit_test(outcome_classify),
        cmocka_unit_test(opts_defaults_and_flags),
        cmocka_unit_test(opts_rejects_bad_input),
        cmocka_unit_test(report_outputs),
        cmocka_unit_test(plot_scripts_label_everything),
        cmocka_unit_test(tick_fills_seconds_and_tenths),
        cmocka_unit_test(phases_split_at_the_last_sale),
        cmocka_unit_test(phase_percentiles_split_by_due_time),
        cmocka_unit_test(kv_open_loop_and_selling_p99),
        cmocka_unit_test(http_simple_reads_whole_answers_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
