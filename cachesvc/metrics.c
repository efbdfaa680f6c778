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

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cachesvc_version.h"
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

/* The shortest %g form of v that reads back as v; Prometheus spells the
 * special values NaN, +Inf and -Inf. */
static void fmt_value(char *buf, size_t cap, double v)
{
    if (isnan(v)) {
        snprintf(buf, cap, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

void svc_prom_sample(svc_buf *b, const char *name, const char *labels, double v)
{
    char num[40];
    fmt_value(num, sizeof num, v);
    if (labels != NULL && labels[0] != '\0')
        svc_buf_printf(b, "%s{%s} %s\n", name, labels, num);
    else
        svc_buf_printf(b, "%s %s\n", name, num);
}

void svc_prom_sample_u64(svc_buf *b, const char *name, const char *labels, uint64_t v)
{
    if (labels != NULL && labels[0] != '\0')
        svc_buf_printf(b, "%s{%s} %llu\n", name, labels, (unsigned long long)v);
    else
        svc_buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

size_t svc_prom_decimal(char *buf, size_t cap, double v)
{
    if (!isfinite(v) || fabs(v) >= 1e15 || (v != 0 && fabs(v) < 1e-12)) {
        fmt_value(buf, cap, v);   /* no plain form worth writing */
        return strlen(buf);
    }
    int n = 0;
    for (int p = 0; p <= 17; p++) {
        n = snprintf(buf, cap, "%.*f", p, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (n < 0 || (size_t)n >= cap)
        return strlen(buf);
    if (memchr(buf, '.', (size_t)n) != NULL) {   /* "0.50" cannot happen, but be sure */
        while (n > 0 && buf[n - 1] == '0')
            buf[--n] = '\0';
        if (n > 0 && buf[n - 1] == '.')
            buf[--n] = '\0';
    }
    if (strcmp(buf, "-0") == 0) {
        strcpy(buf, "0");
        n = 1;
    }
    return (size_t)n;
}

void svc_prom_hist(svc_buf *b, const char *name, const char *labels, const double *le,
                   const uint64_t *counts, int nb, double sum)
{
    const char *lb = labels != NULL ? labels : "";
    const char *sep = lb[0] ? "," : "";
    uint64_t cum = 0;
    char bound[40];
    for (int i = 0; i <= nb; i++) {
        cum += counts[i];
        if (i < nb)
            svc_prom_decimal(bound, sizeof bound, le[i]);
        else
            strcpy(bound, "+Inf");
        svc_buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, lb, sep, bound,
                       (unsigned long long)cum);
    }
    char metric[160];
    snprintf(metric, sizeof metric, "%s_sum", name);
    svc_prom_sample(b, metric, lb, sum);
    snprintf(metric, sizeof metric, "%s_count", name);
    svc_prom_sample_u64(b, metric, lb, cum);
}

static void render_hist(svc_buf *b, int id)
{
    uint64_t cells[NB_MAX + 1] = {0}, sum = 0;
    int kind = h_kind[id], nb = nbuckets(kind);
    for (int s = 0; s < SLOTS; s++) {
        for (int i = 0; i <= nb; i++)
            cells[i] += atomic_load_explicit(&slots[s].h[id].bucket[i], memory_order_relaxed);
        sum += atomic_load_explicit(&slots[s].h[id].sum, memory_order_relaxed);
    }
    svc_prom_hist(b, h_name[id], h_labels[id], bounds(kind), cells, nb,
                  kind == SVC_HIST_SECONDS ? (double)sum / 1e9 : (double)sum);
}

/* ------------------------------------------------------------------------ */
/* process_* (as the Prometheus client libraries define them), build info,  */
/* health.                                                                   */

/* Reads up to cap - 1 bytes of path into buf, NUL-terminated. Returns the
 * length or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* The boot time in seconds since the epoch ("btime" of /proc/stat); 0 when
 * unknown. Read once: it does not change while the process runs. */
static double boot_time(void)
{
    static _Atomic long long cached = -1;
    long long bt = atomic_load_explicit(&cached, memory_order_relaxed);
    if (bt >= 0)
        return (double)bt;
    bt = 0;
    FILE *f = fopen("/proc/stat", "re");
    if (f != NULL) {
        char line[256];
        /* A long line (intr) comes in pieces; only a line's start can
         * read "btime ". */
        while (fgets(line, sizeof line, f) != NULL)
            if (strncmp(line, "btime ", 6) == 0) {
                bt = strtoll(line + 6, NULL, 10);
                break;
            }
        fclose(f);
    }
    atomic_store_explicit(&cached, bt, memory_order_relaxed);
    return (double)bt;
}

void svc_process_metrics(svc_buf *b)
{
    char st[1024];
    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (ticks <= 0)
        ticks = 100;
    if (page <= 0)
        page = 4096;
    /* /proc/self/stat: the fields after the command name (which may hold
     * spaces and parentheses) start at field 3, state. */
    char *p = read_small("/proc/self/stat", st, sizeof st) > 0 ? strrchr(st, ')') : NULL;
    if (p != NULL) {
        unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
        long long rss = 0;
        /* 3 state .. 13 majflt are skipped, 14 utime 15 stime, 16-21
         * skipped, 22 starttime 23 vsize 24 rss. */
        int n = sscanf(p + 1,
                       " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu"
                       " %*d %*d %*d %*d %*d %*d %llu %llu %lld",
                       &utime, &stime, &start, &vsize, &rss);
        if (n == 5) {
            svc_prom_header(b, "process_cpu_seconds_total", "counter",
                            "Total user and system CPU time spent in seconds.");
            svc_prom_sample(b, "process_cpu_seconds_total", NULL,
                            (double)(utime + stime) / (double)ticks);
            svc_prom_header(b, "process_resident_memory_bytes", "gauge",
                            "Resident memory size in bytes.");
            svc_prom_sample_u64(b, "process_resident_memory_bytes", NULL,
                                (uint64_t)(rss > 0 ? rss : 0) * (uint64_t)page);
            svc_prom_header(b, "process_virtual_memory_bytes", "gauge",
                            "Virtual memory size in bytes.");
            svc_prom_sample_u64(b, "process_virtual_memory_bytes", NULL, vsize);
            svc_prom_header(b, "process_start_time_seconds", "gauge",
                            "Start time of the process since unix epoch in seconds.");
            svc_prom_sample(b, "process_start_time_seconds", NULL,
                            boot_time() + (double)start / (double)ticks);
        }
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        uint64_t fds = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        svc_prom_header(b, "process_open_fds", "gauge", "Number of open file descriptors.");
        svc_prom_sample_u64(b, "process_open_fds", NULL, fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        svc_prom_header(b, "process_max_fds", "gauge",
                        "Maximum number of open file descriptors.");
        if (rl.rlim_cur == RLIM_INFINITY)
            svc_prom_sample(b, "process_max_fds", NULL, INFINITY);
        else
            svc_prom_sample_u64(b, "process_max_fds", NULL, (uint64_t)rl.rlim_cur);
    }
}

/* Appends s as a label value: backslash, double quote and newline escaped. */
static void label_value(svc_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            svc_buf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            svc_buf_append(b, "\\n", 2);
        else
            svc_buf_append(b, s, 1);
    }
}

void svc_build_info_metrics(svc_buf *b)
{
    svc_prom_header(b, "cachesvc_build_info", "gauge",
                    "Always 1; the version and commit the binary was built from.");
    svc_buf_printf(b, "cachesvc_build_info{version=\"");
    label_value(b, CACHESVC_VERSION);
    svc_buf_printf(b, "\",commit=\"");
    label_value(b, CACHESVC_COMMIT);
    svc_buf_printf(b, "\"} 1\n");
}

void svc_health_metrics(svc_buf *b, enum svc_dep store, enum svc_dep redis, enum svc_dep kafka,
                        int ready, int draining)
{
    const struct { const char *name; enum svc_dep st; } deps[] = {
        {"store", store}, {"redis", redis}, {"kafka", kafka}};
    svc_prom_header(b, "cachesvc_dependency_up", "gauge",
                    "1 while the dependency answers, 0 while it is down; no series when it is "
                    "not configured.");
    for (size_t i = 0; i < sizeof deps / sizeof deps[0]; i++) {
        if (deps[i].st == SVC_DEP_ABSENT)
            continue;
        char lb[48];
        snprintf(lb, sizeof lb, "dependency=\"%s\"", deps[i].name);
        svc_prom_sample_u64(b, "cachesvc_dependency_up", lb, deps[i].st == SVC_DEP_UP);
    }
    svc_prom_header(b, "cachesvc_ready", "gauge", "1 when /readyz answers 200.");
    svc_prom_sample_u64(b, "cachesvc_ready", NULL, ready != 0);
    svc_prom_header(b, "cachesvc_draining", "gauge",
                    "1 from SIGTERM on: the process is leaving (/readyz answers 503).");
    svc_prom_sample_u64(b, "cachesvc_draining", NULL, draining != 0);
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
