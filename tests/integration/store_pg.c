/*
 * store_pg.c: the PostgreSQL store against a real server started by
 * scripts/postgres in a temp dir on 127.0.0.1:23100 (stopped at the end,
 * also on failure). Runs single-threaded on the runtime stand-in
 * (tests/support/store_rtstub.c): the serial model through random batch
 * transactions, the API calls, a connection broken during COMMIT (outcome
 * unknown, then a safe retry with the same key), the server stopped and
 * restarted under the store, a row locked by another session (a timed-out
 * version check must not leave its reply on a pooled connection; a
 * one-round-trip batch's lock wait ends unapplied, not in doubt), a row
 * changed by hand without a new version (the one-round-trip check compares
 * the whole state), and
 * sold-out decrements answered from memory
 * (store_sold_out) equal to the batch's answers, on PostgreSQL and SQLite.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "cachesvc/store/pg_int.h"
#include "cachesvc/store/store_int.h"
#include "tests/support/store_model.h"
#include "kit/kit.h"

#define PORT 23100

static char dir[256];
static char url[256];

static int pg_cmd(const char *what)
{
    return tsm_pg_cmd(what, dir, PORT, url, sizeof url);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/store_pg.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    tsm_pg_guard(dir, dir);
    return pg_cmd("up");
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    pg_cmd("down");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static store *open_pg(void)
{
    store *st = NULL;
    store_config cfg = {.pool_size = 1, .timeout_ms = 5000, .reconnect_min_ms = 20,
                        .reconnect_max_ms = 200};
    assert_int_equal(store_open(url, &cfg, &st), 0);
    return st;
}

static void test_pg_open_twice(void **state)
{
    (void)state;
    store *st = open_pg();
    store_close(st);
    st = open_pg();   /* migrations already applied: nothing to do */
    assert_int_equal(store_ping(st), 0);
    store_item it;
    assert_int_equal(store_get_item(st, "nothing", &it), -ENOENT);
    store_close(st);
}

static void test_pg_model(void **state)
{
    (void)state;
    store *st = open_pg();
    tsm_backend_model_test(st, NULL, "model", 3000, 60, 777);
    store_close(st);
}

/* Two stores on one database, as two instances: each batch goes to one of
 * them, so the item's state a store's last batch left is often stale when
 * its next batch decides on it in one round trip (the version check fails
 * and the batch reruns with its reads), and otherwise current. Keys are
 * drawn from a large pool here, so that most batches are written in one
 * round trip (a key used before sends its batch the way with reads). */
static void test_pg_model_two_stores(void **state)
{
    (void)state;
    store *st = open_pg(), *st2 = open_pg();
    tsm_backend_model_test(st, st2, "model2", 3000, 60, 4242);
    tsm_backend_model_test(st, st2, "model3", 3000, 1000, 4243);
    store_close(st2);
    store_close(st);
}

static void test_pg_api(void **state)
{
    (void)state;
    store *st = open_pg();
    store_item it;
    store_decrement_result r;
    int created = -1;
    const char *key = "k\"{,}\\'x";

    store_put p = {.stock = -1, .per_user_limit = -1, .sale_starts_at_ms = -1};
    assert_int_equal(store_put_item(st, "api", &p, RT_NO_DEADLINE, &it, &created), -EINVAL);
    p.stock = 3;
    p.per_user_limit = 2;
    assert_int_equal(store_put_item(st, "api", &p, RT_NO_DEADLINE, &it, &created), 0);
    assert_int_equal(created, 1);
    assert_int_equal(it.stock, 3);
    assert_int_equal(it.version, 1);
    assert_int_equal(it.units_supplied, 3);

    assert_int_equal(store_decrement(st, "api", "u1", 2, key, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_OK);
    assert_int_equal(r.stock, 1);
    assert_int_equal(r.version, 2);
    int64_t order = r.order_id;
    assert_true(order > 0);

    assert_int_equal(store_decrement(st, "api", "u1", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_LIMIT_EXCEEDED);
    assert_int_equal(r.version, 2);
    assert_int_equal(store_decrement(st, "api", "u2", 2, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_INSUFFICIENT_STOCK);
    assert_int_equal(store_decrement(st, "api", "u1", 2, key, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_REPLAYED);
    assert_int_equal(r.order_id, order);
    assert_string_equal(r.user_id, "u1");
    assert_int_equal(r.qty, 2);
    assert_int_equal(r.stock, 1);
    assert_int_equal(r.version, 2);
    /* The key with another buyer, qty or item: refused, nothing applied,
     * the answer describing the key's own order. */
    assert_int_equal(store_decrement(st, "api", "u3", 1, key, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_KEY_MISMATCH);
    assert_int_equal(r.order_id, order);
    assert_string_equal(r.user_id, "u1");
    assert_string_equal(r.sku, "api");
    assert_int_equal(store_decrement(st, "api", "u1", 1, key, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_KEY_MISMATCH);
    assert_int_equal(store_decrement(st, "none", "u1", 2, key, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_KEY_MISMATCH);
    assert_string_equal(r.sku, "api");
    /* The order is found by its key; an unknown key is not. */
    store_order o;
    assert_int_equal(store_order_by_key(st, key, &o), 0);
    assert_int_equal(o.order_id, order);
    assert_string_equal(o.sku, "api");
    assert_string_equal(o.user_id, "u1");
    assert_int_equal(o.qty, 2);
    assert_int_equal(o.stock, 1);
    assert_int_equal(o.version, 2);
    assert_int_equal(store_order_by_key(st, "no-such-key", &o), -ENOENT);
    assert_int_equal(store_order_by_key(st, "bad key", &o), -EINVAL);
    assert_int_equal(store_get_item(st, "api", &it), 0);
    assert_int_equal(it.version, 2);
    assert_int_equal(store_decrement(st, "none", "u1", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_NOT_FOUND);
    assert_int_equal(store_decrement(st, "api", "bad user", 1, NULL, RT_NO_DEADLINE, &r),
                     -EINVAL);
    assert_int_equal(store_decrement(st, "api", "u1", 0, NULL, RT_NO_DEADLINE, &r), -EINVAL);

    /* Sale start in the future, then a restock. */
    p.stock = 10;
    p.per_user_limit = 0;
    p.sale_starts_at_ms = kit_wall_ms() + 3600 * 1000;
    assert_int_equal(store_put_item(st, "api", &p, RT_NO_DEADLINE, &it, &created), 0);
    assert_int_equal(created, 0);
    assert_int_equal(it.units_supplied, 12);
    assert_int_equal(store_decrement(st, "api", "u4", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_SALE_NOT_STARTED);
    p.stock = -1;
    p.sale_starts_at_ms = 0;
    assert_int_equal(store_put_item(st, "api", &p, RT_NO_DEADLINE, &it, NULL), 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(store_decrement(st, "api", "u5", 1, NULL, RT_NO_DEADLINE, &r), 0);
        assert_int_equal(r.outcome, STORE_OK);
    }
    assert_int_equal(store_decrement(st, "api", "u5", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_SOLD_OUT);

    store_audit_result au;
    assert_int_equal(store_audit(st, "api", 1, &au), 0);
    assert_int_equal(au.item.stock, 0);
    assert_int_equal(au.units_sold, 12);
    assert_int_equal(au.orders, 11);
    assert_int_equal(au.max_user_qty, 10);
    assert_int_equal(au.n_order_ids, 11);
    assert_int_equal(au.order_ids[0], order);
    store_audit_free(&au);
    assert_int_equal(store_audit(st, "none", 0, &au), -ENOENT);

    store_stats stats;
    store_stats_get(st, &stats);
    assert_true(stats.batches >= 17);
    assert_int_equal(stats.orders, 11);
    assert_int_equal(stats.replays, 1);
    store_close(st);
}

static void test_pg_unknown_outcome(void **state)
{
    (void)state;
    store *st = open_pg();
    store_decrement_result r;
    store_put p = {.stock = 5, .per_user_limit = -1, .sale_starts_at_ms = -1};
    assert_int_equal(store_put_item(st, "unk", &p, RT_NO_DEADLINE, NULL, NULL), 0);

    store__fault_break_after_commit = 1;
    assert_int_equal(store_decrement(st, "unk", "u1", 2, "retry-me", RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_OUTCOME_UNKNOWN);
    assert_int_equal(store__fault_break_after_commit, 0);
    /* The retry with the same key is safe: it either replays the order
     * the broken COMMIT made or makes it now; never two. */
    assert_int_equal(store_decrement(st, "unk", "u1", 2, "retry-me", RT_NO_DEADLINE, &r), 0);
    assert_true(r.outcome == STORE_REPLAYED || r.outcome == STORE_OK);
    assert_int_equal(store_decrement(st, "unk", "u1", 2, "retry-me", RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_REPLAYED);

    store_audit_result au;
    assert_int_equal(store_audit(st, "unk", 0, &au), 0);
    assert_int_equal(au.orders, 1);
    assert_int_equal(au.units_sold, 2);
    assert_int_equal(au.item.stock, 3);
    store_audit_free(&au);
    store_stats stats;
    store_stats_get(st, &stats);
    assert_int_equal(stats.unknown_outcomes, 1);
    store_close(st);
}

static void test_pg_down_up(void **state)
{
    (void)state;
    store *st = open_pg();
    store_decrement_result r;
    store_put p = {.stock = 100, .per_user_limit = -1, .sale_starts_at_ms = -1};
    assert_int_equal(store_put_item(st, "down", &p, RT_NO_DEADLINE, NULL, NULL), 0);
    assert_int_equal(store_decrement(st, "down", "u1", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_OK);

    assert_int_equal(pg_cmd("down"), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_decrement(st, "down", "u1", 1, NULL, RT_NO_DEADLINE, &r), 0);
        assert_int_equal(r.outcome, STORE_UNAVAILABLE);
    }
    store_item it;
    assert_true(store_get_item(st, "down", &it) == -EIO);
    assert_int_equal(store_ping(st), -EIO);
    assert_int_equal(pg_cmd("up"), 0);

    /* Recovery: the reconnect backoff is at most 200 ms here. */
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++) {
        assert_int_equal(store_decrement(st, "down", "u1", 1, NULL, RT_NO_DEADLINE, &r), 0);
        ok = r.outcome == STORE_OK;
        if (!ok) {
            assert_int_equal(r.outcome, STORE_UNAVAILABLE);
            usleep(50 * 1000);
        }
    }
    assert_true(ok);
    store_audit_result au;
    assert_int_equal(store_audit(st, "down", 0, &au), 0);
    assert_int_equal(au.units_sold, 2);
    assert_int_equal(au.item.stock, 98);
    store_audit_free(&au);
    store_close(st);
}

/* ---- a row locked by another session -------------------------------------- */

/* Opens a second session (plain libpq) that locks sku's row until
 * unlock_row. */
static PGconn *lock_row(const char *sku)
{
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    const char *p[1] = {sku};
    PGresult *r = PQexec(c, "BEGIN");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQexecParams(c, "SELECT stock FROM items WHERE sku = $1 FOR UPDATE", 1, NULL, p, NULL,
                     NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 1);
    PQclear(r);
    return c;
}

static void unlock_row(PGconn *c)
{
    PGresult *r = PQexec(c, "COMMIT");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
}

static store *open_pg_short(int pool_size)
{
    store *st = NULL;
    store_config cfg = {.pool_size = pool_size, .timeout_ms = 300, .reconnect_min_ms = 20,
                        .reconnect_max_ms = 200};
    assert_int_equal(store_open(url, &cfg, &st), 0);
    return st;
}

/* Waits (up to 5 s) until a plain read of sku succeeds. A wait cut short
 * drops its connection; on a loaded machine the reconnect (a connect and
 * its prepares) can outlast a test store's 300 ms deadline, and the pool
 * then answers -EIO for its reconnect backoff. A test that asserts on what
 * a later call finds settles the pool first. */
static void settle(store *st, const char *sku)
{
    store_item it;
    for (int i = 0; i < 50 && store_get_item(st, sku, &it) != 0; i++)
        usleep(100 * 1000);
}

/* A version check (a sold-out item's decrement, decided on its known state
 * in one round trip) that times out on the row lock leaves its reply due
 * on the connection: the pool must not hand that connection to the next
 * caller, who would read the check's reply as its own (it did: the item
 * read after the unlock came back wrong). */
static void test_pg_pool_after_timeout(void **state)
{
    (void)state;
    store *st = open_pg_short(1);
    store_put p = {.stock = 1, .per_user_limit = 0, .sale_starts_at_ms = 0};
    store_decrement_result r;
    store_item it;
    store_stats stats;

    assert_int_equal(store_put_item(st, "misalign", &p, RT_NO_DEADLINE, NULL, NULL), 0);
    assert_int_equal(store_decrement(st, "misalign", "u1", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_OK);
    int64_t version = r.version;
    assert_int_equal(store_decrement(st, "misalign", "u1b", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_SOLD_OUT);
    /* Idle connections go back to the pool: still the one from the open. */
    store_stats_get(st, &stats);
    assert_int_equal(stats.reconnects, 1);

    PGconn *c = lock_row("misalign");
    assert_int_equal(store_decrement(st, "misalign", "u2", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_UNAVAILABLE);
    unlock_row(c);
    settle(st, "misalign");

    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_get_item(st, "misalign", &it), 0);
        assert_string_equal(it.sku, "misalign");
        assert_int_equal(it.stock, 0);
        assert_int_equal(it.version, version);
        assert_int_equal(it.units_supplied, 1);
    }
    store_outbox_row rows[64];
    int n = store_outbox_fetch(st, 0, 64, rows);
    assert_true(n > 0);
    for (int i = 0; i < n; i++)
        assert_true(rows[i].id > 0 && rows[i].sku[0] != '\0' && rows[i].version > 0);
    store_audit_result au;
    assert_int_equal(store_audit(st, "misalign", 1, &au), 0);
    assert_int_equal(au.orders, 1);
    assert_int_equal(au.item.stock, 0);
    assert_int_equal(au.item.version, version);
    store_audit_free(&au);
    assert_int_equal(store_decrement(st, "misalign", "u3", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_SOLD_OUT);
    assert_int_equal(r.version, version);
    store_close(st);
}

/* A one-round-trip batch (BEGIN, the check, the writes and COMMIT queued
 * at once) waiting on a row lock held elsewhere past the store's timeout:
 * the lock wait ends on the server first (lock_timeout), so the requests
 * are answered unavailable and nothing is applied when the lock is
 * released, instead of an unknown outcome that commits later. */
static void test_pg_lock_wait(void **state)
{
    (void)state;
    store *st = open_pg_short(2);
    store_put p = {.stock = 10, .per_user_limit = 0, .sale_starts_at_ms = 0};
    store_decrement_result r;
    store_stats stats;

    assert_int_equal(store_put_item(st, "lockwait", &p, RT_NO_DEADLINE, NULL, NULL), 0);
    assert_int_equal(store_decrement(st, "lockwait", "u1", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_OK);

    PGconn *c = lock_row("lockwait");
    assert_int_equal(store_decrement(st, "lockwait", "u2", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_UNAVAILABLE);
    assert_int_equal(store_decrement(st, "lockwait", "u3", 1, "lw-key", RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_UNAVAILABLE);
    unlock_row(c);
    usleep(300 * 1000);
    settle(st, "lockwait");

    store_audit_result au;
    assert_int_equal(store_audit(st, "lockwait", 0, &au), 0);
    assert_int_equal(au.orders, 1);
    assert_int_equal(au.item.stock, 9);
    store_audit_free(&au);
    store_stats_get(st, &stats);
    assert_int_equal(stats.unknown_outcomes, 0);
    /* The item sells on afterwards, and the key was not used. */
    assert_int_equal(store_decrement(st, "lockwait", "u3", 1, "lw-key", RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_OK);
    assert_int_equal(r.stock, 8);
    store_close(st);
}

/* Runs sql on a session of its own (plain libpq). */
static void exec_sql(const char *sql)
{
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
}

/* ---- answers that rest on a commit not yet durable ------------------------ */

/* Runs sql on a session of its own (the server's settings). */
static void admin_sql(const char *sql)
{
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    assert_true(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK);
    PQclear(r);
    PQfinish(c);
}

static void sync_standby(const char *names)
{
    char sql[128];
    snprintf(sql, sizeof sql, "ALTER SYSTEM SET synchronous_standby_names = '%s'", names);
    admin_sql(sql);
    admin_sql("SELECT pg_reload_conf()");
    usleep(300 * 1000);   /* the backends read the file at their next command */
}

/* Teardown of test_pg_replay_durable, also when it fails: no standby
 * required any more. */
static int no_sync_standby(void **state)
{
    (void)state;
    admin_sql("ALTER SYSTEM RESET synchronous_standby_names");
    admin_sql("SELECT pg_reload_conf()");
    usleep(300 * 1000);
    return 0;
}

/* A commit whose wait for the synchronous standby is cut short (its
 * session terminated, or the primary restarted) is visible in the
 * primary's WAL although the standby never confirmed it; a failover then
 * loses it. A retry that finds such an order by its key must not answer
 * "replayed" (the order acknowledged, then lost: chaos_quick saw it across
 * a pg-restart), nor may the key lookup or the sold-out set's replay. The
 * standby is a name no server answers to, so every commit waits for it
 * until the store's deadline. */
static void test_pg_replay_durable(void **state)
{
    (void)state;
    store *st = open_pg_short(2);
    store_decrement_result r;
    store_put p = {.stock = 1, .per_user_limit = -1, .sale_starts_at_ms = -1};
    assert_int_equal(store_put_item(st, "dur", &p, RT_NO_DEADLINE, NULL, NULL), 0);
    store_item it;
    assert_int_equal(store_get_item(st, "dur", &it), 0);

    sync_standby("ghost");
    assert_int_equal(store_decrement(st, "dur", "u1", 1, "dur-k", RT_NO_DEADLINE, &r), 0);
    assert_true(r.outcome == STORE_OUTCOME_UNKNOWN || r.outcome == STORE_UNAVAILABLE);
    /* The session waiting for the standby ends (as in a restart of the
     * primary): its commit is now visible, in the primary's WAL only. Every
     * answer resting on it must wait for the standby too. */
    usleep(200 * 1000);
    admin_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'");
    usleep(200 * 1000);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(store_decrement(st, "dur", "u1", 1, "dur-k", RT_NO_DEADLINE, &r), 0);
        assert_true(r.outcome == STORE_OUTCOME_UNKNOWN || r.outcome == STORE_UNAVAILABLE);
    }
    store_order o;
    assert_true(store_order_by_key(st, "dur-k", &o) < 0);
    settle(st, "dur");
    /* A key with no order rests on no commit: answered without the wait
     * (a sold-out item's buyers with new keys each look theirs up). */
    assert_int_equal(store_order_by_key(st, "dur-absent", &o), -ENOENT);
    int so = store_sold_out(st, "dur", it.version + 1, "u1", 1, "dur-k", &r);
    assert_true(so <= 0 || (r.outcome != STORE_REPLAYED && r.outcome != STORE_OK));

    /* The standby requirement gone, the order stands and replays. */
    no_sync_standby(NULL);
    int replayed = 0;
    for (int i = 0; i < 50 && !replayed; i++) {
        assert_int_equal(store_decrement(st, "dur", "u1", 1, "dur-k", RT_NO_DEADLINE, &r), 0);
        replayed = r.outcome == STORE_REPLAYED;
        if (!replayed)
            usleep(100 * 1000);
    }
    assert_true(replayed);
    store_audit_result au;
    assert_int_equal(store_audit(st, "dur", 0, &au), 0);
    assert_int_equal(au.orders, 1);
    assert_int_equal(au.item.stock, 0);
    store_audit_free(&au);
    store_close(st);
}


/* The one-round-trip batch checks the whole remembered state, not only the
 * version: a row changed by hand without a new version (stock, limit, sale
 * start, units supplied) sends the batch the way that reads first. */
static void test_pg_guard_state(void **state)
{
    (void)state;
    static const struct {
        const char *set;
        int64_t qty;
        store_outcome outcome;
        int64_t stock;   /* after the decrement */
    } cases[] = {
        {"stock = 0", 1, STORE_SOLD_OUT, 0},
        {"stock = 2, units_supplied = 3", 1, STORE_OK, 1},
        {"units_supplied = 9", 1, STORE_OK, 3},
        {"sale_starts_at_ms = 9000000000000", 1, STORE_SALE_NOT_STARTED, 4},
        {"per_user_limit = 1", 2, STORE_LIMIT_EXCEEDED, 4},
    };
    store *st = open_pg();
    store_put p = {.stock = 5, .per_user_limit = 0, .sale_starts_at_ms = 0};
    store_decrement_result r;
    store_item it;
    char sku[32], sql[200];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(sku, sizeof sku, "guard%zu", i);
        assert_int_equal(store_put_item(st, sku, &p, RT_NO_DEADLINE, NULL, NULL), 0);
        assert_int_equal(store_decrement(st, sku, "u1", 1, NULL, RT_NO_DEADLINE, &r), 0);
        assert_int_equal(r.outcome, STORE_OK);
        assert_int_equal(r.stock, 4);
        snprintf(sql, sizeof sql, "UPDATE items SET %s WHERE sku = '%s'", cases[i].set, sku);
        exec_sql(sql);
        assert_int_equal(store_get_item(st, sku, &it), 0);
        assert_int_equal(store_decrement(st, sku, "u2", cases[i].qty, NULL, RT_NO_DEADLINE, &r),
                         0);
        assert_int_equal(r.outcome, cases[i].outcome);
        assert_int_equal(r.stock, cases[i].stock);
        store_audit_result au;
        assert_int_equal(store_audit(st, sku, 0, &au), 0);
        assert_int_equal(au.orders, cases[i].outcome == STORE_OK ? 2 : 1);
        assert_int_equal(au.item.stock, cases[i].stock);
        assert_int_equal(au.item.units_supplied, it.units_supplied);
        store_audit_free(&au);
    }
    store_close(st);
}

/* ---- one round trip under a per-user limit ---------------------------- */

/* Runs the decrements users[i] x qtys[i] (keys[i] or NULL) as one batch of
 * st's backend, as the batcher would; outcomes[i] and ids[i] out. */
static void limit_batch(store *st, const char *sku, int n, const char *const *users,
                        const int64_t *qtys, const char *const *keys, int *outcomes,
                        int64_t *ids)
{
    store__op ops[8], *p[8];
    store__batch_result r;
    assert_true(n <= 8);
    for (int i = 0; i < n; i++) {
        memset(&ops[i], 0, sizeof ops[i]);
        ops[i].kind = STORE__DECR;
        ops[i].user_id = users[i];
        ops[i].qty = qtys[i];
        ops[i].key = keys[i];
        p[i] = &ops[i];
    }
    memset(&r, 0, sizeof r);
    assert_int_equal(st->be->batch(st, sku, p, n, &r), 0);
    store__finish(&r.state, p, n);
    for (int i = 0; i < n; i++) {
        outcomes[i] = ops[i].outcome;
        ids[i] = ops[i].outcome == STORE_REPLAYED ? ops[i].prior.order_id : ops[i].order_id;
    }
}

static store_stats limit_stats(store *st)
{
    store_stats s;
    store_stats_get(st, &s);
    return s;
}

/* One batch on sku of refused (at its limit) and buyer (who buys), one
 * unit each, no keys. Returns the one-round-trip tries in it that failed;
 * *tries_ok (may be NULL) gets those that succeeded. */
static uint64_t refused_and_sold(store *st, const char *sku, const char *refused,
                                 const char *buyer, uint64_t *tries_ok)
{
    int out[2];
    int64_t id[2];
    store_stats s0 = limit_stats(st), s1;
    limit_batch(st, sku, 2, (const char *[]){refused, buyer}, (int64_t[]){1, 1},
                (const char *[]){NULL, NULL}, out, id);
    assert_int_equal(out[0], STORE_LIMIT_EXCEEDED);
    assert_int_equal(out[1], STORE_OK);
    s1 = limit_stats(st);
    if (tries_ok != NULL)
        *tries_ok = s1.one_trip_batches - s0.one_trip_batches;
    return s1.one_trip_stale - s0.one_trip_stale;
}

/* An item with a per-user limit: a batch of decrements is decided on the
 * buyers' totals this instance saw and the state it committed, and runs in
 * one round trip; the database checks what was assumed. A refused request
 * whose key was committed before replays its order; a buyer whose total
 * changed where this instance could not see it (by hand, without a new
 * version), or an item another instance sold, gets the true answer. */
static void test_pg_limit_one_trip(void **state)
{
    (void)state;
    store *st = open_pg(), *st2 = open_pg();
    store_put put = {.stock = 100, .per_user_limit = 2, .sale_starts_at_ms = 0};
    int out[8];
    int64_t id[8], id_a;
    store_stats s0, s1;

    /* Three batches in one round trip each; the third refuses u1 (at the
     * limit) with a key never used: checked absent, still one round trip. */
    assert_int_equal(store_put_item(st, "lim-a", &put, RT_NO_DEADLINE, NULL, NULL), 0);
    s0 = limit_stats(st);
    limit_batch(st, "lim-a", 2, (const char *[]){"u1", "u2"}, (int64_t[]){1, 1},
                (const char *[]){"ka", NULL}, out, id);
    assert_int_equal(out[0], STORE_OK);
    assert_int_equal(out[1], STORE_OK);
    id_a = id[0];
    limit_batch(st, "lim-a", 2, (const char *[]){"u1", "u3"}, (int64_t[]){1, 2},
                (const char *[]){"kb", NULL}, out, id);
    assert_int_equal(out[0], STORE_OK);
    assert_int_equal(out[1], STORE_OK);
    limit_batch(st, "lim-a", 2, (const char *[]){"u1", "u4"}, (int64_t[]){1, 1},
                (const char *[]){"kc", NULL}, out, id);
    assert_int_equal(out[0], STORE_LIMIT_EXCEEDED);
    assert_int_equal(out[1], STORE_OK);
    s1 = limit_stats(st);
    assert_int_equal(s1.one_trip_batches - s0.one_trip_batches, 3);
    assert_int_equal(s1.one_trip_stale - s0.one_trip_stale, 0);
    /* u1 retries the key of its first order: decided on the totals alone it
     * would be refused; the check finds the key and the batch reruns with
     * its reads, which replay the order. */
    limit_batch(st, "lim-a", 2, (const char *[]){"u1", "u5"}, (int64_t[]){1, 1},
                (const char *[]){"ka", NULL}, out, id);
    assert_int_equal(out[0], STORE_REPLAYED);
    assert_int_equal(id[0], id_a);
    assert_int_equal(out[1], STORE_OK);
    s0 = limit_stats(st);
    assert_int_equal(s0.one_trip_stale - s1.one_trip_stale, 1);

    /* A buyer's total written by hand, the item's version unchanged: the
     * check of the totals fails and the reads answer the limit. */
    assert_int_equal(store_put_item(st, "lim-b", &put, RT_NO_DEADLINE, NULL, NULL), 0);
    limit_batch(st, "lim-b", 1, (const char *[]){"u6"}, (int64_t[]){1},
                (const char *[]){NULL}, out, id);
    assert_int_equal(out[0], STORE_OK);
    exec_sql("INSERT INTO purchases (sku, user_id, qty) VALUES ('lim-b', 'u7', 2)");
    assert_int_equal(refused_and_sold(st, "lim-b", "u7", "u8", NULL), 1);

    /* Another instance sells to a buyer this one saw: its next batch is
     * stale and answers from the reads. */
    assert_int_equal(store_put_item(st, "lim-c", &put, RT_NO_DEADLINE, NULL, NULL), 0);
    limit_batch(st, "lim-c", 1, (const char *[]){"u9"}, (int64_t[]){1},
                (const char *[]){NULL}, out, id);
    assert_int_equal(out[0], STORE_OK);
    limit_batch(st2, "lim-c", 1, (const char *[]){"u9"}, (int64_t[]){1},
                (const char *[]){NULL}, out, id);
    assert_int_equal(out[0], STORE_OK);
    refused_and_sold(st, "lim-c", "u9", "u10", NULL);

    static const struct { const char *sku; int64_t sold, orders; } want[] = {
        {"lim-a", 7, 6}, {"lim-b", 2, 2}, {"lim-c", 3, 3}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        store_audit_result au;
        assert_int_equal(store_audit(st, want[i].sku, 0, &au), 0);
        assert_int_equal(au.units_sold, want[i].sold);
        assert_int_equal(au.orders, want[i].orders);
        assert_int_equal(au.item.stock, 100 - want[i].sold);
        assert_true(au.max_user_qty <= 2);
        assert_int_equal(au.duplicate_idempotency_keys, 0);
        store_audit_free(&au);
    }
    store_close(st2);
    store_close(st);
}

/* The buyers' totals this instance saw are kept when the pool opens
 * another connection (a sale's load does that), and once they no longer
 * account for every unit sold (a stale try dropped them) a buyer they do
 * not hold is read, not guessed at 0: a buyer it forgot would fail the
 * check, and the tries that followed, one after another. */
static void test_pg_limit_known_kept(void **state)
{
    (void)state;
    store *st = NULL, *st2 = open_pg();
    store_config cfg = {.pool_size = 2, .timeout_ms = 5000, .reconnect_min_ms = 20,
                        .reconnect_max_ms = 200};
    assert_int_equal(store_open(url, &cfg, &st), 0);
    store_put put = {.stock = 100, .per_user_limit = 1, .sale_starts_at_ms = 0};
    int out[8];
    int64_t id[8];

    assert_int_equal(store_put_item(st, "lim-e", &put, RT_NO_DEADLINE, NULL, NULL), 0);
    limit_batch(st, "lim-e", 1, (const char *[]){"u1"}, (int64_t[]){1}, (const char *[]){NULL},
                out, id);
    assert_int_equal(out[0], STORE_OK);
    /* The pool's second connection opens. */
    int rc;
    store__pg_conn *a = store__pg_pool_get(st, RT_NO_DEADLINE, &rc);
    store__pg_conn *b = store__pg_pool_get(st, RT_NO_DEADLINE, &rc);
    assert_non_null(a);
    assert_non_null(b);
    store__pg_pool_put(st, b, 0);
    store__pg_pool_put(st, a, 0);
    uint64_t tries_ok;
    assert_int_equal(refused_and_sold(st, "lim-e", "u1", "u2", &tries_ok), 0);
    assert_int_equal(tries_ok, 1);

    /* Another instance sells: this one's next try is stale and drops the
     * totals; its next 4 batches read first (the penalty). */
    limit_batch(st2, "lim-e", 1, (const char *[]){"u3"}, (int64_t[]){1}, (const char *[]){NULL},
                out, id);
    assert_int_equal(out[0], STORE_OK);
    static const char *const fresh[] = {"u4", "u5", "u6", "u7", "u8"};
    for (int i = 0; i < 5; i++) {
        limit_batch(st, "lim-e", 1, &fresh[i], (int64_t[]){1}, (const char *[]){NULL}, out, id);
        assert_int_equal(out[0], STORE_OK);
    }
    /* u1 bought before the totals were dropped: read, not assumed. */
    assert_int_equal(refused_and_sold(st, "lim-e", "u1", "u9", NULL), 0);

    store_audit_result au;
    assert_int_equal(store_audit(st, "lim-e", 0, &au), 0);
    assert_int_equal(au.units_sold, 9);
    assert_int_equal(au.orders, 9);
    assert_true(au.max_user_qty <= 1);
    store_audit_free(&au);
    store_close(st2);
    store_close(st);
}

/* ---- sold-out decrements answered from memory (store_sold_out) ----------- */

/* Asks store_sold_out, then the batcher, the same question: the answers
 * must be equal field by field (rejections and replays apply nothing, so
 * asking twice changes nothing). Returns the outcome. */
static store_outcome same_as_batch(store *st, const char *sku, int64_t version, const char *user,
                                   int64_t qty, const char *key)
{
    store_decrement_result m, b;
    assert_int_equal(store_sold_out(st, sku, version, user, qty, key, &m), 1);
    assert_int_equal(store_decrement(st, sku, user, qty, key, RT_NO_DEADLINE, &b), 0);
    assert_int_equal(m.outcome, b.outcome);
    assert_int_equal(m.order_id, b.order_id);
    assert_int_equal(m.stock, b.stock);
    assert_int_equal(m.version, b.version);
    if (m.outcome == STORE_REPLAYED || m.outcome == STORE_KEY_MISMATCH) {
        assert_int_equal(m.qty, b.qty);
        assert_string_equal(m.user_id, b.user_id);
        assert_string_equal(m.sku, b.sku);
    }
    return m.outcome;
}

static void sold_out_check(const char *url_, const char *sku)
{
    store *st = NULL;
    store_config cfg = {.pool_size = 1, .timeout_ms = 5000};
    store_decrement_result r;
    store_stats s0, s1;
    store_item it;
    char key1[40], key2[40], key3[40], okey[40], osku[40];

    snprintf(key1, sizeof key1, "%s-k1", sku);
    snprintf(key2, sizeof key2, "%s-k2", sku);
    snprintf(key3, sizeof key3, "%s-k3", sku);
    snprintf(okey, sizeof okey, "%s-other-k", sku);
    snprintf(osku, sizeof osku, "%s-other", sku);
    assert_int_equal(store_open(url_, &cfg, &st), 0);
    store_put p = {.stock = 3, .per_user_limit = 2, .sale_starts_at_ms = -1};
    assert_int_equal(store_put_item(st, osku, &p, RT_NO_DEADLINE, &it, NULL), 0);
    assert_int_equal(store_decrement(st, osku, "u1", 1, okey, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_OK);
    int64_t order_other = r.order_id;
    assert_int_equal(store_put_item(st, sku, &p, RT_NO_DEADLINE, &it, NULL), 0);

    /* Not sold out: nothing answered from memory. */
    assert_int_equal(store_sold_out(st, sku, it.version, "u1", 1, key1, &r), 0);
    assert_int_equal(store_decrement(st, sku, "u1", 2, key1, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_OK);
    int64_t order1 = r.order_id;
    assert_int_equal(store_decrement(st, sku, "u2", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_OK);
    assert_int_equal(r.stock, 0);
    int64_t v = r.version;

    /* A caller holding an older version is not answered. */
    assert_int_equal(store_sold_out(st, sku, v - 1, "u3", 1, key2, &r), 0);
    store_stats_get(st, &s0);
    /* Replay of a committed key after the sell-out, from memory, equal to
     * the batch's answer; the key with another buyer or qty is refused,
     * describing the original order. */
    assert_int_equal(same_as_batch(st, sku, v, "u1", 2, key1), STORE_REPLAYED);
    assert_int_equal(same_as_batch(st, sku, v, "u9", 1, key1), STORE_KEY_MISMATCH);
    assert_int_equal(store_sold_out(st, sku, v, "u9", 5, key1, &r), 1);
    assert_int_equal(r.outcome, STORE_KEY_MISMATCH);
    assert_int_equal(r.order_id, order1);
    assert_int_equal(r.qty, 2);
    assert_string_equal(r.user_id, "u1");
    assert_int_equal(r.stock, 1);
    assert_int_equal(r.version, v - 1);
    /* Another item's key: not in this item's set, found in the database. */
    assert_int_equal(same_as_batch(st, sku, v, "u1", 1, okey), STORE_KEY_MISMATCH);
    assert_int_equal(store_sold_out(st, sku, v, "u1", 1, okey, &r), 1);
    assert_int_equal(r.order_id, order_other);
    assert_string_equal(r.sku, osku);
    /* A new key: sold out. A buyer at the limit: limit_exceeded first. */
    assert_int_equal(same_as_batch(st, sku, v, "u3", 1, key2), STORE_SOLD_OUT);
    assert_int_equal(same_as_batch(st, sku, v, "u1", 1, key3), STORE_LIMIT_EXCEEDED);
    assert_int_equal(same_as_batch(st, sku, v, "u1", 1, NULL), STORE_LIMIT_EXCEEDED);
    assert_int_equal(same_as_batch(st, sku, v, "u2", 1, NULL), STORE_SOLD_OUT);
    assert_int_equal(same_as_batch(st, sku, v, "u2", 2, key2), STORE_LIMIT_EXCEEDED);
    store_stats_get(st, &s1);
    assert_int_equal(s1.sold_out_loads, s0.sold_out_loads);   /* loaded once, before */
    assert_int_equal(s1.sold_out_answers - s0.sold_out_answers, 10);
    assert_int_equal(s1.orders, s0.orders);

    /* A restock drops the set: neither version is answered any more. */
    p.stock = 1;
    p.per_user_limit = -1;
    assert_int_equal(store_put_item(st, sku, &p, RT_NO_DEADLINE, &it, NULL), 0);
    assert_int_equal(it.version, v + 1);
    assert_int_equal(store_sold_out(st, sku, v, "u3", 1, key2, &r), 0);
    assert_int_equal(store_sold_out(st, sku, v + 1, "u3", 1, key2, &r), 0);
    assert_int_equal(store_decrement(st, sku, "u3", 1, key2, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_OK);
    int64_t order2 = r.order_id;
    /* Sold out again at a new version: a new set, with the new order. */
    assert_int_equal(same_as_batch(st, sku, v + 2, "u3", 1, key2), STORE_REPLAYED);
    assert_int_equal(store_sold_out(st, sku, v + 2, "u3", 1, key2, &r), 1);
    assert_int_equal(r.order_id, order2);
    assert_int_equal(same_as_batch(st, sku, v + 2, "u1", 2, key1), STORE_REPLAYED);
    assert_int_equal(same_as_batch(st, sku, v + 2, "u4", 1, key1), STORE_KEY_MISMATCH);
    assert_int_equal(same_as_batch(st, sku, v + 2, "u4", 1, key3), STORE_SOLD_OUT);

    /* Sale not started: the store decides. */
    p.stock = 0;
    p.sale_starts_at_ms = kit_wall_ms() + 3600 * 1000;
    assert_int_equal(store_put_item(st, sku, &p, RT_NO_DEADLINE, &it, NULL), 0);
    assert_int_equal(store_sold_out(st, sku, it.version, "u4", 1, key3, &r), 0);
    assert_int_equal(store_decrement(st, sku, "u4", 1, key3, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.outcome, STORE_SALE_NOT_STARTED);
    p.sale_starts_at_ms = 0;
    assert_int_equal(store_put_item(st, sku, &p, RT_NO_DEADLINE, &it, NULL), 0);
    assert_int_equal(same_as_batch(st, sku, it.version, "u4", 1, key3), STORE_SOLD_OUT);
    assert_int_equal(store_sold_out(st, "nope", 1, "u4", 1, key3, &r), 0);
    assert_int_equal(store_sold_out(st, sku, it.version, "bad user", 1, key3, &r), -EINVAL);
    store_close(st);

    /* More orders than the bound: refused once, not reloaded each time. */
    cfg.sold_out_max_orders = 2;
    assert_int_equal(store_open(url_, &cfg, &st), 0);
    store_stats_get(st, &s0);
    assert_int_equal(store_sold_out(st, sku, it.version, "u4", 1, key3, &r), 0);
    assert_int_equal(store_sold_out(st, sku, it.version, "u4", 1, key3, &r), 0);
    store_stats_get(st, &s1);
    assert_int_equal(s1.sold_out_loads - s0.sold_out_loads, 1);
    assert_int_equal(s1.sold_out_answers, s0.sold_out_answers);
    store_close(st);
}

/* The sets together keep at most 4 x sold_out_max_orders orders: a fifth
 * item's set makes room by dropping the one answered from least recently. */
static void sold_out_budget_check(const char *url_)
{
    store *st = NULL;
    store_config cfg = {.pool_size = 1, .timeout_ms = 5000, .sold_out_max_orders = 2};
    store_decrement_result r;
    store_stats s0, s1;
    int64_t v[5];
    char sku[16], key[32];

    assert_int_equal(store_open(url_, &cfg, &st), 0);
    for (int i = 0; i < 5; i++) {
        store_put p = {.stock = 2, .per_user_limit = -1, .sale_starts_at_ms = -1};
        snprintf(sku, sizeof sku, "budget%d", i);
        assert_int_equal(store_put_item(st, sku, &p, RT_NO_DEADLINE, NULL, NULL), 0);
        for (int u = 0; u < 2; u++) {
            snprintf(key, sizeof key, "budget%d-k%d", i, u);
            assert_int_equal(store_decrement(st, sku, u ? "u1" : "u0", 1, key, RT_NO_DEADLINE,
                                             &r), 0);
            assert_int_equal(r.outcome, STORE_OK);
        }
        v[i] = r.version;
    }
    store_stats_get(st, &s0);
    for (int i = 0; i < 4; i++) {   /* four sets of two orders: the budget */
        snprintf(sku, sizeof sku, "budget%d", i);
        assert_int_equal(store_sold_out(st, sku, v[i], "x", 1, "new", &r), 1);
    }
    snprintf(sku, sizeof sku, "budget%d", 0);   /* budget0 is used again */
    assert_int_equal(store_sold_out(st, sku, v[0], "x", 1, "new", &r), 1);
    snprintf(sku, sizeof sku, "budget%d", 4);   /* drops budget1 */
    assert_int_equal(store_sold_out(st, sku, v[4], "u1", 1, "budget4-k1", &r), 1);
    assert_int_equal(r.outcome, STORE_REPLAYED);
    store_stats_get(st, &s1);
    assert_int_equal(s1.sold_out_loads - s0.sold_out_loads, 5);
    for (int i = 0; i < 5; i++) {   /* all but budget1 are still there */
        if (i == 1)
            continue;
        snprintf(sku, sizeof sku, "budget%d", i);
        assert_int_equal(store_sold_out(st, sku, v[i], "x", 1, "new", &r), 1);
    }
    store_stats_get(st, &s1);
    assert_int_equal(s1.sold_out_loads - s0.sold_out_loads, 5);
    assert_int_equal(store_sold_out(st, "budget1", v[1], "x", 1, "new", &r), 1);
    store_stats_get(st, &s1);
    assert_int_equal(s1.sold_out_loads - s0.sold_out_loads, 6);   /* budget1 again */
    store_close(st);
}

/* ---- outbox claims: one relay per row, a dead relay's rows taken over ---- */

static void drain_outbox(store *st)
{
    store_outbox_row rows[64];
    int64_t ids[64];
    int n;
    while ((n = store_outbox_fetch(st, 0, 64, rows)) > 0) {
        for (int i = 0; i < n; i++)
            ids[i] = rows[i].id;
        assert_int_equal(store_outbox_delete(st, ids, (size_t)n), 0);
    }
}

static void outbox_claim_check(const char *url_)
{
    store *a = NULL, *b = NULL;   /* two instances' stores, one database */
    store_config cfg = {.pool_size = 2, .timeout_ms = 5000};
    store_outbox_row rows[64];
    store_item it;
    assert_int_equal(store_open(url_, &cfg, &a), 0);
    assert_int_equal(store_open(url_, &cfg, &b), 0);
    drain_outbox(a);
    for (int i = 0; i < 5; i++) {
        char sku[16];
        snprintf(sku, sizeof sku, "claim%d", i);
        store_put p = {.stock = 1, .per_user_limit = -1, .sale_starts_at_ms = -1};
        assert_int_equal(store_put_item(a, sku, &p, RT_NO_DEADLINE, &it, NULL), 0);
    }
    /* A claims two, then the rest; B finds nothing left. */
    assert_int_equal(store_outbox_claim(a, "relay-a", 60000, 0, 0, 2, rows), 2);
    assert_true(rows[0].id < rows[1].id);
    int64_t first = rows[0].id;
    assert_int_equal(store_outbox_claim(a, "relay-a", 60000, 0, 0, 64, rows), 3);
    assert_true(rows[0].id > first);
    assert_int_equal(store_outbox_claim(b, "relay-b", 60000, 0, 0, 64, rows), 0);
    assert_int_equal(store_outbox_claim(b, "relay-b", 60000, 1, 0, 64, rows), 0);
    /* A asks for its own rows again (after a failed delivery). */
    assert_int_equal(store_outbox_claim(a, "relay-a", 60000, 1, 0, 64, rows), 5);
    assert_int_equal(rows[0].id, first);
    assert_int_equal(store_outbox_claim(a, "relay-a", 60000, 1, first, 64, rows), 4);
    /* A "dies": with a short lease its rows go to B once it ends. */
    assert_int_equal(store_outbox_claim(a, "relay-a", 300, 1, 0, 64, rows), 5);
    assert_int_equal(store_outbox_claim(b, "relay-b", 60000, 0, 0, 64, rows), 0);
    rt_sleep(400);
    assert_int_equal(store_outbox_claim(b, "relay-b", 60000, 0, 0, 64, rows), 5);
    assert_int_equal(store_outbox_claim(a, "relay-a", 60000, 0, 0, 64, rows), 0);
    assert_int_equal(store_outbox_claim(a, "", 1000, 0, 0, 64, rows), -EINVAL);
    /* The gauges' reading: the rows in the database and the oldest one;
     * deleting the rows empties both. */
    int64_t orows = 0, oldest = 0;
    assert_int_equal(store_outbox_stats(a, &orows, &oldest), 0);
    assert_int_equal(orows, 5);
    assert_true(oldest > 0 && oldest <= rows[0].committed_at_ms);
    drain_outbox(a);
    assert_int_equal(store_outbox_stats(a, &orows, &oldest), 0);
    assert_int_equal(orows, 0);
    assert_int_equal(oldest, 0);
    store_close(b);
    store_close(a);
}

static void test_pg_outbox_claim(void **state)
{
    (void)state;
    outbox_claim_check(url);
}

/* SQLite: one process per database, so a claim is a plain read. */
static void test_sqlite_outbox_claim(void **state)
{
    (void)state;
    char u[300];
    store *st = NULL;
    store_config cfg = {.timeout_ms = 5000};
    store_outbox_row rows[64], rows2[64];
    snprintf(u, sizeof u, "sqlite:%s/claim.db", dir);
    assert_int_equal(store_open(u, &cfg, &st), 0);
    store_put p = {.stock = 1, .per_user_limit = -1, .sale_starts_at_ms = -1};
    assert_int_equal(store_put_item(st, "claim-sq", &p, RT_NO_DEADLINE, NULL, NULL), 0);
    int n = store_outbox_claim(st, "relay-a", 60000, 0, 0, 64, rows);
    assert_true(n >= 1);
    assert_int_equal(store_outbox_fetch(st, 0, 64, rows2), n);
    assert_int_equal(rows[0].id, rows2[0].id);
    int64_t orows = 0, oldest = 0;
    assert_int_equal(store_outbox_stats(st, &orows, &oldest), 0);
    assert_int_equal(orows, n);
    assert_true(oldest > 0);
    drain_outbox(st);
    assert_int_equal(store_outbox_stats(st, &orows, &oldest), 0);
    assert_int_equal(orows, 0);
    store_close(st);
}

static int64_t wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* store_version_check: the commit time of the first version above a
 * read's, exact when it is the row's last commit or a newer order's, an
 * upper bound when an item write stands between (both backends). */
static void version_check_check(const char *u, const char *sku)
{
    store *st = NULL;
    store_config cfg = {.timeout_ms = 5000};
    store_version_info vi;
    store_decrement_result r;
    assert_int_equal(store_open(u, &cfg, &st), 0);
    store_put p = {.stock = 100, .per_user_limit = -1, .sale_starts_at_ms = -1};
    store_item it;
    assert_int_equal(store_put_item(st, sku, &p, RT_NO_DEADLINE, &it, NULL), 0);
    int64_t v0 = it.version;
    assert_int_equal(store_version_check(st, sku, v0, &vi), 0);
    assert_int_equal(vi.version, v0);
    assert_int_equal(vi.first_newer_ms, 0);              /* nothing newer */
    rt_sleep(30);
    int64_t t1 = wall_now();
    assert_int_equal(store_decrement(st, sku, "vc1", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(r.version, v0 + 1);
    assert_int_equal(store_version_check(st, sku, v0, &vi), 0);
    assert_int_equal(vi.version, v0 + 1);
    assert_true(vi.first_newer_ms >= t1 - 5 && vi.first_newer_ms <= wall_now());
    int64_t exact = vi.first_newer_ms;
    rt_sleep(30);
    assert_int_equal(store_decrement(st, sku, "vc2", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(store_version_check(st, sku, v0, &vi), 0);
    assert_int_equal(vi.first_newer_ms, exact);          /* still v0 + 1's order */
    /* An item write first, then an order: the bound is the earlier of the
     * order and the row's last commit, never before the write. */
    int64_t v2 = r.version;
    rt_sleep(30);
    int64_t tw = wall_now();
    p.stock = 200;
    assert_int_equal(store_put_item(st, sku, &p, RT_NO_DEADLINE, &it, NULL), 0);
    rt_sleep(30);
    assert_int_equal(store_decrement(st, sku, "vc3", 1, NULL, RT_NO_DEADLINE, &r), 0);
    assert_int_equal(store_version_check(st, sku, v2, &vi), 0);
    assert_int_equal(vi.version, v2 + 2);
    assert_true(vi.first_newer_ms >= tw - 5);
    assert_int_equal(store_version_check(st, "vc-none", 1, &vi), -ENOENT);
    assert_int_equal(store_version_check(st, "bad sku", 1, &vi), -EINVAL);
    store_close(st);
}

static void test_version_check(void **state)
{
    (void)state;
    char u[300];
    version_check_check(url, "vcheck");
    snprintf(u, sizeof u, "sqlite:%s/vcheck.db", dir);
    version_check_check(u, "vcheck");
}

static void test_pg_sold_out(void **state)
{
    (void)state;
    sold_out_check(url, "soldout");
    sold_out_budget_check(url);
}

static void test_sqlite_sold_out(void **state)
{
    (void)state;
    char u[300];
    snprintf(u, sizeof u, "sqlite:%s/soldout.db", dir);
    sold_out_check(u, "soldout");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pg_open_twice),
        cmocka_unit_test(test_pg_model),
        cmocka_unit_test(test_pg_model_two_stores),
        cmocka_unit_test(test_pg_api),
        cmocka_unit_test(test_pg_unknown_outcome),
        cmocka_unit_test(test_pg_down_up),
        cmocka_unit_test(test_pg_pool_after_timeout),
        cmocka_unit_test(test_pg_lock_wait),
        cmocka_unit_test(test_pg_guard_state),
        cmocka_unit_test(test_pg_limit_one_trip),
        cmocka_unit_test(test_pg_limit_known_kept),
        cmocka_unit_test_teardown(test_pg_replay_durable, no_sync_standby),
        cmocka_unit_test(test_pg_sold_out),
        cmocka_unit_test(test_version_check),
        cmocka_unit_test(test_sqlite_sold_out),
        cmocka_unit_test(test_pg_outbox_claim),
        cmocka_unit_test(test_sqlite_outbox_claim),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
