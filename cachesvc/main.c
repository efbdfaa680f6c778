/*
 * main.c: the cachesvc binary.
 *
 * Start: configuration (file, environment, flags; --help, --version,
 * --check-config, --print-config), then the runtime, then svc_open (store,
 * Redis, local cache, invalidator), then the HTTP server. Signals are
 * blocked in every thread and read from a signalfd on the runtime's netpoll
 * by the main coroutine:
 *   SIGHUP          re-reads the configuration the same way it was read at
 *                   start, applies every run-time key the sources changed
 *                   (svc_apply_runtime; the admin token here) and logs by
 *                   name each other key that changed (it needs a restart);
 *                   a bad file keeps the running settings and logs why;
 *   SIGTERM/SIGINT  lame duck, then drain: /readyz answers 503 draining
 *                   while the listener keeps serving for
 *                   server.shutdown_delay_ms (a second signal cuts it
 *                   short), then the server stops accepting, finishes
 *                   requests in flight within server.drain_timeout_ms, the
 *                   invalidator hands its outbox to Kafka, the components
 *                   close and the process exits 0. A watchdog thread ends
 *                   the process if closing takes longer than the deadline
 *                   plus a grace period.
 * Exit codes: 0 clean stop, 1 a dependency failed at start, 2 bad
 * configuration.
 */
#include "cachesvc/config.h"
#include "cachesvc/log.h"
#include "cachesvc/metrics.h"
#include "cachesvc/sd_notify.h"
#include "cachesvc/service.h"
#include "cachesvc_version.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#if defined(CACHESVC_JEMALLOC)
/* jemalloc's options, read at its start (MALLOC_CONF in the environment
 * still overrides them). Memory freed after a burst (connections that
 * closed, their requests' buffers) goes back to the kernel within a few
 * seconds from jemalloc's own thread; without it, pages stay resident
 * until later allocations happen to purge them. */
const char *malloc_conf = "background_thread:true,dirty_decay_ms:2000";
#endif

struct app {
    int argc;
    char **argv;
    svc_config cfg;            /* as loaded at start */
    svc_config ref;            /* what SIGHUP compares with: the start's
                                * static keys, the last load's run-time ones */
    sigset_t mask;
    int exit_code;
    _Atomic int drained;       /* every request in flight was answered */
    int64_t sd_watchdog_usec;  /* systemd's WATCHDOG_USEC; 0 = no watchdog */
};

static void *watchdog(void *arg)
{
    struct app *a = arg;
    struct timespec ts = {
        .tv_sec = a->cfg.drain_timeout_ms / 1000 + 5,
        .tv_nsec = (a->cfg.drain_timeout_ms % 1000) * 1000000L,
    };
    nanosleep(&ts, NULL);
    int code = atomic_load(&a->drained) ? 0 : 1;
    SVC_ERROR(NULL, "shutdown took too long; exiting", "code=%d", code);
    _exit(code);
    return NULL;
}

static void reload(struct app *a, svc *s, http_server *srv)
{
    svc_config *next = svc_config_reload(a->argc, a->argv);
    int r;
    if (next == NULL)
        return;
    if (strcmp(a->ref.admin_token, next->admin_token) != 0 &&
        (r = http_server_set_admin_token(srv, next->admin_token)) < 0) {
        svc_metric_inc(SVC_C_RELOAD_ERROR);
        SVC_ERROR(NULL, "reload refused: the admin token could not be replaced",
                  "err=\"%s\"", http_strerror(r));
        free(next);
        return;
    }
    svc_apply_runtime(s, &a->ref, next);
    svc_config_reload_done(&a->ref, next);
}

/* The lame-duck period: /readyz already answers 503 draining; requests are
 * still served for server.shutdown_delay_ms so that load balancers see the
 * 503 and stop sending before the listener closes. A second SIGTERM or
 * SIGINT ends it at once; a SIGHUP meanwhile is ignored. */
static void lame_duck(struct app *a, int sfd)
{
    if (a->cfg.shutdown_delay_ms <= 0)
        return;
    SVC_INFO(NULL, "lame duck: /readyz answers 503, requests are still served",
             "ms=%d", a->cfg.shutdown_delay_ms);
    int64_t end = rt_deadline_ms(a->cfg.shutdown_delay_ms);
    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = rt_read(sfd, &si, sizeof si, end);
        if (n != (ssize_t)sizeof si)
            return;   /* the deadline (or the runtime stopping) */
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            SVC_INFO(NULL, "lame duck cut short by a second signal", NULL);
            return;
        }
    }
}

/* systemd's watchdog (WatchdogSec=): WATCHDOG=1 every half of the interval
 * it asked for, sent from a coroutine, so a runtime that stops scheduling
 * coroutines stops pinging and systemd aborts and restarts the process.
 * Ends when the runtime shuts down (rt_sleep answers -ECANCELED). */
static void sd_watchdog(void *arg)
{
    int64_t half_ms = *(const int64_t *)arg / 2000;
    if (half_ms < 1)
        half_ms = 1;
    do
        svc_sd_notify("WATCHDOG=1");
    while (rt_sleep(half_ms) == 0);
}

static void app_main(void *arg)
{
    struct app *a = arg;
    svc *s = NULL;
    http_server *srv = NULL;
    int sfd = -1, r;

    const char *host = a->cfg.listen_host[0] ? a->cfg.listen_host : "0.0.0.0";
    if ((r = http_port_free(host, a->cfg.listen_port)) < 0) {
        SVC_ERROR(NULL, "cannot listen", "listen=%s err=\"%s\"", a->cfg.listen, strerror(-r));
        a->exit_code = 1;
        return;
    }
    if ((r = svc_open(&a->cfg, &s)) < 0) {
        a->exit_code = 1;
        return;
    }
    http_server_config hc;
    http_server_config_defaults(&hc);
    hc.host = host;
    hc.port = a->cfg.listen_port;
    hc.admin_token = a->cfg.admin_token;
    hc.max_conns = a->cfg.max_connections;
    hc.idle_timeout_ms = a->cfg.idle_timeout_ms;
    hc.header_timeout_ms = a->cfg.header_timeout_ms;
    if ((r = http_server_start(&hc, &s->api, &srv)) < 0) {
        SVC_ERROR(NULL, "cannot listen", "listen=%s err=\"%s\"", a->cfg.listen, http_strerror(r));
        svc_close(s, 0);
        a->exit_code = 1;
        return;
    }
    sfd = signalfd(-1, &a->mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0 || rt_fd_register(sfd) < 0) {
        SVC_ERROR(NULL, "signalfd failed", NULL);
        a->exit_code = 1;
        goto stop;
    }
    SVC_INFO(NULL, "listening", "addr=%s port=%d workers=%d pid=%ld", hc.host,
             http_server_port(srv), rt_workers(), (long)getpid());
    /* Type=notify: started once it listens. A no-op outside systemd. */
    svc_sd_notifyf("READY=1\nSTATUS=serving on %s:%d", hc.host, http_server_port(srv));
    a->sd_watchdog_usec = svc_sd_watchdog_usec();
    if (a->sd_watchdog_usec > 0 && rt_spawn(NULL, sd_watchdog, &a->sd_watchdog_usec) < 0)
        SVC_WARN(NULL, "systemd watchdog pings not started", NULL);
    else if (a->sd_watchdog_usec < 0)
        SVC_WARN(NULL, "WATCHDOG_USEC or WATCHDOG_PID is not a number; no watchdog pings", NULL);

    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = rt_read(sfd, &si, sizeof si, RT_NO_DEADLINE);
        if (n == -ECANCELED)
            break;
        if (n != (ssize_t)sizeof si)
            continue;
        if (si.ssi_signo == SIGHUP) {
            SVC_INFO(NULL, "SIGHUP: reloading configuration", NULL);
            svc_sd_notify_reloading();
            reload(a, s, srv);
            svc_sd_notify("READY=1");
            continue;
        }
        SVC_INFO(NULL, "stopping", "signal=%s shutdown_delay_ms=%d drain_timeout_ms=%d",
                 si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT", a->cfg.shutdown_delay_ms,
                 a->cfg.drain_timeout_ms);
        svc_sd_notify("STOPPING=1\nSTATUS=stopping: lame duck, then drain");
        atomic_store(&s->draining, 1);
        lame_duck(a, sfd);
        SVC_INFO(NULL, "draining", "deadline_ms=%d", a->cfg.drain_timeout_ms);
        break;
    }
    a->exit_code = 0;
stop: ;
    pthread_t wd;
    if (pthread_create(&wd, NULL, watchdog, a) == 0)
        pthread_detach(wd);
    int64_t t0 = rt_now_ns();
    atomic_store(&s->draining, 1);
    r = http_server_stop(srv, t0 + (int64_t)a->cfg.drain_timeout_ms * 1000000);
    if (r == 0)
        atomic_store(&a->drained, 1);
    else
        SVC_WARN(NULL, "connections cut at the drain deadline", NULL);
    SVC_INFO(NULL, "server drained", "ms=%lld", (long long)((rt_now_ns() - t0) / 1000000));
    int64_t left_ms = a->cfg.drain_timeout_ms - (rt_now_ns() - t0) / 1000000;
    svc_close(s, left_ms > 100 ? (int)left_ms : 100);
    if (sfd >= 0)
        rt_close(sfd);
    SVC_INFO(NULL, "stopped", "drain_ms=%lld", (long long)((rt_now_ns() - t0) / 1000000));
}

int main(int argc, char **argv)
{
    static struct app a;
    char err[512];
    int act = svc_config_action(argc, argv);
    if (act == SVC_ACT_HELP) {
        svc_config_help(stdout, argv[0]);
        return 0;
    }
    if (act == SVC_ACT_VERSION) {
        printf("cachesvc %s (%s)\n", CACHESVC_VERSION, CACHESVC_COMMIT);
        return 0;
    }
    int r = svc_config_load(&a.cfg, argc, argv, NULL, NULL, err, sizeof err);
    if (r < 0) {
        fprintf(stderr, "cachesvc: %s\n", err);
        return 2;
    }
    if ((r = svc_config_finish_action("cachesvc", act, &a.cfg)) >= 0)
        return r;
    a.argc = argc;
    a.argv = argv;
    a.ref = a.cfg;
    svc_log_set_level(a.cfg.log_level);
    SVC_INFO(NULL, "starting", "version=%s commit=%s pid=%ld config=\"%s\"", CACHESVC_VERSION,
             CACHESVC_COMMIT, (long)getpid(), a.cfg.path);

    /* Blocked here, before the runtime starts its threads, so every thread
     * inherits the mask and the signals are only ever read from the fd. */
    sigemptyset(&a.mask);
    sigaddset(&a.mask, SIGHUP);
    sigaddset(&a.mask, SIGTERM);
    sigaddset(&a.mask, SIGINT);
    pthread_sigmask(SIG_BLOCK, &a.mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    rt_config rc = {.workers = a.cfg.workers};
    r = rt_main(&rc, app_main, &a);
    if (r < 0) {
        SVC_ERROR(NULL, "runtime did not start", "err=\"%s\"", rt_strerror(r));
        return 1;
    }
    SVC_DEBUG(NULL, "runtime stopped; exiting", "code=%d", a.exit_code);
    return a.exit_code;
}
