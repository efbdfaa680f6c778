/*
 * memserver.c: http-memserver, the HTTP server over the in-memory service
 * (memservice.h), for api/'s integration tests, the HTTP benchmark and
 * flashsale's own tests. SIGTERM or SIGINT drains gracefully and exits 0
 * (after --drain-grace-ms of answering /readyz 503 "draining"). SIGHUP
 * reads the admin token again from --admin-token-file; SIGUSR1 toggles a
 * store outage (every service call fails 503 unavailable), for the contract
 * tests. --wrong-audit, --unknown-every and --stale-ms are the faults a
 * load tester's verification must catch or survive.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "api/http.h"
#include "runtime/rt.h"
#include "tests/support/memservice.h"

typedef struct opts {
    http_server_config cfg;
    int workers;
    int64_t drain_ms;
    int64_t drain_grace_ms;
    int64_t retry_after_s;
    http_dep_state redis, kafka;
    const char *wrong_audit;
    int64_t unknown_every;
    int64_t stale_ms;            /* -1 = reads are never stale */
    const char *token_file;
    const char *port_file;
    char **items;
    int nitems;
    int sigfd;
    int rc;
} opts;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: http-memserver [options]\n"
        "  --host ADDR              listen address (127.0.0.1)\n"
        "  --port N                 port, 0 = any (8080)\n"
        "  --workers N              runtime workers, 0 = CPUs (0)\n"
        "  --acceptors N            SO_REUSEPORT listeners, 0 = workers (0)\n"
        "  --admin-token T          Bearer token for admin routes (none: 403)\n"
        "  --max-conns N            connection cap, then 503 (10000)\n"
        "  --max-uri N              request line bytes, then 414 (2048)\n"
        "  --max-headers N          header bytes, then 431 (8192)\n"
        "  --max-body N             body bytes, then 413 (65536)\n"
        "  --idle-timeout-ms N      keep-alive idle timeout (60000)\n"
        "  --header-timeout-ms N    deadline for a request's headers (10000)\n"
        "  --body-timeout-ms N      deadline for a request's body (10000)\n"
        "  --drain-ms N             graceful stop deadline on SIGTERM (5000)\n"
        "  --drain-grace-ms N       on SIGTERM, answer /readyz 503 draining this\n"
        "                           long before the stop begins (0)\n"
        "  --admin-token-file F     read the admin token from F (first line), and\n"
        "                           again on SIGHUP\n"
        "  --ready-redis STATE      what /readyz reports for Redis: up|down|none (none)\n"
        "  --ready-kafka STATE      the same for Kafka (none)\n"
        "  --retry-after-s N        Retry-After of a decrement during a SIGUSR1\n"
        "                           outage (0 = the server's default, 1)\n"
        "  --item SKU:STOCK[:LIMIT] create an item (repeatable; default hot:1000000000)\n"
        "  --port-file F            write the bound port to F once listening\n"
        "  --wrong-audit MODE       audits lie: oversell|lost|dup|limit|ledger\n"
        "  --unknown-every N        every Nth order made answers 503 outcome_unknown\n"
        "  --stale-ms N             reads return the item as it was N ms ago (the\n"
        "                           invalidation delay, which PUT /admin/config sets)\n");
}

/* Reads the first line of path (surrounding whitespace dropped) into buf.
 * Returns 0 or a negative errno. */
static int read_token(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -errno;
    if (fgets(buf, (int)cap, f) == NULL)
        buf[0] = 0;
    fclose(f);
    size_t n = strlen(buf);
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        buf[--n] = 0;
    size_t i = 0;
    while (isspace((unsigned char)buf[i]))
        i++;
    memmove(buf, buf + i, n - i + 1);
    return 0;
}

static int dep_state(const char *s, http_dep_state *out)
{
    if (strcmp(s, "up") == 0)
        *out = HTTP_DEP_UP;
    else if (strcmp(s, "down") == 0)
        *out = HTTP_DEP_DOWN;
    else if (strcmp(s, "none") == 0)
        *out = HTTP_DEP_NONE;
    else
        return -1;
    return 0;
}

static void serve(void *arg)
{
    opts *o = arg;
    http_service *svc = http_memservice_new();
    http_server *srv = NULL;
    if (svc == NULL) {
        o->rc = 1;
        return;
    }
    for (int i = 0; i < o->nitems; i++) {
        char sku[128];
        long long stock = 0, limit = 0;
        if (sscanf(o->items[i], "%127[^:]:%lld:%lld", sku, &stock, &limit) < 2 ||
            http_memservice_put(svc, sku, stock, limit, 0) < 0) {
            fprintf(stderr, "http-memserver: bad --item %s\n", o->items[i]);
            o->rc = 2;
            goto out;
        }
    }
    if (o->nitems == 0)
        http_memservice_put(svc, "hot", 1000000000LL, 0, 0);
    http_memservice_set_ready(svc, o->redis, o->kafka, 0);
    http_memservice_retry_after(svc, o->retry_after_s);
    http_memservice_unknown_every(svc, o->unknown_every);
    if (http_memservice_audit_lie(svc, o->wrong_audit) < 0) {
        fprintf(stderr, "http-memserver: bad --wrong-audit %s\n", o->wrong_audit);
        o->rc = 2;
        goto out;
    }
    if (o->stale_ms >= 0) {
        http_config_values cv;
        http_memservice_stale_reads(svc, 1);
        svc->put_config(svc->ctx, &(http_config_update){.has_invalidation_delay_ms = 1,
                                                        .invalidation_delay_ms = o->stale_ms},
                        &cv);
    }
    char token[512];
    if (o->token_file) {
        int tr = read_token(o->token_file, token, sizeof token);
        if (tr < 0) {
            fprintf(stderr, "http-memserver: %s: %s\n", o->token_file, strerror(-tr));
            o->rc = 2;
            goto out;
        }
        o->cfg.admin_token = token;
    }
    int rc = http_server_start(&o->cfg, svc, &srv);
    if (rc < 0) {
        fprintf(stderr, "http-memserver: listen %s:%d: %s\n", o->cfg.host,
                o->cfg.port, http_strerror(rc));
        o->rc = 1;
        goto out;
    }
    printf("http-memserver listening on %s:%d\n", o->cfg.host,
           http_server_port(srv));
    fflush(stdout);
    if (o->port_file) {
        FILE *f = fopen(o->port_file, "w");
        if (f) {
            fprintf(f, "%d\n", http_server_port(srv));
            fclose(f);
        }
    }
    int outage = 0;
    if (rt_fd_register(o->sigfd) == 0) {
        struct signalfd_siginfo si;
        while (rt_read(o->sigfd, &si, sizeof si, RT_NO_DEADLINE) == (ssize_t)sizeof si) {
            if (si.ssi_signo == SIGHUP && o->token_file) {
                int tr = read_token(o->token_file, token, sizeof token);
                if (tr == 0)
                    tr = http_server_set_admin_token(srv, token);
                fprintf(stderr, "http-memserver: admin token %s%s\n",
                        tr == 0 ? "reloaded" : "kept: ", tr == 0 ? "" : http_strerror(tr));
            } else if (si.ssi_signo == SIGUSR1) {
                outage = !outage;
                http_memservice_fail(svc, outage ? HTTP_E_UNAVAILABLE : 0);
            } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
                break;
            }
        }
    }
    if (o->drain_grace_ms > 0) {
        http_memservice_set_ready(svc, o->redis, o->kafka, 1);
        rt_sleep(o->drain_grace_ms);
    }
    rc = http_server_stop(srv, rt_deadline_ms(o->drain_ms));
    fprintf(stderr, "http-memserver: stopped%s\n",
            rc == -ETIMEDOUT ? " (drain deadline passed)" : "");
out:
    http_memservice_free(svc);
}

int main(int argc, char **argv)
{
    static opts o;
    http_server_config_defaults(&o.cfg);
    o.cfg.port = 8080;
    o.drain_ms = 5000;
    o.redis = o.kafka = HTTP_DEP_NONE;
    o.stale_ms = -1;
    o.items = calloc((size_t)argc, sizeof *o.items);
    enum { O_HOST = 256, O_PORT, O_WORKERS, O_ACCEPTORS, O_TOKEN, O_CONNS,
           O_URI, O_HDRS, O_BODY, O_IDLE, O_HTO, O_BTO, O_DRAIN, O_ITEM,
           O_PORTFILE, O_GRACE, O_TOKENFILE, O_REDIS, O_KAFKA, O_RETRY, O_AUDIT,
           O_UNKNOWN, O_STALE, O_HELP };
    static const struct option lo[] = {
        {"host", 1, 0, O_HOST}, {"port", 1, 0, O_PORT},
        {"workers", 1, 0, O_WORKERS}, {"acceptors", 1, 0, O_ACCEPTORS},
        {"admin-token", 1, 0, O_TOKEN}, {"max-conns", 1, 0, O_CONNS},
        {"max-uri", 1, 0, O_URI}, {"max-headers", 1, 0, O_HDRS},
        {"max-body", 1, 0, O_BODY}, {"idle-timeout-ms", 1, 0, O_IDLE},
        {"header-timeout-ms", 1, 0, O_HTO}, {"body-timeout-ms", 1, 0, O_BTO},
        {"drain-ms", 1, 0, O_DRAIN}, {"item", 1, 0, O_ITEM},
        {"port-file", 1, 0, O_PORTFILE}, {"drain-grace-ms", 1, 0, O_GRACE},
        {"admin-token-file", 1, 0, O_TOKENFILE}, {"ready-redis", 1, 0, O_REDIS},
        {"ready-kafka", 1, 0, O_KAFKA}, {"retry-after-s", 1, 0, O_RETRY},
        {"wrong-audit", 1, 0, O_AUDIT}, {"unknown-every", 1, 0, O_UNKNOWN},
        {"stale-ms", 1, 0, O_STALE}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case O_HOST: o.cfg.host = optarg; break;
        case O_PORT: o.cfg.port = atoi(optarg); break;
        case O_WORKERS: o.workers = atoi(optarg); break;
        case O_ACCEPTORS: o.cfg.acceptors = atoi(optarg); break;
        case O_TOKEN: o.cfg.admin_token = optarg; break;
        case O_CONNS: o.cfg.max_conns = atoi(optarg); break;
        case O_URI: o.cfg.max_uri = strtoul(optarg, NULL, 10); break;
        case O_HDRS: o.cfg.max_headers = strtoul(optarg, NULL, 10); break;
        case O_BODY: o.cfg.max_body = strtoul(optarg, NULL, 10); break;
        case O_IDLE: o.cfg.idle_timeout_ms = atoll(optarg); break;
        case O_HTO: o.cfg.header_timeout_ms = atoll(optarg); break;
        case O_BTO: o.cfg.body_timeout_ms = atoll(optarg); break;
        case O_DRAIN: o.drain_ms = atoll(optarg); break;
        case O_ITEM: o.items[o.nitems++] = optarg; break;
        case O_PORTFILE: o.port_file = optarg; break;
        case O_GRACE: o.drain_grace_ms = atoll(optarg); break;
        case O_TOKENFILE: o.token_file = optarg; break;
        case O_REDIS:
        case O_KAFKA:
            if (dep_state(optarg, ch == O_REDIS ? &o.redis : &o.kafka) < 0) {
                fprintf(stderr, "http-memserver: %s: up, down or none\n", optarg);
                free(o.items);
                return 2;
            }
            break;
        case O_RETRY: o.retry_after_s = atoll(optarg); break;
        case O_AUDIT: o.wrong_audit = optarg; break;
        case O_UNKNOWN: o.unknown_every = atoll(optarg); break;
        case O_STALE: o.stale_ms = atoll(optarg); break;
        case O_HELP: usage(stdout); free(o.items); return 0;
        default: usage(stderr); free(o.items); return 2;
        }
    }
    /* Block the stop signals in every thread (workers inherit the mask);
     * a coroutine reads them from a signalfd. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    o.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (o.sigfd < 0) {
        perror("signalfd");
        free(o.items);
        return 1;
    }
    rt_config rc = {.workers = o.workers};
    int r = rt_main(&rc, serve, &o);
    free(o.items);
    if (r < 0) {
        fprintf(stderr, "http-memserver: runtime: %s\n", http_strerror(r));
        return 1;
    }
    return o.rc;
}
