/*
 * metrics.c: per-route request counters by status and latency histograms,
 * plus connection counters, appended as Prometheus text. Counted in the
 * metrics kit's per-thread cells (kit/metrics.h), so the hot path bounces
 * no cache line between workers.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "api/http_int.h"
#include "kit/metrics.h"

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

/* Upper bounds in seconds; above the last is +Inf. */
static const double bounds_s[] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1, 2.5,
};
#define NBOUNDS ((int)(sizeof bounds_s / sizeof bounds_s[0]))

/* The cells: requests by route and status, each route's histogram, the
 * connection counters. */
#define REQ(r, k) ((size_t)(r) * NSTATUS + (size_t)(k))
#define HIST(r) (REQ(HTTP__R_COUNT, 0) + (size_t)(r) * KIT_HIST_CELLS(NBOUNDS))
#define CONN(c) (HIST(HTTP__R_COUNT) + (size_t)(c))
#define NCELLS CONN(HTTP__C_COUNT)
KIT_CELLS_STATIC(cells, NCELLS);
static _Atomic int64_t conns_open;

static inline int status_index(int status)
{
    for (int i = 0; i < NSTATUS - 1; i++)
        if (statuses[i] == status)
            return i;
    return NSTATUS - 1;
}

void http__metrics_request(int route, int status, int64_t latency_ns)
{
    if (latency_ns < 0)
        latency_ns = 0;
    kit_cells_add(&cells, REQ(route, status_index(status)), 1);
    kit_hist_observe(&cells, HIST(route), bounds_s, NBOUNDS, (double)latency_ns / 1e9,
                     (uint64_t)latency_ns);
}

void http__metrics_count(int counter)
{
    kit_cells_add(&cells, CONN(counter), 1);
}

void http__metrics_conns(int delta)
{
    atomic_fetch_add_explicit(&conns_open, delta, memory_order_relaxed);
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

int http_metrics_append(const http_server *srv, kit_buf *out)
{
    kit_prom_header(out, "http_requests_total", "counter",
                    "HTTP requests answered, by route and status.");
    char lb[160];
    for (int r = 0; r < HTTP__R_COUNT; r++) {
        for (int k = 0; k < NSTATUS; k++) {
            uint64_t v = kit_cells_sum(&cells, REQ(r, k));
            if (v == 0 && !declared(srv, r, k))
                continue;
            char code[8];
            if (k < NSTATUS - 1)
                snprintf(code, sizeof code, "%d", statuses[k]);
            else
                strcpy(code, "other");
            snprintf(lb, sizeof lb, "route=\"%s\",method=\"%s\",code=\"%s\"",
                     route_label(r), route_method(r), code);
            kit_prom_sample_u64(out, "http_requests_total", lb, v);
        }
    }
    /* Every route's histogram exists from the start, at zero. */
    kit_prom_header(out, "http_request_duration_seconds", "histogram",
                    "Time from reading a request to formatting its response.");
    for (int r = 0; r < HTTP__R_COUNT; r++) {
        snprintf(lb, sizeof lb, "route=\"%s\",method=\"%s\"", route_label(r), route_method(r));
        kit_prom_hist_cells(out, "http_request_duration_seconds", lb, &cells, HIST(r), bounds_s,
                            NBOUNDS, 1e9);
    }
    static const kit_metric conn[] = {HTTP__CONN_COUNTERS(KIT_METRIC)};
    uint64_t v[HTTP__C_COUNT];
    for (int c = 0; c < HTTP__C_COUNT; c++)
        v[c] = kit_cells_sum(&cells, CONN(c));
    kit_prom_list(out, "http_", "_total", "counter", "", conn, v, HTTP__C_COUNT);
    kit_prom_one(out, "http_connections_open", "gauge", "Connections open now",
                 (double)atomic_load_explicit(&conns_open, memory_order_relaxed));
    return out->oom ? -ENOMEM : 0;
}
