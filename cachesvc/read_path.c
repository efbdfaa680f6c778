/*
 * read_path.c: GET /v1/items/{sku} through the three tiers.
 *
 * local hit -> answer. Miss -> one fill per item per instance: the first
 * reader (the leader) registers a flight for the sku, the others wait on it
 * and share its answer. The leader takes a fill lease from the local cache,
 * reads Redis (unless the breaker says Redis is down), and installs the copy
 * locally if it is not below the local version floor; otherwise, or on a
 * miss, it reads the database, fills Redis with the version-guarded script
 * and fills the local cache. The answer says which tier it came from.
 *
 * An unknown sku is cached too (negative caching): the database's "no such
 * item" becomes an absent entry at version 0 in Redis (payload "-") and in
 * the local cache, for cache.negative_ttl_ms, so a bot asking for skus that
 * do not exist reaches the database once per sku and interval, not once
 * per request. Creating the item commits version 1 or more, which every
 * version guard prefers, and its commit evicts the absent entry like any
 * other copy (the writer at once, the other instances by the broadcast,
 * Redis by the writer's fill and the delayed delete).
 *
 * A write that commits while a flight is in the air unlinks the flight
 * (svc__flights_invalidate): readers that arrive after the commit start a
 * fresh fill instead of sharing a value read before it, which keeps
 * read-your-writes on this instance.
 */
#include "cachesvc/log.h"
#include "cachesvc/metrics.h"
#include "cachesvc/service.h"
#include "kit/kit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLIGHT_STRIPES 64

struct flight {
    struct flight *next;
    char sku[HTTP_SKU_MAX + 1];
    int refs;          /* the leader and every waiter */
    int done;
    int linked;        /* still findable by new readers */
    int rc;
    svc_entry e;
    http_tier tier;
};

struct stripe {
    rt_mutex *mu;
    rt_cond *cv;
    struct flight *head;
} __attribute__((aligned(64)));

struct svc_flights {
    struct stripe s[FLIGHT_STRIPES];
};

static uint64_t hash_sku(const char *s)
{
    return kit_hash(s, strlen(s));
}

int svc__flights_new(struct svc_flights **out)
{
    struct svc_flights *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -ENOMEM;
    for (int i = 0; i < FLIGHT_STRIPES; i++) {
        f->s[i].mu = rt_mutex_new();
        f->s[i].cv = rt_cond_new();
        if (f->s[i].mu == NULL || f->s[i].cv == NULL) {
            svc__flights_free(f);
            return -ENOMEM;
        }
    }
    *out = f;
    return 0;
}

void svc__flights_free(struct svc_flights *f)
{
    if (f == NULL)
        return;
    for (int i = 0; i < FLIGHT_STRIPES; i++) {
        if (f->s[i].mu)
            rt_mutex_free(f->s[i].mu);
        if (f->s[i].cv)
            rt_cond_free(f->s[i].cv);
    }
    free(f);
}

static struct stripe *stripe_of(svc *s, const char *sku)
{
    return &s->flights->s[hash_sku(sku) & (FLIGHT_STRIPES - 1)];
}

/* Unlinks f from its stripe; the stripe's lock is held. */
static void do_unlink(struct stripe *st, struct flight *f)
{
    for (struct flight **p = &st->head; *p; p = &(*p)->next) {
        if (*p == f) {
            *p = f->next;
            f->linked = 0;
            return;
        }
    }
}

void svc__flights_invalidate(svc *s, const char *sku)
{
    struct stripe *st = stripe_of(s, sku);
    rt_mutex_lock(st->mu);
    for (struct flight *f = st->head; f; f = f->next) {
        if (strcmp(f->sku, sku) == 0) {
            do_unlink(st, f);
            break;
        }
    }
    rt_mutex_unlock(st->mu);
}

/* ------------------------------------------------------------------------ */
/* The Redis tier's payload: "<stock>|<per_user_limit>|<sale_starts_at_ms>"  */
/* after the client's "<version>|"; "-" for an absent entry.                 */

static int payload_format(char *buf, size_t cap, const svc_entry *e)
{
    if (e->absent)
        return snprintf(buf, cap, "-");
    int n = snprintf(buf, cap, "%" PRId64 "|%" PRId64 "|%" PRId64, e->stock,
                     e->per_user_limit, e->sale_starts_at_ms);
    return n > 0 && (size_t)n < cap ? n : -ENOSPC;
}

static int payload_parse(const char *buf, size_t len, svc_entry *e)
{
    char tmp[96];
    if (len == 1 && buf[0] == '-') {
        memset(e, 0, sizeof *e);
        e->absent = 1;
        return 0;
    }
    if (len == 0 || len >= sizeof tmp)
        return -EBADMSG;
    memcpy(tmp, buf, len);
    tmp[len] = '\0';
    char *p = tmp, *end;
    int64_t v[3];
    for (int i = 0; i < 3; i++) {
        errno = 0;
        v[i] = strtoll(p, &end, 10);
        if (errno != 0 || end == p || v[i] < 0)
            return -EBADMSG;
        if (i < 2 && *end != '|')
            return -EBADMSG;
        p = end + 1;
    }
    if (*end != '\0')
        return -EBADMSG;
    e->stock = v[0];
    e->per_user_limit = v[1];
    e->sale_starts_at_ms = v[2];
    e->absent = 0;
    return 0;
}

/* Reads sku from Redis. Returns 1 with *e, 0 on a miss (or a value that does
 * not parse: the database repairs it), or a negative code when Redis could
 * not be asked. A tombstone is a miss that raises the local floor to its
 * version: no copy older than the delete it marks is installed here. */
static int redis_get(svc *s, const char *sku, svc_entry *e)
{
    char key[HTTP_SKU_MAX + 16], buf[96];
    int kl = rc_item_key(key, sizeof key, sku, strlen(sku));
    if (kl < 0)
        return kl;
    uint64_t ver = 0;
    size_t len = 0;
    int64_t t0 = rt_now_ns();
    int r = rc_get_versioned(s->rc, key, (size_t)kl, &ver, buf, sizeof buf, &len,
                             rt_deadline_ms(s->cfg.redis_timeout_ms));
    svc_hist_observe(SVC_H_REDIS_S, (uint64_t)(rt_now_ns() - t0));
    svc__breaker_result(&s->breaker, !svc__redis_failed(r));
    if (r == 2) {
        if (ver > 0 && ver <= INT64_MAX)
            svc__local_evict(s, sku, (int64_t)ver);
        svc_metric_inc(SVC_C_REDIS_TOMBSTONE);
        return 0;
    }
    if (r == 1 && payload_parse(buf, len, e) == 0 && ver <= INT64_MAX &&
        (!e->absent || ver == 0)) {
        e->version = (int64_t)ver;
        return 1;
    }
    if (r == 1 || r == 0 || r == RC_ENOSPC || r == RC_EBADVALUE)
        return 0;
    SVC_DEBUG(NULL, "redis get failed", "sku=%s err=\"%s\"", sku, rc_strerror(r));
    return r;
}

/* Fills Redis with e unless it holds a newer version. Failures only count
 * against the breaker: the database answered the read already. */
void svc__redis_fill(svc *s, const char *sku, const svc_entry *e)
{
    char key[HTTP_SKU_MAX + 16], payload[96];
    if (s->rc == NULL || (e->absent && s->cfg.negative_ttl_ms == 0))
        return;
    int kl = rc_item_key(key, sizeof key, sku, strlen(sku));
    int pl = payload_format(payload, sizeof payload, e);
    if (kl < 0 || pl < 0 || !svc__breaker_allow(&s->breaker))
        return;
    int64_t t0 = rt_now_ns();
    int r = rc_fill_if_newer(s->rc, key, (size_t)kl, (uint64_t)e->version, payload,
                             (size_t)pl, e->absent ? s->cfg.negative_ttl_ms : s->cfg.redis_ttl_ms,
                             rt_deadline_ms(s->cfg.redis_timeout_ms));
    svc_hist_observe(SVC_H_REDIS_S, (uint64_t)(rt_now_ns() - t0));
    svc__breaker_result(&s->breaker, !svc__redis_failed(r));
}

typedef struct refresh_arg {
    svc *s;
    svc_entry e;
    char sku[HTTP_SKU_MAX + 1];
} refresh_arg;

static void refresh_main(void *arg)
{
    refresh_arg *a = arg;
    svc *s = a->s;
    svc__redis_fill(s, a->sku, &a->e);
    free(a);
    atomic_fetch_sub_explicit(&s->refreshes, 1, memory_order_acq_rel);
}

void svc__redis_refresh(svc *s, const char *sku, const svc_entry *e)
{
    if (!s->bcast_update || s->rc == NULL || atomic_load(&s->draining))
        return;
    size_t n = strlen(sku);
    refresh_arg *a = malloc(sizeof *a);
    if (a == NULL || n >= sizeof a->sku) {
        free(a);
        return;
    }
    a->s = s;
    a->e = *e;
    memcpy(a->sku, sku, n + 1);
    atomic_fetch_add_explicit(&s->refreshes, 1, memory_order_acq_rel);
    if (rt_spawn(NULL, refresh_main, a) < 0) {
        atomic_fetch_sub_explicit(&s->refreshes, 1, memory_order_acq_rel);
        free(a);
    }
}

/* The leader's fill: Redis, then the database. An absent entry, found or
 * made, answers HTTP_E_NOT_FOUND with *tier set. After a database read
 * *redis_fill is set: the caller writes *e to Redis once the readers that
 * wait for this fill have their answer (a slow or paused Redis node then
 * delays only the leader, not every reader of a hot item). */
static int fill(svc *s, const char *sku, svc_entry *e, http_tier *tier, int *redis_fill)
{
    *redis_fill = 0;
    lc_lease lease;
    int held = svc__local_lease(s, sku, &lease);
    if (s->rc != NULL && svc__breaker_allow(&s->breaker)) {
        if (redis_get(s, sku, e) == 1) {
            int below = 0;
            if (svc__local_fill(s, sku, &lease, held, e, &below) == 1 || !below) {
                /* Stored, or refused with nothing newer known (a lease
                 * taken over): Redis' copy is current. */
                *tier = HTTP_TIER_REDIS;
                return e->absent ? HTTP_E_NOT_FOUND : 0;
            }
            /* A newer version was committed than Redis holds: the
             * invalidator has not deleted it yet. Read past it. */
            svc_metric_inc(SVC_C_REDIS_STALE);
            held = svc__local_lease(s, sku, &lease);
        }
    }
    store_item it;
    int r = store_get_item(s->st, sku, &it);
    *tier = HTTP_TIER_DB;
    if (r == 0 || r == -ENOENT || r == -EIO || r == -ETIMEDOUT)
        svc__store_seen(s, r == 0 || r == -ENOENT);
    if (r == -ENOENT) {
        memset(e, 0, sizeof *e);
        e->absent = 1;
        svc__local_fill(s, sku, &lease, held, e, NULL);
        *redis_fill = 1;
        return HTTP_E_NOT_FOUND;
    }
    if (r < 0) {
        svc__local_release(s, &lease, held);
        SVC_WARN(NULL, "store read failed", "sku=%s err=\"%s\"", sku, store_strerror(r));
        return svc__store_err(r);
    }
    e->stock = it.stock;
    e->version = it.version;
    e->per_user_limit = it.per_user_limit;
    e->sale_starts_at_ms = it.sale_starts_at_ms;
    e->absent = 0;
    svc__local_fill(s, sku, &lease, held, e, NULL);
    *redis_fill = 1;
    return 0;
}

/* fill() for a reader that nobody waits for: Redis filled at once. */
static int fill_alone(svc *s, const char *sku, svc_entry *e, http_tier *tier)
{
    int redis_fill;
    int r = fill(s, sku, e, tier, &redis_fill);
    if (redis_fill)
        svc__redis_fill(s, sku, e);
    return r;
}

int svc__read_item(svc *s, const char *sku, svc_entry *e, http_tier *tier)
{
    struct stripe *st = stripe_of(s, sku);
    struct flight *f;
    int r;

    rt_mutex_lock(st->mu);
    for (f = st->head; f; f = f->next)
        if (strcmp(f->sku, sku) == 0)
            break;
    if (f != NULL) {
        /* Someone is filling this item: wait for its answer. */
        int64_t deadline = rt_deadline_ms(s->cfg.fill_wait_ms);
        f->refs++;
        while (!f->done)
            if (rt_cond_wait(st->cv, st->mu, deadline) == -ETIMEDOUT)
                break;
        int done = f->done;
        if (done) {
            r = f->rc;
            *e = f->e;
            *tier = f->tier;
        }
        if (--f->refs == 0)
            free(f);
        rt_mutex_unlock(st->mu);
        if (done) {
            svc_metric_inc(SVC_C_FILL_WAIT);
            return r;
        }
        /* The leader is stuck (a slow database): fill on our own. */
        svc_metric_inc(SVC_C_FILL_WAIT_TIMEOUT);
        return fill_alone(s, sku, e, tier);
    }
    f = calloc(1, sizeof *f);
    if (f == NULL) {
        rt_mutex_unlock(st->mu);
        return fill_alone(s, sku, e, tier);
    }
    snprintf(f->sku, sizeof f->sku, "%s", sku);
    f->refs = 1;
    f->linked = 1;
    f->next = st->head;
    st->head = f;
    rt_mutex_unlock(st->mu);

    int redis_fill;
    r = fill(s, sku, e, tier, &redis_fill);

    rt_mutex_lock(st->mu);
    f->done = 1;
    f->rc = r;
    f->e = *e;
    f->tier = *tier;
    if (f->linked)
        do_unlink(st, f);
    rt_cond_broadcast(st->cv);
    if (--f->refs == 0)
        free(f);
    rt_mutex_unlock(st->mu);
    if (redis_fill)
        svc__redis_fill(s, sku, e);   /* the waiters have their answer */
    return r;
}

static void to_http(const char *sku, const svc_entry *e, http_item *out)
{
    size_t n = strnlen(sku, sizeof out->sku - 1);   /* the hot path: no printf */
    memcpy(out->sku, sku, n);
    out->sku[n] = '\0';
    out->stock = e->stock;
    out->version = e->version;
    out->per_user_limit = e->per_user_limit;
    out->sale_starts_at_ms = e->sale_starts_at_ms;
}

int svc_get_item(void *ctx, const char *sku, http_item *out, http_tier *tier)
{
    svc *s = ctx;
    svc_entry e;
    if (svc__local_get(s, sku, &e)) {
        *tier = HTTP_TIER_LOCAL;
        if (e.absent) {
            svc_metric_inc(SVC_C_READ_ABSENT_LOCAL);
            return HTTP_E_NOT_FOUND;
        }
        to_http(sku, &e, out);
        svc_metric_inc(SVC_C_READ_LOCAL);
        svc__monitor_note(s, sku, e.version, HTTP_TIER_LOCAL);
        return 0;
    }
    int64_t t0 = rt_now_ns();
    int r = svc__read_item(s, sku, &e, tier);
    int64_t dt = rt_now_ns() - t0;   /* local hits never park: not timed */
    svc__slow_check(s, "read", sku, dt, r);
    if (r == HTTP_E_NOT_FOUND) {
        svc_metric_inc(*tier == HTTP_TIER_REDIS ? SVC_C_READ_ABSENT_REDIS
                                                : SVC_C_READ_ABSENT_DB);
        return r;
    }
    if (r < 0) {
        svc_metric_inc(SVC_C_READ_ERROR);
        return r;
    }
    to_http(sku, &e, out);
    svc__monitor_note(s, sku, e.version, *tier);
    if (*tier == HTTP_TIER_REDIS) {
        svc_metric_inc(SVC_C_READ_REDIS);
        svc_hist_observe(SVC_H_READ_REDIS_S, (uint64_t)dt);
    } else {
        svc_metric_inc(SVC_C_READ_DB);
        svc_hist_observe(SVC_H_READ_DB_S, (uint64_t)dt);
    }
    return 0;
}
