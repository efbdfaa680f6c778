/*
 * main.c: the cachesvc binary.
 *
 * Start: configuration (file, environment, flags; --help), then the runtime,
 * then svc_open (store, Redis, local cache, invalidator), then the HTTP
 * server. Signals are blocked in every thread and read from a signalfd on
 * the runtime's netpoll by the main coroutine:
 *   SIGHUP          re-reads the configuration the same way it was read at
 *                   start and applies the run-time settings (invalidation
 *                   delay, local TTL, log level); a bad file keeps the old
 *                   settings and logs why;
 *   SIGTERM/SIGINT  drain: the server stops accepting, finishes requests in
 *                   flight within server.drain_timeout_ms, then the
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
#include "cachesvc/service.h"

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

struct app {
    int argc;
    char **argv;
    svc_config cfg;
    sigset_t mask;
    int exit_code;
    _Atomic int drained;       /* every request in flight was answered */
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

/* The server binds with SO_REUSEPORT, which would let a second instance
 * share a port silently. A plain bind fails on any socket bound there:
 * returns 0 when the address is free, or a negative errno. */
static int port_free(const char *host, int port)
{
    if (port == 0)
        return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return 0;   /* not IPv4: let the server report */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int one = 1, r = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        r = -EADDRINUSE;
    close(fd);
    return r;
}

static void reload(struct app *a, svc *s)
{
    svc_config next;
    char err[512];
    int r = svc_config_load(&next, a->argc, a->argv, NULL, NULL, err, sizeof err);
    if (r < 0) {
        svc_metric_inc(SVC_C_RELOAD_ERROR);
        SVC_ERROR(NULL, "reload refused; keeping the running settings", "err=\"%s\"", err);
        return;
    }
    svc_metric_inc(SVC_C_RELOAD_OK);
    svc_apply_runtime(s, &next);
}

static void app_main(void *arg)
{
    struct app *a = arg;
    svc *s = NULL;
    http_server *srv = NULL;
    int sfd = -1, r;

    const char *host = a->cfg.listen_host[0] ? a->cfg.listen_host : "0.0.0.0";
    if ((r = port_free(host, a->cfg.listen_port)) < 0) {
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

    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = rt_read(sfd, &si, sizeof si, RT_NO_DEADLINE);
        if (n == -ECANCELED)
            break;
        if (n != (ssize_t)sizeof si)
            continue;
        if (si.ssi_signo == SIGHUP) {
            SVC_INFO(NULL, "SIGHUP: reloading configuration", NULL);
            reload(a, s);
            continue;
        }
        SVC_INFO(NULL, "draining", "signal=%s deadline_ms=%d",
                 si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT", a->cfg.drain_timeout_ms);
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
    int help = 0;
    int r = svc_config_load(&a.cfg, argc, argv, NULL, &help, err, sizeof err);
    if (help) {
        svc_config_help(stdout, argv[0]);
        return 0;
    }
    if (r < 0) {
        fprintf(stderr, "cachesvc: %s\n", err);
        return 2;
    }
    a.argc = argc;
    a.argv = argv;
    svc_log_set_level(a.cfg.log_level);

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
