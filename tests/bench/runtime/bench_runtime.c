/*
 * bench_runtime.c: the runtime's micro-benchmarks, printed as name=value.
 *
 *   switch_ns         one coroutine switch (two coroutines yielding, 1 worker)
 *   chan_pingpong_ns  per switch: two coroutines bouncing a value through
 *                     two capacity-1 channels (default worker count)
 *   spawn_join_ns     rt_spawn + rt_join of an empty coroutine
 *   bytes_per_parked  RSS growth / 100,000 coroutines parked on a channel
 *   steal_spread      share of 10,000 CPU-bound tasks, spawned from one
 *                     coroutine, that ran on the least busy worker
 *
 * switch_ns, chan_pingpong_ns and spawn_join_ns also come as *_cpu_ns: the
 * process CPU time per operation, which a loaded machine inflates much less
 * than wall time. Each figure is the median of several runs.
 * Usage: bench_runtime [runs [only-this-figure]]
 */
#include "runtime/rt.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int runs = 5;
static double last_cpu;   /* CPU ns per operation of the last measurement */

static int64_t cpu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ------------------------------------------------------------------------ */

static void yielder(void *arg)
{
    long n = *(long *)arg;
    for (long i = 0; i < n; i++)
        rt_yield();
}

static double bench_switch(void)
{
    long n = 2000000;
    rt_co *a, *b;
    int64_t t0 = rt_now_ns(), c0 = cpu_now_ns();
    rt_spawn(&a, yielder, &n);
    rt_spawn(&b, yielder, &n);
    rt_join(a);
    rt_join(b);
    last_cpu = (double)(cpu_now_ns() - c0) / (double)(2 * n);
    return (double)(rt_now_ns() - t0) / (double)(2 * n);
}

typedef struct pp { rt_chan *a, *b; long n; } pp;

static void ponger(void *arg)
{
    pp *p = arg;
    long v;
    for (long i = 0; i < p->n; i++) {
        rt_chan_recv(p->a, &v, RT_NO_DEADLINE);
        rt_chan_send(p->b, &v, RT_NO_DEADLINE);
    }
}

static double bench_pingpong(void)
{
    pp p = {rt_chan_new(sizeof(long), 1), rt_chan_new(sizeof(long), 1), 1000000};
    rt_co *c;
    rt_spawn(&c, ponger, &p);
    int64_t t0 = rt_now_ns(), c0 = cpu_now_ns();
    for (long i = 0; i < p.n; i++) {
        long v = i;
        rt_chan_send(p.a, &v, RT_NO_DEADLINE);
        rt_chan_recv(p.b, &v, RT_NO_DEADLINE);
    }
    int64_t el = rt_now_ns() - t0;
    last_cpu = (double)(cpu_now_ns() - c0) / (double)(2 * p.n);
    rt_join(c);
    rt_chan_free(p.a);
    rt_chan_free(p.b);
    return (double)el / (double)(2 * p.n);
}

static void empty_fn(void *arg)
{
    (void)arg;
}

static double bench_spawn_join(void)
{
    long n = 1000000;
    int64_t t0 = rt_now_ns(), c0 = cpu_now_ns();
    for (long i = 0; i < n; i++) {
        rt_co *c;
        rt_spawn(&c, empty_fn, NULL);
        rt_join(c);
    }
    last_cpu = (double)(cpu_now_ns() - c0) / (double)n;
    return (double)(rt_now_ns() - t0) / (double)n;
}

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * sysconf(_SC_PAGESIZE);
}

static void parked(void *arg)
{
    long v;
    rt_chan_recv(arg, &v, RT_NO_DEADLINE);
}

#define PARKED 100000

static double bench_parked(void)
{
    rt_chan *ch = rt_chan_new(sizeof(long), 1);
    rt_co **cs = malloc(PARKED * sizeof *cs);
    long before = rss_bytes();
    for (int i = 0; i < PARKED; i++)
        rt_spawn(&cs[i], parked, ch);
    /* Let every one of them run and park. */
    for (int i = 0; i < 50; i++)
        rt_sleep(2);
    long after = rss_bytes();
    rt_chan_close(ch);
    for (int i = 0; i < PARKED; i++)
        rt_join(cs[i]);
    free(cs);
    rt_chan_free(ch);
    return (double)(after - before) / PARKED;
}

typedef struct spread { atomic_long per[256]; atomic_long done; } spread;

static void cpu_task(void *arg)
{
    spread *s = arg;
    volatile unsigned long x = 0;
    for (int i = 0; i < 20000; i++)
        x += (unsigned long)i * 2654435761u;
    (void)x;
    int w = rt_worker_id();
    if (w >= 0 && w < 256)
        atomic_fetch_add(&s->per[w], 1);
    atomic_fetch_add(&s->done, 1);
}

static double bench_spread(void)
{
    static spread s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < 10000; i++)
        rt_spawn(NULL, cpu_task, &s);
    while (atomic_load(&s.done) < 10000)
        rt_sleep(1);
    long min = 10000;
    for (int w = 0; w < rt_workers(); w++)
        if (atomic_load(&s.per[w]) < min)
            min = atomic_load(&s.per[w]);
    return (double)min / 10000.0;
}

typedef struct job { double (*fn)(void); double out, cpu; } job;

static void run_job(void *arg)
{
    job *j = arg;
    last_cpu = 0;
    j->out = j->fn();
    j->cpu = last_cpu;
}

static double median_cpu;

/* Runs fn on a fresh runtime of `workers` workers, median of `runs`. */
static double measure(int workers, double (*fn)(void))
{
    double v[64], c[64];
    for (int r = 0; r < runs; r++) {
        rt_config cfg = {.workers = workers, .hog_threshold_ms = -1};
        job j = {fn, 0, 0};
        if (rt_main(&cfg, run_job, &j) != 0) {
            fprintf(stderr, "bench_runtime: runtime failed to start\n");
            exit(1);
        }
        v[r] = j.out;
        c[r] = j.cpu;
    }
    median_cpu = median(c, runs);
    return median(v, runs);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        runs = atoi(argv[1]);
    if (runs < 1 || runs > 64)
        runs = 5;
    const char *only = argc > 2 ? argv[2] : "";
#define RUN(name, workers, fn, fmt)                              \
    if (!*only || strcmp(only, name) == 0) {                     \
        printf(name "=" fmt "\n", measure(workers, fn));        \
        if (median_cpu > 0)                                      \
            printf(name "_cpu=%.1f\n", median_cpu);              \
    }
    RUN("switch_ns", 1, bench_switch, "%.1f");
    RUN("chan_pingpong_ns", 0, bench_pingpong, "%.1f");
    RUN("spawn_join_ns", 0, bench_spawn_join, "%.1f");
    RUN("bytes_per_parked", 0, bench_parked, "%.0f");
    RUN("steal_spread", 0, bench_spread, "%.3f");
    return 0;
}
