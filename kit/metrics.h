/*
 * metrics.h: the metrics kit every module uses: one form for declaring
 * metrics, per-thread counter cells, bucket histograms and the Prometheus
 * text writer.
 *
 * Declaring. A module lists its metrics once as an X-macro of the one form
 * X(name, help): name a C identifier (a struct field, an enum suffix),
 * help one sentence without its final period. KIT_METRIC turns a line into
 * a kit_metric, KIT_FIELD into a uint64_t field:
 *
 *     #define LC_STATS_COUNTERS(X) X(hits, "Reads that found a value") ...
 *     static const kit_metric lc_counters[] = {LC_STATS_COUNTERS(KIT_METRIC)};
 *
 * Counting. kit_cells is an array of counters kept once per thread: the
 * first KIT_SLOTS - 1 threads that count own a slot each and update it
 * with a relaxed load and store (no locked instruction, no cache line
 * shared with another writer); later threads share the last slot with
 * atomic adds. A reader sums the slots. Nothing here blocks, allocates on
 * the update path or switches coroutines.
 *
 * Writing. kit_prom_* append the Prometheus text format (version 0.0.4)
 * to a kit_buf; failures show as b->oom.
 */
#ifndef KIT_METRICS_H
#define KIT_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "kit/buf.h"
#include "kit/kit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* kit_metric, KIT_METRIC and KIT_FIELD: kit/kit.h. */

/* ------------------------------------------------------------------------ */
/* Per-thread counter cells                                                  */

#define KIT_SLOTS 33
/* Cells per slot rounded up to whole cache lines. */
#define KIT_CELLS_STRIDE(n) ((((size_t)(n)) + 7) & ~(size_t)7)

typedef struct kit_cells {
    _Atomic uint64_t *cell;   /* KIT_SLOTS * stride */
    size_t n, stride;
} kit_cells;

/* Defines a static kit_cells `name` of n cells (no initialisation call). */
#define KIT_CELLS_STATIC(name, n)                                                     \
    static _Atomic uint64_t name##_cells_[KIT_SLOTS][KIT_CELLS_STRIDE(n)]             \
        __attribute__((aligned(64)));                                                 \
    static kit_cells name = {&name##_cells_[0][0], (n), KIT_CELLS_STRIDE(n)}

/* The calling thread's slot (0 .. KIT_SLOTS - 1): a function call, never
 * inlined, so that a coroutine that moved to another thread counts in the
 * new thread's slot. */
int kit__slot(void);

/* Adds v to cell i of slot s (the caller's, from kit__slot). */
static inline void kit__cell_add(kit_cells *c, int s, size_t i, uint64_t v)
{
    _Atomic uint64_t *p = &c->cell[(size_t)s * c->stride + i];
    if (s < KIT_SLOTS - 1)
        atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + v,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(p, v, memory_order_relaxed);
}

static inline void kit_cells_add(kit_cells *c, size_t i, uint64_t v)
{
    kit__cell_add(c, kit__slot(), i, v);
}

/* Cell i summed over the slots. */
uint64_t kit_cells_sum(const kit_cells *c, size_t i);

/* ------------------------------------------------------------------------ */
/* Bucket histograms                                                         */

/* The bucket of x among nb ascending upper bounds le: 0 .. nb (nb is +Inf,
 * above the last bound). A value equal to a bound is in that bound's
 * bucket, as Prometheus' le ("less or equal") says. */
static inline int kit_bucket(const double *le, int nb, double x)
{
    int i = 0;
    while (i < nb && x > le[i])
        i++;
    return i;
}

/* A histogram kept in cells: nb + 1 bucket counts (not cumulative) then
 * the sum of the observations. KIT_HIST_CELLS(nb) cells from `first`. */
#define KIT_HIST_CELLS(nb) ((nb) + 2)
static inline void kit_hist_observe(kit_cells *c, size_t first, const double *le, int nb,
                                    double x, uint64_t sum_add)
{
    int s = kit__slot();   /* one slot lookup for both cells */
    kit__cell_add(c, s, first + (size_t)kit_bucket(le, nb, x), 1);
    kit__cell_add(c, s, first + (size_t)nb + 1, sum_add);
}
/* Observations in the histogram (every bucket summed). */
uint64_t kit_hist_count(const kit_cells *c, size_t first, int nb);

/* ------------------------------------------------------------------------ */
/* Prometheus text                                                           */

void kit_prom_header(kit_buf *b, const char *name, const char *type, const char *help);
/* One sample; labels NULL or "" for none. Values are written in the
 * shortest form that reads back exactly (NaN, +Inf, -Inf as Prometheus
 * spells them). */
void kit_prom_sample(kit_buf *b, const char *name, const char *labels, double v);
void kit_prom_sample_u64(kit_buf *b, const char *name, const char *labels, uint64_t v);
/* A family of one unlabelled sample: header and value. type is "counter"
 * or "gauge"; help gets its final period here. */
void kit_prom_one(kit_buf *b, const char *name, const char *type, const char *help, double v);
void kit_prom_one_u64(kit_buf *b, const char *name, const char *type, const char *help,
                      uint64_t v);
/* A list declared with the one form, each metric a family of one sample:
 * prefix name suffix (counters end in "_total", gauges in ""), help with
 * help_prefix before it. */
void kit_prom_list(kit_buf *b, const char *prefix, const char *suffix, const char *type,
                   const char *help_prefix, const kit_metric *m, const uint64_t *v, size_t n);

/* Writes v into buf (cap bytes, 32 are always enough) as the shortest
 * plain decimal that reads back as v: "0.00005", "0.25", "1", "4096"; never
 * an exponent. Every histogram's le label is written with it, so one bound
 * has one spelling in every family. Returns the length. */
size_t kit_prom_decimal(char *buf, size_t cap, double v);

/* One histogram series (no header): nb upper bounds le[0..nb-1], counts
 * [0..nb] per bucket, not cumulative (counts[nb] is the +Inf bucket), and
 * the sum of the observations. */
void kit_prom_hist(kit_buf *b, const char *name, const char *labels, const double *le,
                   const uint64_t *counts, int nb, double sum);
/* The same for a histogram kept in cells; its sum is divided by sum_div
 * (1e9 for nanoseconds written as seconds, 1 for counts). */
void kit_prom_hist_cells(kit_buf *b, const char *name, const char *labels, const kit_cells *c,
                         size_t first, const double *le, int nb, double sum_div);

/* Appends s as a label value: backslash, double quote and newline
 * escaped. */
void kit_prom_label_value(kit_buf *b, const char *s);

/* process_*: the standard process metrics of the Prometheus client
 * libraries (CPU, resident and virtual memory, start time, open and
 * maximum file descriptors), read from /proc/self and getrlimit. */
void kit_prom_process(kit_buf *b);

#ifdef __cplusplus
}
#endif
#endif /* KIT_METRICS_H */
