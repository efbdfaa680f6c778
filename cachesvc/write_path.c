/*
 * write_path.c: decrements and item writes, database first.
 *
 * 1. A decrement of an item the local cache knows is sold out (and on
 *    sale) is answered without the database: from the local entry alone
 *    when neither a key nor a per-user limit can change the answer, else
 *    from the store's in-memory copy of the item's orders at that version
 *    (store_sold_out: the key's original order is replayed, a buyer at the
 *    limit gets limit_exceeded, anyone else sold_out).
 * 2. Everything else goes to the item's batcher in the store, which decides
 *    a batch in one transaction; a full queue answers 429 Retry-After.
 * 3. After each commit (svc__on_commit, called by the store before any
 *    request of the batch is answered) the local entry is replaced by the
 *    committed row (with broadcast_mode update, which also refreshes Redis
 *    with it) or evicted with the committed version as its floor, fills in
 *    flight are detached, and the invalidator's relay is woken so the other
 *    instances and Redis hear of it.
 */
#include "cachesvc/log.h"
#include "cachesvc/metrics.h"
#include "cachesvc/service.h"
#include "kit/kit.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* Called by the store after COMMIT of a batch that changed sku. */
void svc__on_commit(void *ctx, const char *sku, const store_committed *row)
{
    svc *s = ctx;
    int64_t version = row->version;
    if (s->bcast_update) {
        /* The batch hands over the whole committed row: install it under
         * the version guard (a newer copy, installed from another
         * instance's event, is kept) and refresh Redis with it, so neither
         * tier goes cold while the item sells. */
        svc_entry e = {.stock = row->stock,
                       .version = version,
                       .per_user_limit = row->per_user_limit,
                       .sale_starts_at_ms = row->sale_starts_at_ms};
        svc__local_install(s, sku, &e);
        svc__redis_refresh(s, sku, &e);
    } else {
        /* The eviction protocol as it was: when the cached copy is the
         * committed state just before this batch and no item write of this
         * instance is in flight, the batch changed only the stock: install
         * the committed row itself. Otherwise evict down to the floor. */
        svc_entry old;
        int had = svc__local_get(s, sku, &old);
        if (had && !old.absent && old.version == version - 1 &&
            atomic_load_explicit(&s->puts_inflight, memory_order_acquire) == 0) {
            svc_entry e = old;
            e.stock = row->stock;
            e.version = version;
            svc__local_install(s, sku, &e);
        } else {
            svc__local_evict(s, sku, version);
        }
    }
    svc__flights_invalidate(s, sku);
    if (s->iv != NULL)
        inv_notify(s->iv);
}

/* The order of an OK or REPLAYED result, as the answer describes it. */
static void order_to_http(const store_decrement_result *r, http_decrement_res *out)
{
    out->order_id = r->order_id;
    memcpy(out->sku, r->sku, sizeof out->sku);
    memcpy(out->user_id, r->user_id, sizeof out->user_id);
    out->qty = r->qty;
    out->stock = r->stock;
    out->version = r->version;
    out->replayed = r->outcome == STORE_REPLAYED;
}

/* Answers from memory when the local cache shows the item sold out (and
 * on sale) at some version. Without a key and without a per-user limit
 * that could decide first, the local entry is enough: sold_out, or
 * limit_exceeded when qty alone passes the limit. Otherwise the store's
 * in-memory copy of the item's orders at that version decides (replay of
 * the key, the buyer's total against the limit, sold_out); see
 * cachesvc/store/soldout.c for why that equals the database's answer.
 * Returns 0 when it cannot tell, 1 with *out filled (a replay), or the api
 * error. */
static int fast_answer(svc *s, const http_decrement_req *req, http_decrement_res *out)
{
    svc_entry e;
    if (!svc__local_get(s, req->sku, &e) || e.absent || e.stock != 0)
        return 0;
    if (e.sale_starts_at_ms > 0 && kit_wall_ms() < e.sale_starts_at_ms)
        return 0;   /* the store answers sale_not_started */
    if (req->idempotency_key == NULL &&
        (e.per_user_limit == 0 || req->qty > e.per_user_limit)) {
        svc_metric_inc(SVC_C_DECR_FAST_REJECT);
        if (e.per_user_limit > 0) {
            svc_metric_inc(SVC_C_DECR_LIMIT);
            return HTTP_E_LIMIT_EXCEEDED;
        }
        svc_metric_inc(SVC_C_DECR_SOLD_OUT);
        return HTTP_E_SOLD_OUT;
    }
    store_decrement_result res;
    int r = store_sold_out(s->st, req->sku, e.version, req->user_id, req->qty,
                           req->idempotency_key, &res);
    /* The store saw a newer committed version (the set's read, or a
     * replay's order): this copy is stale, its broadcast lost or late.
     * Drop it so that no answer from memory rests on it any more. */
    if ((r == 0 || (r == 1 && res.outcome == STORE_REPLAYED)) && res.version > e.version) {
        svc__local_evict(s, req->sku, res.version);
        svc_metric_inc(SVC_C_LOCAL_STALE_EVICT);
    }
    if (r != 1)
        return 0;
    if (res.outcome == STORE_REPLAYED) {
        order_to_http(&res, out);
        svc_metric_inc(SVC_C_DECR_REPLAYED);
        return 1;
    }
    if (res.outcome == STORE_KEY_MISMATCH) {
        svc_metric_inc(SVC_C_DECR_KEY_MISMATCH);
        return HTTP_E_KEY_MISMATCH;
    }
    svc_metric_inc(SVC_C_DECR_FAST_REJECT);
    switch (res.outcome) {
    case STORE_LIMIT_EXCEEDED:
        svc_metric_inc(SVC_C_DECR_LIMIT);
        return HTTP_E_LIMIT_EXCEEDED;
    default:
        svc_metric_inc(SVC_C_DECR_SOLD_OUT);
        return HTTP_E_SOLD_OUT;
    }
}

/* A refusal the database decided at committed version `version`: a local
 * copy older than that is stale (its broadcast was lost or is late, or it
 * came from an older Redis copy), so it is evicted with the version as
 * floor, which is raised even when nothing is cached: neither tier can
 * bring an older copy back. */
static void refused_at(svc *s, const char *sku, int64_t version)
{
    svc_entry e;
    int had = svc__local_get(s, sku, &e);
    if (version > 0 && (!had || e.version < version)) {
        svc__local_evict(s, sku, version);
        if (had)
            svc_metric_inc(SVC_C_LOCAL_STALE_EVICT);
    }
}

/* When the sale of sku starts, for the 425 answer (0 = unknown), on the
 * rare path where the store refused with sale_not_started (its result
 * carries no item fields). The read path answers it, from the local entry
 * in the common case. A copy that shows the sale already started
 * contradicts the database's decision (it is stale): then the database
 * decides, read straight, and the stale copy is dropped. */
static int64_t sale_start_of(svc *s, const char *sku)
{
    svc_entry e;
    http_tier tier;
    int64_t now = kit_wall_ms();
    if (svc__read_item(s, sku, &e, &tier) == 0 && !e.absent && e.sale_starts_at_ms > now)
        return e.sale_starts_at_ms;
    store_item it;
    if (store_get_item(s->st, sku, &it) != 0 || it.sale_starts_at_ms <= now)
        return 0;
    refused_at(s, sku, it.version);
    return it.sale_starts_at_ms;
}

int svc_decrement(void *ctx, const http_decrement_req *req, http_decrement_res *out)
{
    svc *s = ctx;
    int64_t t0 = rt_now_ns();
    int r = fast_answer(s, req, out);
    if (r != 0)
        return r > 0 ? 0 : r;

    store_decrement_result res;
    r = store_decrement(s->st, req->sku, req->user_id, req->qty, req->idempotency_key,
                        rt_deadline_ms(s->cfg.store_timeout_ms), &res);
    int64_t dt = rt_now_ns() - t0;
    svc_hist_observe(SVC_H_DECR_S, (uint64_t)dt);
    svc__slow_check(s, "decrement", req->sku, dt, r < 0 ? r : (int)res.outcome);
    if (r < 0) {
        int code = r == -EINVAL ? HTTP_E_BAD_REQUEST : svc__store_err(r);
        svc_metric_inc(code == HTTP_E_BAD_REQUEST       ? SVC_C_DECR_BAD_REQUEST
                       : code == HTTP_E_OVERLOADED      ? SVC_C_DECR_OVERLOADED
                       : code == HTTP_E_OUTCOME_UNKNOWN ? SVC_C_DECR_UNKNOWN
                                                        : SVC_C_DECR_UNAVAILABLE);
        if (code != HTTP_E_BAD_REQUEST)
            SVC_WARN(NULL, "decrement failed", "sku=%s err=\"%s\"", req->sku, store_strerror(r));
        return code;
    }
    switch (res.outcome) {
    case STORE_OK:
    case STORE_REPLAYED:
        order_to_http(&res, out);
        svc_metric_inc(res.outcome == STORE_OK ? SVC_C_DECR_OK : SVC_C_DECR_REPLAYED);
        return 0;
    case STORE_KEY_MISMATCH:
        svc_metric_inc(SVC_C_DECR_KEY_MISMATCH);
        return HTTP_E_KEY_MISMATCH;
    case STORE_NOT_FOUND:
        svc_metric_inc(SVC_C_DECR_NOT_FOUND);
        return HTTP_E_NOT_FOUND;
    case STORE_SOLD_OUT: {
        svc_metric_inc(SVC_C_DECR_SOLD_OUT);
        /* Make sure the local tier learns the item is sold out (and drops
         * an older copy), so the next decrements are refused without the
         * database. */
        svc_entry e;
        http_tier tier;
        refused_at(s, req->sku, res.version);
        if (!svc__local_get(s, req->sku, &e) || e.absent)
            svc__read_item(s, req->sku, &e, &tier);
        return HTTP_E_SOLD_OUT;
    }
    case STORE_INSUFFICIENT_STOCK:
        svc_metric_inc(SVC_C_DECR_INSUFFICIENT);
        refused_at(s, req->sku, res.version);
        return HTTP_E_INSUFFICIENT_STOCK;
    case STORE_LIMIT_EXCEEDED:
        svc_metric_inc(SVC_C_DECR_LIMIT);
        refused_at(s, req->sku, res.version);
        return HTTP_E_LIMIT_EXCEEDED;
    case STORE_SALE_NOT_STARTED:
        svc_metric_inc(SVC_C_DECR_NOT_STARTED);
        out->sale_starts_at_ms = sale_start_of(s, req->sku);
        return HTTP_E_SALE_NOT_STARTED;
    case STORE_OVERLOADED:
        svc_metric_inc(SVC_C_DECR_OVERLOADED);
        out->retry_after_s = 1;
        return HTTP_E_OVERLOADED;
    case STORE_OUTCOME_UNKNOWN:
        svc_metric_inc(SVC_C_DECR_UNKNOWN);
        SVC_WARN(NULL, "decrement outcome unknown", "sku=%s", req->sku);
        return HTTP_E_OUTCOME_UNKNOWN;
    case STORE_UNAVAILABLE:
    default:
        svc_metric_inc(SVC_C_DECR_UNAVAILABLE);
        SVC_WARN(NULL, "decrement failed: database unavailable", "sku=%s", req->sku);
        return HTTP_E_UNAVAILABLE;
    }
}

int svc_put_item(void *ctx, const http_put_item_req *req, http_item *out, int *created)
{
    svc *s = ctx;
    store_put p = {
        .stock = req->has_stock ? req->stock : -1,
        .per_user_limit = req->has_per_user_limit ? req->per_user_limit : -1,
        .sale_starts_at_ms = req->has_sale_starts_at_ms ? req->sale_starts_at_ms : -1,
    };
    store_item it;
    int cr = 0;
    int64_t t0 = rt_now_ns();
    atomic_fetch_add_explicit(&s->puts_inflight, 1, memory_order_acq_rel);
    int r = store_put_item(s->st, req->sku, &p, rt_deadline_ms(s->cfg.store_timeout_ms),
                           &it, &cr);
    atomic_fetch_sub_explicit(&s->puts_inflight, 1, memory_order_acq_rel);
    svc__slow_check(s, "put_item", req->sku, rt_now_ns() - t0, r);
    if (r < 0) {
        if (r != -EINVAL)
            SVC_WARN(NULL, "item write failed", "sku=%s err=\"%s\"", req->sku, store_strerror(r));
        return svc__store_err(r);
    }
    svc_metric_inc(SVC_C_PUT_ITEM);
    /* The writer holds the exact committed row: install it (the commit hook
     * already evicted the old copy down to this version). */
    svc_entry e = {.stock = it.stock, .version = it.version, .per_user_limit = it.per_user_limit,
                   .sale_starts_at_ms = it.sale_starts_at_ms};
    svc__local_fill(s, req->sku, NULL, 0, &e, NULL);
    /* A new item replaces the absent entry Redis may hold for its sku at
     * once (version-guarded), rather than after the delayed delete, so
     * instances that miss locally do not keep answering 404 (with update
     * events the commit hook refreshes Redis too, on its own coroutine). */
    if (cr)
        svc__redis_fill(s, req->sku, &e);
    snprintf(out->sku, sizeof out->sku, "%s", it.sku);
    out->stock = it.stock;
    out->version = it.version;
    out->per_user_limit = it.per_user_limit;
    out->sale_starts_at_ms = it.sale_starts_at_ms;
    if (created != NULL)
        *created = cr;
    return 0;
}
