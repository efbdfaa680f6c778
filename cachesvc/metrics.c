/*
 * metrics.c: the service's counters and histograms, counted in the
 * metrics kit's per-thread cells (kit/metrics.h) and summed at scrape
 * time; build information and health gauges.
 */
#include "cachesvc/metrics.h"

#include <stdio.h>
#include <string.h>

#include "cachesvc_version.h"
#include "kit/metrics.h"

#define NB_SECONDS 17
#define NB_COUNT 13

static const double bounds_seconds[NB_SECONDS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double bounds_count[NB_COUNT] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};

/* The cells: the counters, then each histogram's buckets and sum (room for
 * the larger kind). */
#define HIST(id) ((size_t)SVC_C__COUNT + (size_t)(id) * KIT_HIST_CELLS(NB_SECONDS))
KIT_CELLS_STATIC(cells, HIST(SVC_H__COUNT));

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

void svc_metric_add(enum svc_counter_id id, uint64_t n)
{
    kit_cells_add(&cells, (size_t)id, n);
}

uint64_t svc_metric_get(enum svc_counter_id id)
{
    return kit_cells_sum(&cells, (size_t)id);
}

static int nbuckets(int kind) { return kind == SVC_HIST_SECONDS ? NB_SECONDS : NB_COUNT; }
static const double *bounds(int kind) { return kind == SVC_HIST_SECONDS ? bounds_seconds : bounds_count; }

void svc_hist_observe(enum svc_hist_id id, uint64_t v)
{
    int kind = h_kind[id];
    double x = kind == SVC_HIST_SECONDS ? (double)v / 1e9 : (double)v;
    kit_hist_observe(&cells, HIST(id), bounds(kind), nbuckets(kind), x, v);
}

uint64_t svc_hist_count(enum svc_hist_id id)
{
    return kit_hist_count(&cells, HIST(id), nbuckets(h_kind[id]));
}

void svc_build_info_metrics(kit_buf *b)
{
    kit_prom_header(b, "cachesvc_build_info", "gauge",
                    "Always 1; the version and commit the binary was built from.");
    kit_buf_printf(b, "cachesvc_build_info{version=\"");
    kit_prom_label_value(b, CACHESVC_VERSION);
    kit_buf_printf(b, "\",commit=\"");
    kit_prom_label_value(b, CACHESVC_COMMIT);
    kit_buf_printf(b, "\"} 1\n");
}

void svc_health_metrics(kit_buf *b, enum svc_dep store, enum svc_dep redis, enum svc_dep kafka,
                        int ready, int draining)
{
    const struct { const char *name; enum svc_dep st; } deps[] = {
        {"store", store}, {"redis", redis}, {"kafka", kafka}};
    kit_prom_header(b, "cachesvc_dependency_up", "gauge",
                    "1 while the dependency answers, 0 while it is down; no series when it is "
                    "not configured.");
    for (size_t i = 0; i < sizeof deps / sizeof deps[0]; i++) {
        if (deps[i].st == SVC_DEP_ABSENT)
            continue;
        char lb[48];
        snprintf(lb, sizeof lb, "dependency=\"%s\"", deps[i].name);
        kit_prom_sample_u64(b, "cachesvc_dependency_up", lb, deps[i].st == SVC_DEP_UP);
    }
    kit_prom_header(b, "cachesvc_ready", "gauge", "1 when /readyz answers 200.");
    kit_prom_sample_u64(b, "cachesvc_ready", NULL, ready != 0);
    kit_prom_header(b, "cachesvc_draining", "gauge",
                    "1 from SIGTERM on: the process is leaving (/readyz answers 503).");
    kit_prom_sample_u64(b, "cachesvc_draining", NULL, draining != 0);
}

void svc_metrics_render(kit_buf *b)
{
    for (int id = 0; id < SVC_C__COUNT; id++) {
        if (id == 0 || strcmp(c_name[id], c_name[id - 1]) != 0)
            kit_prom_header(b, c_name[id], "counter", c_help[id]);
        kit_prom_sample_u64(b, c_name[id], c_labels[id], svc_metric_get(id));
    }
    for (int id = 0; id < SVC_H__COUNT; id++) {
        if (id == 0 || strcmp(h_name[id], h_name[id - 1]) != 0)
            kit_prom_header(b, h_name[id], "histogram", h_help[id]);
        int kind = h_kind[id];
        kit_prom_hist_cells(b, h_name[id], h_labels[id], &cells, HIST(id), bounds(kind),
                            nbuckets(kind), kind == SVC_HIST_SECONDS ? 1e9 : 1);
    }
}
