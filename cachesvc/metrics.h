/*
 * metrics.h: the service's Prometheus registry, on the metrics kit
 * (kit/metrics.h).
 *
 * Counters and histograms are declared once, as lines of SVC_COUNTERS and
 * SVC_HISTOGRAMS (one line = one time series; lines of one family are
 * adjacent, so a line names its family and its labels beside the kit's
 * X(name, help)). Updates go to the kit's per-thread cells. Gauges and the
 * components' own statistics are written at scrape time through kit_prom_*
 * by whoever owns them.
 *
 * Every function here is callable from any thread or coroutine and never
 * switches coroutines.
 */
#ifndef CACHESVC_METRICS_H
#define CACHESVC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "kit/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/* id, family name, labels, help (help is read from a family's first line) */
#define SVC_COUNTERS(X)                                                                         \
    X(READ_LOCAL, "cachesvc_reads_total", "tier=\"local\"", "Item reads by the tier that answered.") \
    X(READ_REDIS, "cachesvc_reads_total", "tier=\"redis\"", "")                                 \
    X(READ_DB, "cachesvc_reads_total", "tier=\"db\"", "")                                       \
    X(READ_ABSENT_LOCAL, "cachesvc_reads_not_found_total", "tier=\"local\"",                      \
      "Item reads answered 404, by the tier that knew the sku is absent.")                        \
    X(READ_ABSENT_REDIS, "cachesvc_reads_not_found_total", "tier=\"redis\"", "")                  \
    X(READ_ABSENT_DB, "cachesvc_reads_not_found_total", "tier=\"db\"", "")                        \
    X(READ_ERROR, "cachesvc_read_errors_total", "", "Item reads answered 503.")                 \
    X(FILL_WAIT, "cachesvc_fill_waits_total", "result=\"filled\"",                              \
      "Reads that waited for another coroutine's fill of the same item.")                       \
    X(FILL_WAIT_TIMEOUT, "cachesvc_fill_waits_total", "result=\"timeout\"", "")                 \
    X(LOCAL_FILL_REFUSED, "cachesvc_local_fills_refused_total", "",                             \
      "Local fills refused by a version floor or a cancelled lease.")                           \
    X(REDIS_ERROR, "cachesvc_redis_errors_total", "", "Redis requests that failed.")            \
    X(REDIS_SKIPPED, "cachesvc_redis_skipped_total", "",                                        \
      "Redis requests skipped because the breaker was open.")                                   \
    X(REDIS_BREAKER_OPEN, "cachesvc_redis_breaker_opens_total", "",                             \
      "Times the Redis breaker opened.")                                                        \
    X(LOCAL_DISTRUST, "cachesvc_local_distrusts_total", "",                                    \
      "Times every local copy was distrusted (broadcast events may have been missed).")        \
    X(LOCAL_PURGE, "cachesvc_local_purges_total", "",                                         \
      "Times the local cache was purged (an operator's fleet-wide purge).")                      \
    X(LOCAL_INSTALLS, "cachesvc_local_installs_total", "",                                     \
      "Committed rows from broadcast events handed to the local cache (installed when newer).") \
    X(LOCAL_STALE_EVICT, "cachesvc_local_stale_evictions_total", "",                           \
      "Local copies evicted because the database showed a decrement a newer version.") \
    X(REDIS_TOMBSTONE, "cachesvc_redis_tombstones_total", "",                                   \
      "Redis reads that found a delete's tombstone (a miss whose version became the local floor).") \
    X(REDIS_STALE, "cachesvc_redis_stale_total", "",                                            \
      "Redis copies older than the local version floor, read past.")                            \
    X(CONSIST_CHECK_LOCAL, "cachesvc_consistency_checks_total", "tier=\"local\"",                \
      "Sampled reads checked against the database by the consistency monitor, by tier.")         \
    X(CONSIST_CHECK_REDIS, "cachesvc_consistency_checks_total", "tier=\"redis\"", "")             \
    X(CONSIST_CHECK_DB, "cachesvc_consistency_checks_total", "tier=\"db\"", "")                   \
    X(CONSIST_VIOL_LOCAL, "cachesvc_consistency_violations_total", "tier=\"local\"",             \
      "Checked reads that returned a version older than one committed more than the window "     \
      "before them.")                                                                            \
    X(CONSIST_VIOL_REDIS, "cachesvc_consistency_violations_total", "tier=\"redis\"", "")          \
    X(CONSIST_VIOL_DB, "cachesvc_consistency_violations_total", "tier=\"db\"", "")                \
    X(CONSIST_ERROR, "cachesvc_consistency_check_errors_total", "",                              \
      "Monitor checks that could not read the database.")                                       \
    X(CONSIST_DROPPED, "cachesvc_consistency_samples_dropped_total", "",                          \
      "Sampled reads dropped because the monitor's queue was full.")                            \
    X(DECR_OK, "cachesvc_decrements_total", "outcome=\"ok\"", "Decrements by outcome.")         \
    X(DECR_REPLAYED, "cachesvc_decrements_total", "outcome=\"replayed\"", "")                   \
    X(DECR_SOLD_OUT, "cachesvc_decrements_total", "outcome=\"sold_out\"", "")                   \
    X(DECR_INSUFFICIENT, "cachesvc_decrements_total", "outcome=\"insufficient_stock\"", "")     \
    X(DECR_LIMIT, "cachesvc_decrements_total", "outcome=\"limit_exceeded\"", "")                \
    X(DECR_NOT_STARTED, "cachesvc_decrements_total", "outcome=\"sale_not_started\"", "")        \
    X(DECR_NOT_FOUND, "cachesvc_decrements_total", "outcome=\"not_found\"", "")                 \
    X(DECR_BAD_REQUEST, "cachesvc_decrements_total", "outcome=\"bad_request\"", "")             \
    X(DECR_OVERLOADED, "cachesvc_decrements_total", "outcome=\"overloaded\"", "")               \
    X(DECR_UNAVAILABLE, "cachesvc_decrements_total", "outcome=\"unavailable\"", "")             \
    X(DECR_UNKNOWN, "cachesvc_decrements_total", "outcome=\"outcome_unknown\"", "")             \
    X(DECR_KEY_MISMATCH, "cachesvc_decrements_total", "outcome=\"idempotency_key_mismatch\"", "") \
    X(DECR_FAST_REJECT, "cachesvc_fast_rejects_total", "",                                      \
      "Decrements refused as sold out from the local cache, without the database.")             \
    X(PUT_ITEM, "cachesvc_item_puts_total", "", "Items created or restocked.")                  \
    X(RELOAD_OK, "cachesvc_reloads_total", "result=\"ok\"", "Configuration reloads (SIGHUP).")  \
    X(RELOAD_ERROR, "cachesvc_reloads_total", "result=\"error\"", "")

#define SVC_HIST_SECONDS 0   /* latency buckets, 50 us .. 10 s */
#define SVC_HIST_COUNT 1     /* sizes, 1 .. 4096 in powers of two */

/* id, family name, labels, bucket kind, help */
#define SVC_HISTOGRAMS(X)                                                                       \
    X(READ_REDIS_S, "cachesvc_read_seconds", "tier=\"redis\"", SVC_HIST_SECONDS,                \
      "Latency of item reads that missed the local cache, by the tier that answered "          \
      "(local hits are timed by the HTTP server's per-route histograms).")                     \
    X(READ_DB_S, "cachesvc_read_seconds", "tier=\"db\"", SVC_HIST_SECONDS, "")                  \
    X(DECR_S, "cachesvc_decrement_seconds", "", SVC_HIST_SECONDS,                               \
      "Decrement latency, enqueue to answer (batch commit included).")                          \
    X(REDIS_S, "cachesvc_redis_request_seconds", "", SVC_HIST_SECONDS,                          \
      "Latency of the service's Redis requests.")

enum svc_counter_id {
#define X(id, name, labels, help) SVC_C_##id,
    SVC_COUNTERS(X)
#undef X
    SVC_C__COUNT
};

enum svc_hist_id {
#define X(id, name, labels, kind, help) SVC_H_##id,
    SVC_HISTOGRAMS(X)
#undef X
    SVC_H__COUNT
};

void svc_metric_add(enum svc_counter_id id, uint64_t n);
static inline void svc_metric_inc(enum svc_counter_id id) { svc_metric_add(id, 1); }
/* Records v: nanoseconds for SVC_HIST_SECONDS histograms, a count otherwise. */
void svc_hist_observe(enum svc_hist_id id, uint64_t v);
/* Reads a counter (summed over slots). For tests and /readyz. */
uint64_t svc_metric_get(enum svc_counter_id id);
/* Reads a histogram's observation count. */
uint64_t svc_hist_count(enum svc_hist_id id);

/* Writes every declared counter and histogram in Prometheus text format. */
void svc_metrics_render(kit_buf *b);

/* cachesvc_build_info{version,commit} 1, from cachesvc_version.h; with
 * kit_prom_process (process_*) the families every binary of the project
 * exports (docs/metrics.md). */
void svc_build_info_metrics(kit_buf *b);

/* The state of a dependency for cachesvc_dependency_up. */
enum svc_dep { SVC_DEP_ABSENT = -1, SVC_DEP_DOWN = 0, SVC_DEP_UP = 1 };

/* cachesvc_dependency_up{dependency="store|redis|kafka"} (a dependency that
 * is SVC_DEP_ABSENT, not configured, has no series), cachesvc_ready (1 when
 * /readyz answers 200) and cachesvc_draining. */
void svc_health_metrics(kit_buf *b, enum svc_dep store, enum svc_dep redis, enum svc_dep kafka,
                        int ready, int draining);

#ifdef __cplusplus
}
#endif
#endif /* CACHESVC_METRICS_H */
