/*
 * fs_result.c: what one run measured: outcomes, latency histograms, the
 * per-second timeline and the derived figures.
 */
#include "fs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *label;
    int ok;
} outcomes[FS_O_COUNT] = {
#define FS_X(name, label, ok) {label, ok},
    FS_OUTCOMES(FS_X)
#undef FS_X
};

const char *fs_outcome_label(fs_outcome o)
{
    return o < FS_O_COUNT ? outcomes[o].label : "?";
}

int fs_outcome_ok(fs_outcome o)
{
    return o < FS_O_COUNT && outcomes[o].ok;
}

fs_outcome fs_outcome_classify(int status, const char *error_code, int replayed)
{
    const char *e = error_code ? error_code : "";
    switch (status) {
    case 200:
    case 201:
        return replayed ? FS_O_REPLAYED : FS_O_OK;
    case 400:
        return FS_O_BAD_REQUEST;
    case 404:
        return FS_O_NOT_FOUND;
    case 409:
        if (strcmp(e, "sold_out") == 0)
            return FS_O_SOLD_OUT;
        if (strcmp(e, "insufficient_stock") == 0)
            return FS_O_INSUFFICIENT;
        if (strcmp(e, "limit_exceeded") == 0)
            return FS_O_LIMIT;
        return FS_O_OTHER_4XX;
    case 425:
        return FS_O_NOT_STARTED;
    case 429:
        return FS_O_OVERLOADED;
    case 503:
        if (strcmp(e, "outcome_unknown") == 0)
            return FS_O_UNKNOWN;
        return FS_O_UNAVAILABLE;
    default:
        if (status >= 400 && status < 500)
            return FS_O_OTHER_4XX;
        if (status >= 500 && status < 600)
            return FS_O_OTHER_5XX;
        return FS_O_BAD_RESPONSE;
    }
}

int fs_result_init(fs_result *r, const fs_opts *o, size_t max_seconds)
{
    int rc;
    memset(r, 0, sizeof(*r));
    r->delay_ms = -1;
    r->last_sale_ns = -1;
    r->last_sent_ns = -1;
    for (int i = 0; i < FS_ROUTES; i++)
        if ((rc = fs_hist_init(&r->lat[i], 9, 40)) < 0)
            goto fail;
    if ((rc = fs_hist_init(&r->all, 9, 40)) < 0)
        goto fail;
    if ((rc = fs_hist_init(&r->send_lag, 9, 40)) < 0)
        goto fail;
    if ((rc = fs_stale_init(&r->stale, o->nskus, o->ntargets, o->windows_ms, o->nwindows)) < 0)
        goto fail;
    r->nslots = max_seconds ? max_seconds : 1;
    r->slots = calloc(r->nslots, sizeof(*r->slots));
    r->fine = calloc(FS_FINE_SLOTS, sizeof(*r->fine));
    r->verify = calloc((size_t)o->nskus, sizeof(*r->verify));
    r->verify_sku = calloc((size_t)o->nskus, sizeof(*r->verify_sku));
    if (r->slots == NULL || r->fine == NULL || r->verify == NULL || r->verify_sku == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    return 0;
fail:
    fs_result_free(r);
    return rc;
}

static void free_slots(_Atomic(fs_slot *) *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        fs_slot *s = atomic_load(&v[i]);
        if (s) {
            fs_hist_free(&s->lat);
            fs_hist_free(&s->due_lat);
            free(s);
        }
    }
    free(v);
}

void fs_result_free(fs_result *r)
{
    for (int i = 0; i < FS_ROUTES; i++)
        fs_hist_free(&r->lat[i]);
    fs_hist_free(&r->all);
    fs_hist_free(&r->send_lag);
    fs_stale_free(&r->stale);
    free_slots(r->slots, r->nslots);
    free_slots(r->fine, FS_FINE_SLOTS);
    r->slots = NULL;
    r->fine = NULL;
    free(r->verify);
    free(r->verify_sku);
    r->verify = NULL;
    r->verify_sku = NULL;
}

/* Slot i of v (n slots), allocated by the first caller that needs it. */
static fs_slot *slot_at(_Atomic(fs_slot *) *v, size_t n, size_t i)
{
    if (v == NULL || i >= n)
        return NULL;
    fs_slot *s = atomic_load_explicit(&v[i], memory_order_acquire);
    if (s)
        return s;
    fs_slot *mine = calloc(1, sizeof(*mine));
    if (mine == NULL)
        return NULL;
    if (fs_hist_init(&mine->lat, 6, 40) < 0 || fs_hist_init(&mine->due_lat, 6, 40) < 0) {
        fs_hist_free(&mine->lat);
        free(mine);
        return NULL;
    }
    fs_slot *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(&v[i], &expected, mine, memory_order_acq_rel,
                                                memory_order_acquire))
        return mine;
    fs_hist_free(&mine->lat);
    fs_hist_free(&mine->due_lat);
    free(mine);
    return expected;
}

fs_slot *fs_result_slot(fs_result *r, size_t sec)
{
    return slot_at(r->slots, r->nslots, sec);
}

fs_slot *fs_result_fine_slot(fs_result *r, size_t idx)
{
    return slot_at(r->fine, FS_FINE_SLOTS, idx);
}

static void slot_add(fs_slot *sl, uint64_t lat_ns, int error, uint64_t sold, int sold_out)
{
    if (sl == NULL)
        return;
    atomic_fetch_add_explicit(&sl->requests, 1, memory_order_relaxed);
    if (error)
        atomic_fetch_add_explicit(&sl->errors, 1, memory_order_relaxed);
    if (sold)
        atomic_fetch_add_explicit(&sl->sold, sold, memory_order_relaxed);
    if (sold_out)
        atomic_fetch_add_explicit(&sl->sold_out, 1, memory_order_relaxed);
    fs_hist_record(&sl->lat, lat_ns);
}

/* The second and the 100 ms slot (NULL past FS_FINE_SLOTS, or without
 * memory) that hold t (ns since t0; before it counts as 0). */
static void slots_at(fs_result *r, int64_t t, fs_slot **sec, fs_slot **fine)
{
    if (t < 0)
        t = 0;
    *sec = fs_result_slot(r, (size_t)(t / 1000000000));
    *fine = t / FS_FINE_NS < FS_FINE_SLOTS ? fs_result_fine_slot(r, (size_t)(t / FS_FINE_NS))
                                            : NULL;
}

void fs_result_tick(fs_result *r, int64_t t, uint64_t lat_ns, int error, uint64_t sold,
                    int sold_out)
{
    fs_slot *sec, *fine;
    slots_at(r, t, &sec, &fine);
    slot_add(sec, lat_ns, error, sold, sold_out);
    slot_add(fine, lat_ns, error, sold, sold_out);
}

void fs_result_due(fs_result *r, int64_t intended, int64_t sent, uint64_t lat_ns, int busy)
{
    fs_slot *sec, *fine;
    slots_at(r, intended, &sec, &fine);
    if (sec != NULL)
        fs_hist_record(&sec->due_lat, lat_ns);
    if (fine != NULL)
        fs_hist_record(&fine->due_lat, lat_ns);
    if (intended < 0)
        intended = 0;
    if (sent < 0)
        return;
    if (busy)
        atomic_fetch_add_explicit(&r->busy_sends, 1, memory_order_relaxed);
    else
        fs_hist_record(&r->send_lag, sent > intended ? (uint64_t)(sent - intended) : 0);
    int64_t cur = atomic_load_explicit(&r->last_sent_ns, memory_order_relaxed);
    while (sent > cur && !atomic_compare_exchange_weak_explicit(&r->last_sent_ns, &cur, sent,
                                                                memory_order_relaxed,
                                                                memory_order_relaxed))
        ;
}

void fs_result_stale_tick(fs_result *r, int64_t t)
{
    fs_slot *sec, *fine;
    slots_at(r, t, &sec, &fine);
    if (sec != NULL)
        atomic_fetch_add_explicit(&sec->stale, 1, memory_order_relaxed);
    if (fine != NULL)
        atomic_fetch_add_explicit(&fine->stale, 1, memory_order_relaxed);
}

uint64_t fs_result_requests(const fs_result *r)
{
    uint64_t n = 0;
    for (int rt = 0; rt < FS_ROUTES; rt++)
        for (int o = 0; o < FS_O_COUNT; o++)
            n += atomic_load_explicit(&r->outcomes[rt][o], memory_order_relaxed);
    return n;
}

uint64_t fs_result_errors(const fs_result *r)
{
    uint64_t n = 0;
    for (int rt = 0; rt < FS_ROUTES; rt++)
        for (int o = 0; o < FS_O_COUNT; o++)
            if (!fs_outcome_ok((fs_outcome)o))
                n += atomic_load_explicit(&r->outcomes[rt][o], memory_order_relaxed);
    return n;
}

void fs_result_sale(fs_result *r, int64_t t)
{
    int64_t cur = atomic_load_explicit(&r->last_sale_ns, memory_order_relaxed);
    while (t > cur) {
        if (atomic_compare_exchange_weak_explicit(&r->last_sale_ns, &cur, t,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            atomic_store_explicit(&r->requests_at_last_sale, fs_result_requests(r),
                                  memory_order_relaxed);
            break;
        }
    }
}

int fs_result_phases(const fs_result *r, double *sell_s, double *sell_rps, double *after_rps)
{
    int64_t t = atomic_load(&r->last_sale_ns);
    if (t < 0)
        return -ENOENT;
    uint64_t total = fs_result_requests(r), at = atomic_load(&r->requests_at_last_sale);
    if (at > total)
        at = total;
    double s = (double)t / 1e9, rest = r->elapsed_s - s;
    *sell_s = s;
    *sell_rps = s > 0 ? (double)at / s : 0.0;
    *after_rps = rest > 0 ? (double)(total - at) / rest : 0.0;
    return 0;
}

int fs_result_phase_percentile(const fs_result *r, double p, uint64_t *sell, uint64_t *after)
{
    int64_t t = atomic_load(&r->last_sale_ns);
    if (t < 0)
        return -ENOENT;
    int fine = r->elapsed_s * 1e9 < (double)FS_FINE_SLOTS * FS_FINE_NS;
    _Atomic(fs_slot *) *v = fine ? r->fine : r->slots;
    size_t n = fine ? FS_FINE_SLOTS : r->nslots;
    size_t cut = (size_t)(t / (fine ? FS_FINE_NS : 1000000000)) + 1;
    fs_hist hs, ha;
    if (fs_hist_init(&hs, 6, 40) < 0)
        return -ENOMEM;
    if (fs_hist_init(&ha, 6, 40) < 0) {
        fs_hist_free(&hs);
        return -ENOMEM;
    }
    for (size_t i = 0; v && i < n; i++) {
        fs_slot *s = atomic_load(&v[i]);
        if (s != NULL)
            fs_hist_merge(i < cut ? &hs : &ha, &s->due_lat);
    }
    *sell = fs_hist_percentile(&hs, p);
    *after = fs_hist_percentile(&ha, p);
    fs_hist_free(&hs);
    fs_hist_free(&ha);
    return 0;
}

double fs_result_sent_rate(const fs_result *r, double rate)
{
    int64_t last = atomic_load(&r->last_sent_ns);
    uint64_t n = fs_result_requests(r);
    if (rate <= 0 || last < 0 || n == 0)
        return 0.0;
    return (double)n / ((double)last / 1e9 + 1.0 / rate);
}

double fs_result_rps(const fs_result *r)
{
    return r->elapsed_s > 0 ? (double)fs_result_requests(r) / r->elapsed_s : 0.0;
}

static uint64_t tier_total(const fs_result *r, int tier)
{
    uint64_t n = 0;
    for (int t = 0; t < FS_MAX_TARGETS; t++)
        n += atomic_load_explicit(&r->tiers[t][tier], memory_order_relaxed);
    return n;
}

double fs_result_redis_hit_ratio(const fs_result *r)
{
    uint64_t redis = tier_total(r, FS_TIER_REDIS), db = tier_total(r, FS_TIER_DB);
    return redis + db ? (double)redis / (double)(redis + db) : 0.0;
}

double fs_result_db_reads_per_s(const fs_result *r)
{
    return r->elapsed_s > 0 ? (double)tier_total(r, FS_TIER_DB) / r->elapsed_s : 0.0;
}

double fs_result_cpu_us_per_request(const fs_result *r)
{
    uint64_t n = fs_result_requests(r);
    return n ? r->cpu_s * 1e6 / (double)n : 0.0;
}
