/*
 * metrics.c: per-worker slots of counters and histogram buckets, summed at
 * scrape time.
 *
 * The hot path must not bounce cache lines between workers nor pay a
 * locked instruction: each runtime worker thread owns one slot and is its
 * only writer, so an update is a relaxed load and store. Threads that are
 * not workers (the blocking pool, librdkafka's, tests) share one extra slot
 * with atomic adds. The worker index comes from rt_worker_id, installed by
 * the service (svc_metrics_set_worker_id) so that svc_core links without
 * the runtime; until then every update goes to the shared slot.
 */
#include "cachesvc/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"   /* rt_counter_add only (inline): no link dependency */

#define WORKER_SLOTS 32          /* workers beyond these share the last slot */
#define SLOTS (WORKER_SLOTS + 1)  /* [WORKER_SLOTS] is the shared one */
#define NB_SECONDS 17
#define NB_COUNT 13
#define NB_MAX 17

static const double bounds_seconds[NB_SECONDS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double bounds_count[NB_COUNT] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};

struct hist_cells {
    _Atomic uint64_t bucket[NB_MAX + 1]; /* last = +Inf */
    _Atomic uint64_t sum;                /* ns or count */
};

struct slot {
    _Atomic uint64_t c[SVC_C__COUNT];
    struct hist_cells h[SVC_H__COUNT];
} __attribute__((aligned(64)));

static struct slot slots[SLOTS];
static _Atomic(svc_worker_id_fn) worker_id;

static const char *c_name[] = {
#define X(id, name, labels, help) name,
    SVC_COUNTERS(X)
#undef X
};
static const char *c_labels[] = {
#define X(id, name, labels, help) labels,
    SVC_COUNTERS(X)
#undef X
};
static const char *c_help[] = {
#define X(id, name, labels, help) help,
    SVC_COUNTERS(X)
#undef X
};
static const char *h_name[] = {
#define X(id, name, labels, kind, help) name,
    SVC_HISTOGRAMS(X)
#undef X
};
static const char *h_labels[] = {
#define X(id, name, labels, kind, help) labels,
    SVC_HISTOGRAMS(X)
#undef X
};
static const int h_kind[] = {
#define X(id, name, labels, kind, help) kind,
    SVC_HISTOGRAMS(X)
#undef X
};
static const char *h_help[] = {
#define X(id, name, labels, kind, help) help,
    SVC_HISTOGRAMS(X)
#undef X
};

void svc_metrics_set_worker_id(svc_worker_id_fn fn)
{
    atomic_store(&worker_id, fn);
}

/* The calling thread's slot; *owned when it is the slot's only writer. */
static inline struct slot *my(int *owned)
{
    svc_worker_id_fn f = atomic_load_explicit(&worker_id, memory_order_relaxed);
    int w = f != NULL ? f() : -1;
    if (w >= 0 && w < WORKER_SLOTS) {
        *owned = 1;
        return &slots[w];
    }
    *owned = 0;
    return &slots[WORKER_SLOTS];
}

void svc_metric_add(enum svc_counter_id id, uint64_t n)
{
    int owned;
    struct slot *sl = my(&owned);
    rt_counter_add(&sl->c[id], n, owned);
}

uint64_t svc_metric_get(enum svc_counter_id id)
{
    uint64_t t = 0;
    for (int s = 0; s < SLOTS; s++)
        t += atomic_load_explicit(&slots[s].c[id], memory_order_relaxed);
    return t;
}

static int nbuckets(int kind) { return kind == SVC_HIST_SECONDS ? NB_SECONDS : NB_COUNT; }
static const double *bounds(int kind) { return kind == SVC_HIST_SECONDS ? bounds_seconds : bounds_count; }

void svc_hist_observe(enum svc_hist_id id, uint64_t v)
{
    int kind = h_kind[id], nb = nbuckets(kind);
    const double *bd = bounds(kind);
    double x = kind == SVC_HIST_SECONDS ? (double)v / 1e9 : (double)v;
    int i = 0;
    while (i < nb && x > bd[i])
        i++;
    int owned;
    struct hist_cells *h = &my(&owned)->h[id];
    rt_counter_add(&h->bucket[i], 1, owned);
    rt_counter_add(&h->sum, v, owned);
}

uint64_t svc_hist_count(enum svc_hist_id id)
{
    uint64_t t = 0;
    for (int s = 0; s < SLOTS; s++)
        for (int i = 0; i <= NB_MAX; i++)
            t += atomic_load_explicit(&slots[s].h[id].bucket[i], memory_order_relaxed);
    return t;
}

/* ------------------------------------------------------------------------ */

static int buf_reserve(svc_buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void svc_buf_append(svc_buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void svc_buf_printf(svc_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void svc_buf_free(svc_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

void svc_prom_header(svc_buf *b, const char *name, const char *type, const char *help)
{
    svc_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void svc_prom_sample(svc_buf *b, const char *name, const char *labels, double v)
{
    if (labels != NULL && labels[0] != '\0')
        svc_buf_printf(b, "%s{%s} %.17g\n", name, labels, v);
    else
        svc_buf_printf(b, "%s %.17g\n", name, v);
}

void svc_prom_sample_u64(svc_buf *b, const char *name, const char *labels, uint64_t v)
{
    if (labels != NULL && labels[0] != '\0')
        svc_buf_printf(b, "%s{%s} %llu\n", name, labels, (unsigned long long)v);
    else
        svc_buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void render_hist(svc_buf *b, int id)
{
    uint64_t cells[NB_MAX + 1] = {0}, sum = 0, cum = 0;
    int kind = h_kind[id], nb = nbuckets(kind);
    for (int s = 0; s < SLOTS; s++) {
        for (int i = 0; i <= nb; i++)
            cells[i] += atomic_load_explicit(&slots[s].h[id].bucket[i], memory_order_relaxed);
        sum += atomic_load_explicit(&slots[s].h[id].sum, memory_order_relaxed);
    }
    const char *lb = h_labels[id];
    const char *sep = lb[0] ? "," : "";
    for (int i = 0; i <= nb; i++) {
        cum += cells[i];
        if (i < nb)
            svc_buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", h_name[id], lb, sep,
                           bounds(kind)[i], (unsigned long long)cum);
        else
            svc_buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", h_name[id], lb, sep,
                           (unsigned long long)cum);
    }
    char name[128];
    snprintf(name, sizeof name, "%s_sum", h_name[id]);
    if (kind == SVC_HIST_SECONDS)
        svc_prom_sample(b, name, lb, (double)sum / 1e9);
    else
        svc_prom_sample_u64(b, name, lb, sum);
    snprintf(name, sizeof name, "%s_count", h_name[id]);
    svc_prom_sample_u64(b, name, lb, cum);
}

void svc_metrics_render(svc_buf *b)
{
    for (int id = 0; id < SVC_C__COUNT; id++) {
        if (id == 0 || strcmp(c_name[id], c_name[id - 1]) != 0)
            svc_prom_header(b, c_name[id], "counter", c_help[id]);
        svc_prom_sample_u64(b, c_name[id], c_labels[id], svc_metric_get(id));
    }
    for (int id = 0; id < SVC_H__COUNT; id++) {
        if (id == 0 || strcmp(h_name[id], h_name[id - 1]) != 0)
            svc_prom_header(b, h_name[id], "histogram", h_help[id]);
        render_hist(b, id);
    }
}
