/*
 * metrics.c: per-thread counter cells and the Prometheus text writer.
 */
#include "kit/metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static __thread int slot_plus1;   /* the thread's slot + 1; 0 until it counts */
static _Atomic int next_slot;

/* Out of line on purpose: a coroutine may resume on another thread, and an
 * inlined thread-local read could reuse the first thread's address
 * (runtime/rt.h). Each call reads the calling thread's own variable. */
__attribute__((noinline)) int kit__slot(void)
{
    int s = slot_plus1;
    if (s > 0)
        return s - 1;
    s = atomic_load_explicit(&next_slot, memory_order_relaxed);
    while (s < KIT_SLOTS - 1 &&
           !atomic_compare_exchange_weak_explicit(&next_slot, &s, s + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    if (s > KIT_SLOTS - 1)
        s = KIT_SLOTS - 1;   /* every owned slot is taken: the shared one */
    slot_plus1 = s + 1;
    return s;
}

uint64_t kit_cells_sum(const kit_cells *c, size_t i)
{
    uint64_t t = 0;
    for (size_t s = 0; s < KIT_SLOTS; s++)
        t += atomic_load_explicit(&c->cell[s * c->stride + i], memory_order_relaxed);
    return t;
}

uint64_t kit_hist_count(const kit_cells *c, size_t first, int nb)
{
    uint64_t t = 0;
    for (int i = 0; i <= nb; i++)
        t += kit_cells_sum(c, first + (size_t)i);
    return t;
}

/* ------------------------------------------------------------------------ */

void kit_prom_header(kit_buf *b, const char *name, const char *type, const char *help)
{
    kit_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* An integral value below 2^53 in plain digits ("100", not "1e+02");
 * otherwise the shortest %g form that reads back as v. Prometheus spells
 * the special values NaN, +Inf and -Inf. */
static void fmt_value(char *buf, size_t cap, double v)
{
    if (isfinite(v) && fabs(v) < 9007199254740992.0 && v == floor(v)) {
        snprintf(buf, cap, "%.0f", v == 0 ? 0.0 : v);   /* no "-0" */
        return;
    }
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

void kit_prom_sample(kit_buf *b, const char *name, const char *labels, double v)
{
    char num[40];
    fmt_value(num, sizeof num, v);
    if (labels != NULL && labels[0] != '\0')
        kit_buf_printf(b, "%s{%s} %s\n", name, labels, num);
    else
        kit_buf_printf(b, "%s %s\n", name, num);
}

void kit_prom_sample_u64(kit_buf *b, const char *name, const char *labels, uint64_t v)
{
    if (labels != NULL && labels[0] != '\0')
        kit_buf_printf(b, "%s{%s} %llu\n", name, labels, (unsigned long long)v);
    else
        kit_buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

size_t kit_prom_decimal(char *buf, size_t cap, double v)
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

void kit_prom_hist(kit_buf *b, const char *name, const char *labels, const double *le,
                   const uint64_t *counts, int nb, double sum)
{
    const char *lb = labels != NULL ? labels : "";
    const char *sep = lb[0] ? "," : "";
    uint64_t cum = 0;
    char bound[40];
    for (int i = 0; i <= nb; i++) {
        cum += counts[i];
        if (i < nb)
            kit_prom_decimal(bound, sizeof bound, le[i]);
        else
            strcpy(bound, "+Inf");
        kit_buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, lb, sep, bound,
                       (unsigned long long)cum);
    }
    char metric[160];
    snprintf(metric, sizeof metric, "%s_sum", name);
    kit_prom_sample(b, metric, lb, sum);
    snprintf(metric, sizeof metric, "%s_count", name);
    kit_prom_sample_u64(b, metric, lb, cum);
}

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

void kit_prom_process(kit_buf *b)
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
            kit_prom_header(b, "process_cpu_seconds_total", "counter",
                            "Total user and system CPU time spent in seconds.");
            kit_prom_sample(b, "process_cpu_seconds_total", NULL,
                            (double)(utime + stime) / (double)ticks);
            kit_prom_header(b, "process_resident_memory_bytes", "gauge",
                            "Resident memory size in bytes.");
            kit_prom_sample_u64(b, "process_resident_memory_bytes", NULL,
                                (uint64_t)(rss > 0 ? rss : 0) * (uint64_t)page);
            kit_prom_header(b, "process_virtual_memory_bytes", "gauge",
                            "Virtual memory size in bytes.");
            kit_prom_sample_u64(b, "process_virtual_memory_bytes", NULL, vsize);
            kit_prom_header(b, "process_start_time_seconds", "gauge",
                            "Start time of the process since unix epoch in seconds.");
            kit_prom_sample(b, "process_start_time_seconds", NULL,
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
        kit_prom_header(b, "process_open_fds", "gauge", "Number of open file descriptors.");
        kit_prom_sample_u64(b, "process_open_fds", NULL, fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        kit_prom_header(b, "process_max_fds", "gauge",
                        "Maximum number of open file descriptors.");
        if (rl.rlim_cur == RLIM_INFINITY)
            kit_prom_sample(b, "process_max_fds", NULL, INFINITY);
        else
            kit_prom_sample_u64(b, "process_max_fds", NULL, (uint64_t)rl.rlim_cur);
    }
}

/* Appends s as a label value: backslash, double quote and newline escaped. */
void kit_prom_label_value(kit_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            kit_buf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            kit_buf_append(b, "\\n", 2);
        else
            kit_buf_append(b, s, 1);
    }
}

void kit_prom_one(kit_buf *b, const char *name, const char *type, const char *help, double v)
{
    kit_buf_printf(b, "# HELP %s %s.\n# TYPE %s %s\n", name, help, name, type);
    kit_prom_sample(b, name, NULL, v);
}

void kit_prom_one_u64(kit_buf *b, const char *name, const char *type, const char *help,
                      uint64_t v)
{
    kit_buf_printf(b, "# HELP %s %s.\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
                   (unsigned long long)v);
}

void kit_prom_list(kit_buf *b, const char *prefix, const char *suffix, const char *type,
                   const char *help_prefix, const kit_metric *m, const uint64_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        kit_buf_printf(b, "# HELP %s%s%s %s%s.\n# TYPE %s%s%s %s\n%s%s%s %llu\n", prefix,
                       m[i].name, suffix, help_prefix, m[i].help, prefix, m[i].name, suffix,
                       type, prefix, m[i].name, suffix, (unsigned long long)v[i]);
}

void kit_prom_hist_cells(kit_buf *b, const char *name, const char *labels, const kit_cells *c,
                         size_t first, const double *le, int nb, double sum_div)
{
    uint64_t counts[nb + 1];
    for (int i = 0; i <= nb; i++)
        counts[i] = kit_cells_sum(c, first + (size_t)i);
    kit_prom_hist(b, name, labels, le, counts, nb,
                  (double)kit_cells_sum(c, first + (size_t)nb + 1) / sum_div);
}
