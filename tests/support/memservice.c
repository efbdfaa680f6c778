/*
 * memservice.c: the in-memory service (memservice.h).
 *
 * One pthread mutex guards everything; it is held only for map operations,
 * never across a runtime call, so holding it on a worker thread is short.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/support/memservice.h"
#include "kit/kit.h"

/* A string-keyed chained hash map of fixed-size values. */
typedef struct mnode {
    struct mnode *next;
    uint64_t hash;
    char *key;
    void *val;
} mnode;

typedef struct mmap {
    mnode **b;
    size_t nb, n;
} mmap;

static uint64_t fnv(const char *s)
{
    return kit_hash(s, strlen(s));
}

static void *map_get(const mmap *m, const char *key)
{
    if (m->nb == 0)
        return NULL;
    uint64_t h = fnv(key);
    for (mnode *n = m->b[h & (m->nb - 1)]; n; n = n->next)
        if (n->hash == h && strcmp(n->key, key) == 0)
            return n->val;
    return NULL;
}

/* Inserts key with a zeroed value of size vsize (key must be absent).
 * Returns the value or NULL on -ENOMEM. */
static void *map_add(mmap *m, const char *key, size_t vsize)
{
    if (m->n + 1 > m->nb) {
        size_t nb = m->nb ? m->nb * 2 : 16;
        mnode **b = calloc(nb, sizeof *b);
        if (b == NULL)
            return NULL;
        for (size_t i = 0; i < m->nb; i++)
            for (mnode *n = m->b[i], *nx; n; n = nx) {
                nx = n->next;
                n->next = b[n->hash & (nb - 1)];
                b[n->hash & (nb - 1)] = n;
            }
        free(m->b);
        m->b = b;
        m->nb = nb;
    }
    mnode *n = calloc(1, sizeof *n);
    void *v = calloc(1, vsize);
    char *k = strdup(key);
    if (!n || !v || !k) {
        free(n);
        free(v);
        free(k);
        return NULL;
    }
    n->hash = fnv(key);
    n->key = k;
    n->val = v;
    n->next = m->b[n->hash & (m->nb - 1)];
    m->b[n->hash & (m->nb - 1)] = n;
    m->n++;
    return v;
}

static void map_free(mmap *m, void (*fv)(void *))
{
    for (size_t i = 0; i < m->nb; i++)
        for (mnode *n = m->b[i], *nx; n; n = nx) {
            nx = n->next;
            if (fv)
                fv(n->val);
            free(n->val);
            free(n->key);
            free(n);
        }
    free(m->b);
    memset(m, 0, sizeof *m);
}

/* One state of an item, for stale reads. */
typedef struct msnap {
    int64_t t_ms, stock, version;
} msnap;

typedef struct mitem {
    http_item it;
    int64_t units_supplied, units_sold;
    int64_t *orders;
    size_t norders, cap;
    mmap users;                  /* user id -> int64_t qty bought */
    msnap *hist;                 /* states in time order, with stale reads */
    size_t nhist, hcap;
} mitem;

enum { LIE_NONE, LIE_OVERSELL, LIE_LOST, LIE_DUP, LIE_LIMIT, LIE_LEDGER };
static const char *const lie_names[] = {"", "oversell", "lost", "dup", "limit", "ledger"};

typedef struct moutcome {
    int rc;
    http_decrement_res res;
} moutcome;

typedef struct mem {
    http_service svc;
    pthread_mutex_t lock;
    mmap items;                  /* sku -> mitem */
    mmap keys;                   /* idempotency key -> moutcome */
    int64_t next_order;
    http_config_values cfg;
    unsigned cfg_set;            /* bit per tunable changed by put_config */
    _Atomic int fail;
    _Atomic int64_t retry_after_s;
    _Atomic int redis, kafka, draining;
    _Atomic int lie;             /* LIE_* */
    _Atomic int64_t unknown_every;
    _Atomic int stale_reads;
    int64_t orders_made;         /* for unknown_every; under lock */
} mem;

static void item_free(void *v)
{
    mitem *m = v;
    free(m->orders);
    free(m->hist);
    map_free(&m->users, NULL);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Keeps the item's state for stale reads; the lock is held. A state that
 * cannot be kept (no memory) only makes later stale reads fresher. */
static void record(mem *m, mitem *it)
{
    if (!atomic_load(&m->stale_reads))
        return;
    if (it->nhist == it->hcap) {
        size_t cap = it->hcap ? it->hcap * 2 : 64;
        msnap *h = realloc(it->hist, cap * sizeof *h);
        if (h == NULL)
            return;
        it->hist = h;
        it->hcap = cap;
    }
    it->hist[it->nhist++] = (msnap){now_ms(), it->it.stock, it->it.version};
}

/* The newest kept state at least delay_ms old, or the oldest kept one;
 * the current state when none is kept. The lock is held. */
static void stale_view(const mitem *it, int64_t delay_ms, http_item *out)
{
    size_t i = it->nhist;
    if (i == 0)
        return;
    int64_t cut = now_ms() - delay_ms;
    while (i > 1 && it->hist[i - 1].t_ms > cut)
        i--;
    out->stock = it->hist[i - 1].stock;
    out->version = it->hist[i - 1].version;
}

static int failing(mem *m)
{
    return atomic_load_explicit(&m->fail, memory_order_relaxed);
}

/* Returns the injected failure, or 0 with the lock held. */
static int enter(mem *m)
{
    int rc = failing(m);
    if (rc == 0)
        pthread_mutex_lock(&m->lock);
    return rc;
}

static int m_get_item(void *ctx, const char *sku, http_item *out,
                      http_tier *tier)
{
    mem *m = ctx;
    int rc = enter(m);
    if (rc)
        return rc;
    mitem *it = map_get(&m->items, sku);
    if (it) {
        *out = it->it;
        if (atomic_load(&m->stale_reads) && m->cfg.invalidation_delay_ms > 0)
            stale_view(it, m->cfg.invalidation_delay_ms, out);
    }
    pthread_mutex_unlock(&m->lock);
    *tier = HTTP_TIER_LOCAL;
    return it ? 0 : HTTP_E_NOT_FOUND;
}

/* Decides one decrement; the lock is held. */
static int do_decrement(mem *m, const http_decrement_req *req,
                        http_decrement_res *out)
{
    mitem *it = map_get(&m->items, req->sku);
    if (it == NULL)
        return HTTP_E_NOT_FOUND;
    if (it->it.sale_starts_at_ms && now_ms() < it->it.sale_starts_at_ms) {
        out->sale_starts_at_ms = it->it.sale_starts_at_ms;
        return HTTP_E_SALE_NOT_STARTED;
    }
    if (it->it.stock == 0)
        return HTTP_E_SOLD_OUT;
    if (it->it.stock < req->qty)
        return HTTP_E_INSUFFICIENT_STOCK;
    int64_t *bought = map_get(&it->users, req->user_id);
    if (it->it.per_user_limit &&
        (bought ? *bought : 0) + req->qty > it->it.per_user_limit)
        return HTTP_E_LIMIT_EXCEEDED;
    if (bought == NULL &&
        (bought = map_add(&it->users, req->user_id, sizeof *bought)) == NULL)
        return -ENOMEM;
    if (it->norders == it->cap) {
        size_t cap = it->cap ? it->cap * 2 : 64;
        int64_t *o = realloc(it->orders, cap * sizeof *o);
        if (o == NULL)
            return -ENOMEM;
        it->orders = o;
        it->cap = cap;
    }
    *bought += req->qty;
    it->it.stock -= req->qty;
    it->it.version++;
    it->units_sold += req->qty;
    out->order_id = ++m->next_order;
    snprintf(out->sku, sizeof out->sku, "%s", req->sku);
    snprintf(out->user_id, sizeof out->user_id, "%s", req->user_id);
    out->qty = req->qty;
    it->orders[it->norders++] = out->order_id;
    out->stock = it->it.stock;
    out->version = it->it.version;
    out->replayed = 0;
    record(m, it);
    return 0;
}

static int m_decrement(void *ctx, const http_decrement_req *req,
                       http_decrement_res *out)
{
    mem *m = ctx;
    int rc = enter(m);
    if (rc) {
        out->retry_after_s = atomic_load(&m->retry_after_s);
        return rc;
    }
    if (req->idempotency_key) {
        moutcome *o = map_get(&m->keys, req->idempotency_key);
        if (o) {
            /* Only the request the key was first sent with replays. */
            if (strcmp(o->res.sku, req->sku) != 0 || strcmp(o->res.user_id, req->user_id) != 0 ||
                o->res.qty != req->qty) {
                rc = HTTP_E_KEY_MISMATCH;
                goto out;
            }
            *out = o->res;
            out->replayed = 1;
            rc = o->rc;
            goto out;
        }
    }
    rc = do_decrement(m, req, out);
    /* Only orders record their key (as the store does). */
    if (req->idempotency_key && rc == 0) {
        moutcome *o = map_add(&m->keys, req->idempotency_key, sizeof *o);
        if (o) {
            o->rc = rc;
            o->res = *out;
        }
    }
    int64_t every = atomic_load(&m->unknown_every);
    if (rc == 0 && every > 0 && ++m->orders_made % every == 0) {
        rc = HTTP_E_OUTCOME_UNKNOWN;
        out->retry_after_s = atomic_load(&m->retry_after_s);
    }
out:
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int m_order_by_key(void *ctx, const char *key, const char *user_id, http_order *out)
{
    mem *m = ctx;
    int rc = enter(m);
    if (rc)
        return rc;
    moutcome *o = map_get(&m->keys, key);
    if (o == NULL || strcmp(o->res.user_id, user_id) != 0) {
        rc = HTTP_E_NOT_FOUND;
    } else {
        out->order_id = o->res.order_id;
        memcpy(out->sku, o->res.sku, sizeof out->sku);
        memcpy(out->user_id, o->res.user_id, sizeof out->user_id);
        out->qty = o->res.qty;
        out->stock = o->res.stock;
        out->version = o->res.version;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int m_put_item(void *ctx, const http_put_item_req *req, http_item *out,
                      int *created)
{
    mem *m = ctx;
    int rc = enter(m);
    if (rc)
        return rc;
    mitem *it = map_get(&m->items, req->sku);
    *created = 0;
    if (it == NULL) {
        if (!req->has_stock) {
            rc = HTTP_E_BAD_REQUEST;
            goto out;
        }
        if ((it = map_add(&m->items, req->sku, sizeof *it)) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        snprintf(it->it.sku, sizeof it->it.sku, "%s", req->sku);
        *created = 1;
    }
    if (req->has_stock) {
        it->units_supplied += req->stock - it->it.stock;
        it->it.stock = req->stock;
    }
    if (req->has_per_user_limit)
        it->it.per_user_limit = req->per_user_limit;
    if (req->has_sale_starts_at_ms)
        it->it.sale_starts_at_ms = req->sale_starts_at_ms;
    it->it.version++;
    record(m, it);
    *out = it->it;
out:
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* Bends a true audit of it the way http_memservice_audit_lie asked. */
static void lie(int how, const mitem *it, http_audit *out)
{
    switch (how) {
    case LIE_OVERSELL:
        out->units_sold++;
        out->stock--;
        break;
    case LIE_LOST:
        if (out->orders > 0)
            out->orders--;
        if (out->n_order_ids > 0)
            memmove(out->order_ids, out->order_ids + 1,
                    --out->n_order_ids * sizeof *out->order_ids);
        break;
    case LIE_DUP:
        out->duplicate_idempotency_keys = 1;
        break;
    case LIE_LIMIT:
        out->max_user_qty = it->it.per_user_limit + 1;
        break;
    case LIE_LEDGER:
        out->stock++;
        break;
    }
}

static int m_audit(void *ctx, const char *sku, int with_orders,
                   http_audit *out)
{
    mem *m = ctx;
    int rc = enter(m);
    if (rc)
        return rc;
    mitem *it = map_get(&m->items, sku);
    if (it == NULL) {
        rc = HTTP_E_NOT_FOUND;
        goto out;
    }
    out->stock = it->it.stock;
    out->version = it->it.version;
    out->units_supplied = it->units_supplied;
    out->units_sold = it->units_sold;
    out->orders = (int64_t)it->norders;
    out->duplicate_idempotency_keys = 0;
    out->max_user_qty = 0;
    for (size_t i = 0; i < it->users.nb; i++)
        for (mnode *n = it->users.b[i]; n; n = n->next)
            if (*(int64_t *)n->val > out->max_user_qty)
                out->max_user_qty = *(int64_t *)n->val;
    if (with_orders && it->norders) {
        out->order_ids = malloc(it->norders * sizeof *out->order_ids);
        if (out->order_ids == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        memcpy(out->order_ids, it->orders, it->norders * sizeof *out->order_ids);
        out->n_order_ids = it->norders;
    }
    lie(atomic_load(&m->lie), it, out);
out:
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int m_get_config(void *ctx, http_config_values *out)
{
    mem *m = ctx;
    int rc = enter(m);
    if (rc)
        return rc;
    *out = m->cfg;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int m_put_config(void *ctx, const http_config_update *upd,
                        http_config_values *out)
{
    mem *m = ctx;
    int rc = enter(m);
    if (rc)
        return rc;
    if (upd->has_invalidation_delay_ms) {
        m->cfg.invalidation_delay_ms = upd->invalidation_delay_ms;
        m->cfg_set |= 1;
    }
    if (upd->has_local_ttl_ms) {
        m->cfg.local_ttl_ms = upd->local_ttl_ms;
        m->cfg_set |= 2;
    }
    if (upd->log_level) {
        snprintf(m->cfg.log_level, sizeof m->cfg.log_level, "%s",
                 upd->log_level);
        m->cfg_set |= 4;
    }
    *out = m->cfg;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int m_metrics(void *ctx, kit_buf *out)
{
    mem *m = ctx;
    pthread_mutex_lock(&m->lock);
    size_t n = m->items.n;
    int64_t orders = m->next_order;
    pthread_mutex_unlock(&m->lock);
    return kit_buf_printf(out,
        "# HELP memservice_items Items in the in-memory service.\n"
        "# TYPE memservice_items gauge\nmemservice_items %zu\n"
        "# HELP memservice_orders_total Orders taken.\n"
        "# TYPE memservice_orders_total counter\nmemservice_orders_total %lld\n",
        n, (long long)orders);
}

static int m_ready(void *ctx, http_readiness *out)
{
    mem *m = ctx;
    out->store = failing(m) ? HTTP_DEP_DOWN : HTTP_DEP_UP;
    out->redis = (http_dep_state)atomic_load(&m->redis);
    out->kafka = (http_dep_state)atomic_load(&m->kafka);
    out->draining = atomic_load(&m->draining);
    return 0;
}

/* The tunables in the shape of the service's settings list, with the
 * source "default" until put_config changed them ("set"). */
static int m_config_settings(void *ctx, kit_buf *out)
{
    mem *m = ctx;
    int rc = enter(m);
    if (rc)
        return rc;
    http_config_values v = m->cfg;
    unsigned set = m->cfg_set;
    pthread_mutex_unlock(&m->lock);
    return kit_buf_printf(out,
        "{\"kafka.invalidation_delay_ms\":{\"value\":%lld,\"source\":\"%s\"},"
        "\"cache.local_ttl_ms\":{\"value\":%lld,\"source\":\"%s\"},"
        "\"log.level\":{\"value\":\"%s\",\"source\":\"%s\"}}",
        (long long)v.invalidation_delay_ms, set & 1 ? "set" : "default",
        (long long)v.local_ttl_ms, set & 2 ? "set" : "default",
        v.log_level, set & 4 ? "set" : "default");
}

http_service *http_memservice_new(void)
{
    mem *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    m->cfg.invalidation_delay_ms = 500;
    m->cfg.local_ttl_ms = 2000;
    strcpy(m->cfg.log_level, "info");
    atomic_store(&m->redis, HTTP_DEP_NONE);
    atomic_store(&m->kafka, HTTP_DEP_NONE);
    m->svc = (http_service){
        .ctx = m,
        .get_item = m_get_item,
        .decrement = m_decrement,
        .put_item = m_put_item,
        .audit = m_audit,
        .order_by_key = m_order_by_key,
        .get_config = m_get_config,
        .put_config = m_put_config,
        .metrics = m_metrics,
        .ready = m_ready,
        .config_settings = m_config_settings,
    };
    return &m->svc;
}

void http_memservice_free(http_service *svc)
{
    if (svc == NULL)
        return;
    mem *m = svc->ctx;
    map_free(&m->items, item_free);
    map_free(&m->keys, NULL);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

int http_memservice_put(http_service *svc, const char *sku, int64_t stock,
                        int64_t per_user_limit, int64_t sale_starts_at_ms)
{
    http_put_item_req req = {
        .sku = sku, .has_stock = 1, .stock = stock,
        .has_per_user_limit = 1, .per_user_limit = per_user_limit,
        .has_sale_starts_at_ms = 1, .sale_starts_at_ms = sale_starts_at_ms,
    };
    http_item it;
    int created;
    if (stock < 0 || per_user_limit < 0 || sale_starts_at_ms < 0)
        return -EINVAL;
    return m_put_item(svc->ctx, &req, &it, &created);
}

void http_memservice_fail(http_service *svc, int err)
{
    mem *m = svc->ctx;
    atomic_store(&m->fail, err);
}

void http_memservice_retry_after(http_service *svc, int64_t retry_after_s)
{
    mem *m = svc->ctx;
    atomic_store(&m->retry_after_s, retry_after_s);
}

void http_memservice_set_ready(http_service *svc, http_dep_state redis,
                               http_dep_state kafka, int draining)
{
    mem *m = svc->ctx;
    atomic_store(&m->redis, (int)redis);
    atomic_store(&m->kafka, (int)kafka);
    atomic_store(&m->draining, draining);
}

int http_memservice_audit_lie(http_service *svc, const char *mode)
{
    mem *m = svc->ctx;
    for (size_t i = 0; i < sizeof lie_names / sizeof lie_names[0]; i++)
        if (strcmp(mode ? mode : "", lie_names[i]) == 0) {
            atomic_store(&m->lie, (int)i);
            return 0;
        }
    return -EINVAL;
}

void http_memservice_unknown_every(http_service *svc, int64_t n)
{
    mem *m = svc->ctx;
    atomic_store(&m->unknown_every, n);
}

void http_memservice_stale_reads(http_service *svc, int on)
{
    mem *m = svc->ctx;
    atomic_store(&m->stale_reads, on);
}
