/*
 * log.c: logfmt lines, one write(2) each; the runtime's log handler; the
 * rate limit of repeated lines.
 */
#include "cachesvc/log.h"
#include "kit/kit.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/rt.h"   /* rt_log.h: the hook this logger serves */

_Static_assert((int)SVC_LOG_DEBUG == (int)RT_LOG_DEBUG && (int)SVC_LOG_INFO == (int)RT_LOG_INFO &&
                   (int)SVC_LOG_WARN == (int)RT_LOG_WARN && (int)SVC_LOG_ERROR == (int)RT_LOG_ERROR,
               "the service's levels are the runtime's");

#define LINE_MAX_ 2048
#define WINDOW_NS 1000000000LL   /* the rate limit's second */
#define NSITES 512
#define SITE_MODULE 16
#define SITE_MSG 112

static atomic_int log_fd = 2;
static _Atomic(svc_log_reqid_fn) log_reqid;
static atomic_int log_burst = 5;
static _Atomic(int64_t (*)(void)) log_clock;

void svc_log_set_level(int level)
{
    rt_log_set_level(level);   /* one level for every module's lines */
}

int svc_log_get_level(void)
{
    return rt_log_get_level();
}

void svc_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

void svc_log_set_reqid_source(svc_log_reqid_fn fn)
{
    atomic_store(&log_reqid, fn);
}

void svc_log_set_burst(int lines_per_second)
{
    atomic_store(&log_burst, lines_per_second < 0 ? 0 : lines_per_second);
}

void svc__log_set_clock(int64_t (*now_ns)(void))
{
    atomic_store(&log_clock, now_ns);
}

static int64_t now_ns(void)
{
    int64_t (*fn)(void) = atomic_load_explicit(&log_clock, memory_order_relaxed);
    if (fn != NULL)
        return fn();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void write_line(const char *line, size_t n)
{
    ssize_t w = write(atomic_load_explicit(&log_fd, memory_order_relaxed), line, n);
    (void)w;
}

/* ------------------------------------------------------------------------ */
/* Rate limit                                                                */

/* One site's second: how many lines it wrote, how many it suppressed, and
 * (for the summary line) the level, module and message of the line that
 * opened it. A tiny spin lock guards it: held for a few stores and a copy
 * of at most 128 bytes, never across a write. */
typedef struct log_site {
    atomic_int lock;
    uint64_t key;
    int64_t start;        /* monotonic ns the second began; 0 = never */
    uint32_t written;
    uint64_t suppressed;
    int level;
    char module[SITE_MODULE];
    char msg[SITE_MSG];
} log_site;

static log_site sites[NSITES];

/* A count to write as a summary line, copied out of its site. */
typedef struct log_summary {
    uint64_t n;
    int level;
    char module[SITE_MODULE];
    char msg[SITE_MSG];
} log_summary;

static void site_lock(log_site *s)
{
    int spins = 0;
    while (atomic_exchange_explicit(&s->lock, 1, memory_order_acquire) != 0) {
        if (++spins > 64) {
            sched_yield();
            spins = 0;
        }
    }
}

static void site_unlock(log_site *s)
{
    atomic_store_explicit(&s->lock, 0, memory_order_release);
}

/* FNV-1a of module and msg with the digits left out, so a message that
 * carries a number (librdkafka's "after 12ms") is one site. */
static uint64_t site_key(const char *module, const char *msg)
{
    uint64_t h = kit_hash_more(kit_hash(module, strlen(module)), "\xff", 1);
    for (const char *p = msg; *p; p++)
        if (*p < '0' || *p > '9')
            h = kit_hash_more(h, p, 1);
    return h;
}

static void copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Takes the site's suppressed count into *sum (n = 0 when none). Called
 * with the site locked. */
static void do_take_summary(log_site *s, log_summary *sum)
{
    sum->n = s->suppressed;
    if (s->suppressed == 0)
        return;
    sum->level = s->level;
    memcpy(sum->module, s->module, sizeof sum->module);
    memcpy(sum->msg, s->msg, sizeof sum->msg);
    s->suppressed = 0;
}

static void write_summary(const log_summary *sum)
{
    char line[LINE_MAX_], kv[32];
    snprintf(kv, sizeof kv, "suppressed=%llu", (unsigned long long)sum->n);
    size_t n = rt_log_format_line(line, sizeof line, sum->level, sum->module, sum->msg, "", kv);
    write_line(line, n);
}

/* Decides whether a line of (module, msg) at level is written now: 1 if
 * it is, 0 if it is counted instead. *sum receives the count of the
 * site's previous second when this line opens a new one. */
static int limit(int level, const char *module, const char *msg, int burst, log_summary *sum)
{
    uint64_t key = site_key(module, msg);
    log_site *s = &sites[key % NSITES];
    int64_t now = now_ns();
    int pass;
    sum->n = 0;
    site_lock(s);
    if (s->start == 0 || now - s->start >= WINDOW_NS) {
        do_take_summary(s, sum);
        s->key = key;
        s->start = now != 0 ? now : 1;
        s->written = 0;
        s->level = level;
        copy_cut(s->module, sizeof s->module, module);
        copy_cut(s->msg, sizeof s->msg, msg);
    }
    /* A different key here (a collision) shares this second's budget. */
    if (s->written < (uint32_t)burst) {
        s->written++;
        pass = 1;
    } else {
        s->suppressed++;
        pass = 0;
    }
    site_unlock(s);
    return pass;
}

static void flush_sites(int only_ended)
{
    int64_t now = now_ns();
    for (int i = 0; i < NSITES; i++) {
        log_site *s = &sites[i];
        log_summary sum = {.n = 0};
        site_lock(s);
        if (s->suppressed > 0 && (!only_ended || now - s->start >= WINDOW_NS))
            do_take_summary(s, &sum);
        site_unlock(s);
        if (sum.n > 0)
            write_summary(&sum);
    }
}

void svc_log_tick(void)
{
    flush_sites(1);
}

void svc_log_flush(void)
{
    flush_sites(0);
}

/* ------------------------------------------------------------------------ */
/* Lines                                                                     */

/* Writes one line (the level already checked): the request id resolved,
 * the rate limit applied, the line built and redacted by the runtime's
 * formatter. */
static void emit(int level, const char *module, const char *reqid, const char *msg,
                 const char *kv)
{
    int burst = atomic_load_explicit(&log_burst, memory_order_relaxed);
    if (burst > 0 && level > SVC_LOG_DEBUG) {
        log_summary sum;
        int pass = limit(level, module, msg, burst, &sum);
        if (sum.n > 0)
            write_summary(&sum);
        if (!pass)
            return;
    }
    char idbuf[96];
    svc_log_reqid_fn idfn;
    if (reqid == NULL && (idfn = atomic_load_explicit(&log_reqid, memory_order_relaxed)) != NULL &&
        idfn(idbuf, sizeof idbuf) > 0)
        reqid = idbuf;
    char line[LINE_MAX_];
    size_t n = rt_log_format_line(line, sizeof line, level, module, msg, reqid, kv);
    write_line(line, n);
}

void svc_log(int level, const char *reqid, const char *msg, const char *fmt, ...)
{
    if (level < svc_log_get_level())
        return;
    char kv[1024];
    kv[0] = '\0';
    if (fmt != NULL && fmt[0] != '\0') {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(kv, sizeof kv, fmt, ap);
        va_end(ap);
        if (n < 0)
            kv[0] = '\0';
    }
    emit(level, "", reqid, msg ? msg : "", kv);
}

/* The runtime's handler: every module's line, from any thread. */
static void rt_handler(void *arg, int level, const char *module, const char *msg,
                       const char *kv)
{
    (void)arg;
    emit(level, module, NULL, msg, kv);
}

static void *tick_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = {0, 500 * 1000000L};
        nanosleep(&ts, NULL);
        svc_log_tick();
    }
    return NULL;
}

static void install_once(void)
{
    rt_log_set_handler(rt_handler, NULL);
    atexit(svc_log_flush);
    /* The tick thread takes no signal: the service reads its signals from a
     * signalfd, with the signals blocked in every thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 64 * 1024);
    if (pthread_create(&t, &at, tick_main, NULL) != 0)
        svc_log(SVC_LOG_WARN, "", "log tick thread not started; suppressed counts are "
                "written when their site logs again or at exit", NULL);
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void svc_log_install(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_once);
}
