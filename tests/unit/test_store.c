/*
 * test_store.c: the store's decision rules and the SQLite backend's batch
 * transaction, without the runtime's scheduler (the backend runs its calls
 * inline when the caller is not a coroutine).
 *
 * The serial model: an in-memory item, its orders by idempotency key and
 * its purchases by user, deciding one request at a time with the same
 * rules (store__decide on batches of one). The randomized test runs the
 * same request sequence through the SQLite backend cut into random batches
 * and requires identical outcomes, replays of the same orders, and the
 * audit invariants.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cachesvc/store/store_int.h"
#include "tests/support/store_model.h"

static void test_valid(void **state)
{
    (void)state;
    assert_true(store_valid_id("hot"));
    assert_true(store_valid_id("A-z.0_9:x"));
    assert_false(store_valid_id(""));
    assert_false(store_valid_id(NULL));
    assert_false(store_valid_id("a b"));
    assert_false(store_valid_id("a/b"));
    char long_id[STORE_SKU_MAX + 2];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[STORE_SKU_MAX + 1] = '\0';
    assert_false(store_valid_id(long_id));
    long_id[STORE_SKU_MAX] = '\0';
    assert_true(store_valid_id(long_id));
    assert_true(store_valid_key("k-1{\"}\\,"));
    assert_false(store_valid_key("a key"));
    assert_false(store_valid_key(""));
    assert_string_equal(store_outcome_name(STORE_INSUFFICIENT_STOCK), "insufficient_stock");
    assert_string_equal(store_outcome_name(STORE_OUTCOME_UNKNOWN), "outcome_unknown");
    assert_string_equal(store_strerror(-ECONNABORTED),
                        "connection lost during commit; outcome unknown");
}

static store__op decr(const char *user, int64_t qty, const char *key)
{
    store__op op;
    memset(&op, 0, sizeof op);
    op.kind = STORE__DECR;
    op.user_id = user;
    op.qty = qty;
    op.key = key;
    return op;
}

static store__op put(int64_t stock, int64_t limit, int64_t sale)
{
    store__op op;
    memset(&op, 0, sizeof op);
    op.kind = STORE__PUT;
    op.put.stock = stock;
    op.put.per_user_limit = limit;
    op.put.sale_starts_at_ms = sale;
    return op;
}

static void test_decide_rules(void **state)
{
    (void)state;
    store__state s = {0};
    store__op o[12];
    store__op *p[12];
    for (int i = 0; i < 12; i++)
        p[i] = &o[i];

    o[0] = decr("u1", 1, NULL);          /* not found */
    o[1] = put(-1, 2, -1);               /* new item without stock: invalid */
    o[2] = put(3, 2, 1000);              /* create: stock 3, limit 2, sale at 1000 */
    o[3] = decr("u1", 1, "k1");          /* now 500: not started */
    assert_int_equal(store__decide(&s, 500, p, 4), 1);
    assert_int_equal(o[0].outcome, STORE_NOT_FOUND);
    assert_int_equal(o[1].outcome, -EINVAL);
    assert_int_equal(o[2].outcome, 0);
    assert_int_equal(o[2].created, 1);
    assert_int_equal(o[3].outcome, STORE_SALE_NOT_STARTED);
    assert_int_equal(s.stock, 3);
    assert_int_equal(s.units_supplied, 3);

    o[0] = decr("u1", 2, "k1");          /* ok: stock 1 */
    o[1] = decr("u1", 1, NULL);          /* limit 2: exceeded */
    o[2] = decr("u1", 2, "k1");          /* replay of o[0] */
    o[3] = decr("u2", 2, NULL);          /* insufficient */
    o[4] = decr("u2", 1, "k2");          /* ok: stock 0 */
    o[5] = decr("u3", 1, NULL);          /* sold out */
    o[6] = put(5, 0, 0);                 /* restock to 5, no limit */
    o[7] = decr("u1", 3, NULL);          /* ok now (no limit): stock 2 */
    o[8] = decr("u9", 1, "old");         /* a key the database knew */
    o[8].key_found = 1;
    o[8].prior.order_id = 77;
    strcpy(o[8].prior.user_id, "u9");
    o[8].prior.qty = 1;
    o[9] = decr("u4", 1, NULL);
    o[9].bought = 0;
    assert_int_equal(store__decide(&s, 2000, p, 10), 1);
    assert_int_equal(o[0].outcome, STORE_OK);
    assert_int_equal(o[1].outcome, STORE_LIMIT_EXCEEDED);
    assert_int_equal(o[2].outcome, STORE_REPLAYED);
    assert_int_equal(o[2].replay_of, 0);
    assert_int_equal(o[3].outcome, STORE_INSUFFICIENT_STOCK);
    assert_int_equal(o[4].outcome, STORE_OK);
    assert_int_equal(o[5].outcome, STORE_SOLD_OUT);
    assert_int_equal(o[6].outcome, 0);
    assert_int_equal(o[6].created, 0);
    assert_int_equal(o[7].outcome, STORE_OK);
    assert_int_equal(o[8].outcome, STORE_REPLAYED);
    assert_int_equal(o[8].replay_of, -1);
    assert_int_equal(o[9].outcome, STORE_OK);
    assert_int_equal(s.stock, 1);
    /* 3 supplied, then restocked from 0 to 5. */
    assert_int_equal(s.units_supplied, 8);

    /* A limit counts what the user bought before the batch. */
    s.per_user_limit = 2;
    o[0] = decr("u5", 1, NULL);
    o[0].bought = 2;
    o[1] = decr("u6", 1, NULL);
    o[1].bought = 1;
    assert_int_equal(store__decide(&s, 2000, p, 2), 1);
    assert_int_equal(o[0].outcome, STORE_LIMIT_EXCEEDED);
    assert_int_equal(o[1].outcome, STORE_OK);
    assert_int_equal(s.stock, 0);

    /* Nothing changes: no version bump is due. */
    o[0] = decr("u7", 1, NULL);
    assert_int_equal(store__decide(&s, 2000, p, 1), 0);
    assert_int_equal(o[0].outcome, STORE_SOLD_OUT);

    /* A key replays only the request it was first sent with: another
     * buyer, qty or sku under it is refused, in the batch and from the
     * database alike, and applies nothing. */
    s.stock = 10;
    s.per_user_limit = 0;
    o[0] = decr("alice", 1, "k1");           /* ok */
    o[1] = decr("mallory", 1, "k1");         /* another buyer */
    o[2] = decr("alice", 3, "k1");           /* another qty */
    o[3] = decr("alice", 1, "k1");           /* the same: replay */
    o[4] = decr("bob", 2, "db");             /* the database's key, another sku */
    o[4].sku = "hot";
    o[4].key_found = 1;
    o[4].prior.order_id = 5;
    strcpy(o[4].prior.sku, "other");
    strcpy(o[4].prior.user_id, "bob");
    o[4].prior.qty = 2;
    o[5] = o[4];
    o[5].sku = "other";                      /* the same request: replay */
    assert_int_equal(store__decide(&s, 2000, p, 6), 1);
    assert_int_equal(o[0].outcome, STORE_OK);
    assert_int_equal(o[1].outcome, STORE_KEY_MISMATCH);
    assert_int_equal(o[1].replay_of, 0);
    assert_int_equal(o[2].outcome, STORE_KEY_MISMATCH);
    assert_int_equal(o[3].outcome, STORE_REPLAYED);
    assert_int_equal(o[4].outcome, STORE_KEY_MISMATCH);
    assert_int_equal(o[5].outcome, STORE_REPLAYED);
    assert_int_equal(s.stock, 9);
    assert_string_equal(store_outcome_name(STORE_KEY_MISMATCH), "idempotency_key_mismatch");

    /* Deltas per user. */
    const char *users[4];
    int64_t qtys[4];
    o[0] = decr("a", 1, NULL); o[0].outcome = STORE_OK;
    o[1] = decr("b", 2, NULL); o[1].outcome = STORE_OK;
    o[2] = decr("a", 3, NULL); o[2].outcome = STORE_OK;
    o[3] = decr("c", 3, NULL); o[3].outcome = STORE_SOLD_OUT;
    assert_int_equal(store__purchase_deltas(p, 4, users, qtys), 2);
    assert_string_equal(users[0], "a");
    assert_int_equal(qtys[0], 4);
    assert_int_equal(qtys[1], 2);
    assert_int_equal(store__distinct_users(p, 4, users), 3);
}

/* ---- the SQLite backend against the serial model ------------------------ */

static store *open_sqlite(const char *name)
{
    char path[512];
    store *st = calloc(1, sizeof *st);
    assert_non_null(st);
    st->cfg.timeout_ms = 5000;
    st->cfg.batch_max = 256;
    snprintf(path, sizeof path, "%s/%s", tsm_tmpdir, name);
    assert_int_equal(store__sqlite_open(st, path), 0);
    return st;
}

static void close_sqlite(store *st)
{
    st->be->close(st);
    free(st);
}

static void test_sqlite_migrations(void **state)
{
    (void)state;
    store *st = open_sqlite("mig.db");
    close_sqlite(st);
    st = open_sqlite("mig.db");   /* reopening applies nothing, fails nothing */
    store_item it;
    assert_int_equal(st->be->get_item(st, "none", &it), -ENOENT);
    assert_int_equal(st->be->ping(st), 0);
    close_sqlite(st);
}

static void test_sqlite_model(void **state)
{
    (void)state;
    store *st = open_sqlite("model.db");
    tsm_backend_model_test(st, NULL, "hot", 3000, 60, 12345);
    close_sqlite(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_decide_rules),
        cmocka_unit_test(test_sqlite_migrations),
        cmocka_unit_test(test_sqlite_model),
    };
    return cmocka_run_group_tests(tests, tsm_tmpdir_setup, tsm_tmpdir_teardown);
}
