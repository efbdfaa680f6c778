/*
 * metrics.c: per-route request counters by status and latency histograms,
 * plus connection counters, appended as Prometheus text.
 *
 * The hot path must not bounce cache lines between workers: each worker
 * thread owns one shard and is its only writer, so an increment is a relaxed
 * load and store (no lock prefix). Threads that are not runtime workers
 * share one extra shard with atomic adds. Readers sum the shards.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "api/http_int.h"
#include "runtime/rt.h"

/* The runtime's worker index (rt_worker_id), installed by the server so
 * that the parser's unit tests link without the runtime; until then
 * everything counts in the shared shard. */
_Atomic(http__worker_id_fn) http__worker_id;

static const int statuses[] = {200, 201, 400, 401, 403, 404, 405, 408, 409,
                               411, 413, 414, 417, 422, 425, 429, 431, 500,
                               501, 503};
#define NSTATUS ((int)(sizeof statuses / sizeof statuses[0]) + 1)  /* +other */

/* The series of http_requests_total that exist at zero from the start
 * (docs/metrics.md): for each route the status codes api/openapi.yaml
 * documents for it (tests/unit/test_service_metrics.c holds the two
 * equal); for unrouted requests (route="none") the codes the server
 * answers before routing. A code outside that contract appears at its
 * first occurrence. A route the service leaves
 * unimplemented answers 501 instead (and 401/403 first if it is an admin
 * route). Each list ends with 0. */
#define MAX_CODES 12
static const int route_codes[HTTP__R_COUNT][MAX_CODES] = {
    [HTTP__R_GET_ITEM] = {200, 400, 404, 500, 503},
    [HTTP__R_PUT_ITEM] = {200, 201, 400, 401, 403, 500, 503},
    [HTTP__R_DECREMENT] = {200, 400, 404, 409, 422, 425, 429, 500, 503},
    [HTTP__R_ORDER_BY_KEY] = {200, 400, 404, 500, 503},
    [HTTP__R_AUDIT] = {200, 400, 401, 403, 404, 500, 503},
    [HTTP__R_GET_CONFIG] = {200, 401, 403, 500, 503},
    [HTTP__R_PUT_CONFIG] = {200, 400, 401, 403, 500, 503},
    [HTTP__R_PURGE_CACHE] = {200, 401, 403, 500, 503},
    [HTTP__R_METRICS] = {200, 400, 500, 503},
    [HTTP__R_HEALTHZ] = {200, 400},
    [HTTP__R_READYZ] = {200, 400, 503},
    [HTTP__R_NONE] = {400, 404, 405, 408, 413, 414, 417, 431, 501},
};

/* Upper bounds in nanoseconds; the last bucket is +Inf. */
static const int64_t bounds_ns[] = {
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
    25000000, 50000000, 100000000, 250000000, 500000000, 1000000000,
    2500000000,
};
static const char *const bounds_s[] = {
    "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
    "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
};
#define NBOUNDS ((int)(sizeof bounds_ns / sizeof bounds_ns[0]))

#define MAX_SHARDS 32

typedef struct shard {
    _Atomic uint64_t req[HTTP__R_COUNT][NSTATUS];
    _Atomic uint64_t hist[HTTP__R_COUNT][NBOUNDS + 1];
    _Atomic uint64_t sum_ns[HTTP__R_COUNT];
    _Atomic uint64_t conn[HTTP__C_COUNT];
} __attribute__((aligned(64))) shard;

static shard shards[MAX_SHARDS + 1];   /* [MAX_SHARDS] is the shared one */
static _Atomic int64_t conns_open;

static inline int status_index(int status)
{
    for (int i = 0; i < NSTATUS - 1; i++)
        if (statuses[i] == status)
            return i;
    return NSTATUS - 1;
}

static inline shard *my_shard(int *owned)
{
    http__worker_id_fn f = atomic_load_explicit(&http__worker_id, memory_order_relaxed);
    int w = f ? f() : -1;
    if (w >= 0 && w < MAX_SHARDS) {
        *owned = 1;
        return &shards[w];
    }
    *owned = 0;
    return &shards[MAX_SHARDS];
}

void http__metrics_request(int route, int status, int64_t latency_ns)
{
    int owned;
    shard *s = my_shard(&owned);
    if (latency_ns < 0)
        latency_ns = 0;
    int b = 0;
    while (b < NBOUNDS && latency_ns > bounds_ns[b])
        b++;
    rt_counter_add(&s->req[route][status_index(status)], 1, owned);
    rt_counter_add(&s->hist[route][b], 1, owned);
    rt_counter_add(&s->sum_ns[route], (uint64_t)latency_ns, owned);
}

void http__metrics_count(int counter)
{
    int owned;
    shard *s = my_shard(&owned);
    rt_counter_add(&s->conn[counter], 1, owned);
}

void http__metrics_conns(int delta)
{
    atomic_fetch_add_explicit(&conns_open, delta, memory_order_relaxed);
}

static uint64_t sum(size_t offset)
{
    uint64_t t = 0;
    for (int i = 0; i <= MAX_SHARDS; i++)
        t += atomic_load_explicit(
            (_Atomic uint64_t *)((char *)&shards[i] + offset),
            memory_order_relaxed);
    return t;
}

static const char *route_label(int r)
{
    return r == HTTP__R_NONE ? "none" : http__routes[r].pattern;
}

static const char *route_method(int r)
{
    return r == HTTP__R_NONE ? "any" : http__routes[r].method;
}

/* Whether the service implements route r (the dispatcher answers 501
 * otherwise); every route when srv is NULL. */
static int implemented(const http_server *srv, int r)
{
    const http_service *s = srv != NULL ? srv->svc : NULL;
    if (s == NULL)
        return 1;
    return http__implemented(s, r);
}

/* 1 when status k of route r is written even at zero. */
static int declared(const http_server *srv, int r, int k)
{
    if (k >= NSTATUS - 1)
        return 0;   /* "other" */
    int code = statuses[k];
    if (r != HTTP__R_NONE && !implemented(srv, r))
        return code == 501 || (http__routes[r].admin && (code == 401 || code == 403));
    for (int i = 0; i < MAX_CODES && route_codes[r][i] != 0; i++)
        if (route_codes[r][i] == code)
            return 1;
    return 0;
}

int http_metrics_append(const http_server *srv, http_buf *out)
{
    int rc = 0;
    rc |= http_buf_puts(out,
        "# HELP http_requests_total HTTP requests answered, by route and status.\n"
        "# TYPE http_requests_total counter\n");
    for (int r = 0; r < HTTP__R_COUNT; r++) {
        for (int k = 0; k < NSTATUS; k++) {
            uint64_t v = sum(offsetof(shard, req) +
                             ((size_t)r * NSTATUS + (size_t)k) * sizeof(uint64_t));
            if (v == 0 && !declared(srv, r, k))
                continue;
            char code[8];
            if (k < NSTATUS - 1)
                snprintf(code, sizeof code, "%d", statuses[k]);
            else
                strcpy(code, "other");
            rc |= http_buf_printf(out,
                "http_requests_total{route=\"%s\",method=\"%s\",code=\"%s\"} %llu\n",
                route_label(r), route_method(r), code, (unsigned long long)v);
        }
    }
    /* Every route's histogram exists from the start, at zero. */
    rc |= http_buf_puts(out,
        "# HELP http_request_duration_seconds Time from reading a request to "
        "formatting its response.\n"
        "# TYPE http_request_duration_seconds histogram\n");
    for (int r = 0; r < HTTP__R_COUNT; r++) {
        uint64_t cum = 0, counts[NBOUNDS + 1];
        for (int b = 0; b <= NBOUNDS; b++) {
            counts[b] = sum(offsetof(shard, hist) +
                            ((size_t)r * (NBOUNDS + 1) + (size_t)b) * sizeof(uint64_t));
            cum += counts[b];
        }
        uint64_t total = cum;
        cum = 0;
        for (int b = 0; b <= NBOUNDS; b++) {
            cum += counts[b];
            rc |= http_buf_printf(out,
                "http_request_duration_seconds_bucket{route=\"%s\",method=\"%s\",le=\"%s\"} %llu\n",
                route_label(r), route_method(r),
                b < NBOUNDS ? bounds_s[b] : "+Inf", (unsigned long long)cum);
        }
        uint64_t ns = sum(offsetof(shard, sum_ns) + (size_t)r * sizeof(uint64_t));
        rc |= http_buf_printf(out,
            "http_request_duration_seconds_sum{route=\"%s\",method=\"%s\"} %.9f\n"
            "http_request_duration_seconds_count{route=\"%s\",method=\"%s\"} %llu\n",
            route_label(r), route_method(r), (double)ns / 1e9,
            route_label(r), route_method(r), (unsigned long long)total);
    }
#define X(id, name, help)                                                    \
    rc |= http_buf_printf(out, "# HELP " name " " help ".\n# TYPE " name      \
                          " counter\n" name " %llu\n",                      \
                          (unsigned long long)sum(offsetof(shard, conn) +    \
                              HTTP__C_##id * sizeof(uint64_t)));
    HTTP__CONN_COUNTERS(X)
#undef X
    rc |= http_buf_printf(out,
        "# HELP http_connections_open Connections open now.\n"
        "# TYPE http_connections_open gauge\nhttp_connections_open %lld\n",
        (long long)atomic_load_explicit(&conns_open, memory_order_relaxed));
    return rc < 0 ? -ENOMEM : 0;
}
