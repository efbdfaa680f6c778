/*
 * service_client: a small HTTP/1.1 keep-alive client for the service's
 * integration tests (plain sockets and threads, no runtime).
 *
 *   service_client decr ADDRS SKU N CONC [PREFIX]
 *       Sends N POST /v1/items/SKU/decrement (qty 1, user PREFIX<i>, key
 *       PREFIX<i>) over CONC keep-alive connections spread over the
 *       comma-separated ADDRS (host:port). Prints "status_<code>=<count>"
 *       lines and "errors=<n>" (transport failures). Exit 0 unless a
 *       transport error happened.
 *   service_client wait ADDR SKU VERSION TIMEOUT_MS
 *       Polls GET /v1/items/SKU until the answer's version >= VERSION;
 *       prints "waited_us=<n>" and exits 0, or exits 1 at the timeout.
 *   service_client raw ADDR
 *       Sends standard input as it is on one connection, shuts the
 *       connection's write side down and copies everything the server
 *       answers to standard output until it closes (for requests curl
 *       will not send: smuggling forms, raw chunked framing).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    char buf[65536];
    size_t len;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int dial(const char *addr)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof host)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends req and reads one response. Returns the status and copies up to
 * bodycap-1 bytes of body into body, or -1 on a transport error. */
static int roundtrip(struct conn *c, const char *req, size_t reqlen, char *body, size_t bodycap)
{
    size_t off = 0;
    while (off < reqlen) {
        ssize_t w = write(c->fd, req + off, reqlen - off);
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end != NULL) {
            size_t hlen = (size_t)(end - c->buf) + 4;
            int status = 0;
            if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1)
                return -1;
            size_t clen = 0;
            c->buf[c->len] = '\0';
            char *cl = strcasestr(c->buf, "\r\ncontent-length:");
            if (cl != NULL && cl < end)
                clen = (size_t)strtoul(cl + 17, NULL, 10);
            while (c->len < hlen + clen) {
                ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
                if (r <= 0)
                    return -1;
                c->len += (size_t)r;
            }
            if (body != NULL && bodycap > 0) {
                size_t n = clen < bodycap - 1 ? clen : bodycap - 1;
                memcpy(body, c->buf + hlen, n);
                body[n] = '\0';
            }
            memmove(c->buf, c->buf + hlen + clen, c->len - hlen - clen);
            c->len -= hlen + clen;
            return status;
        }
        if (c->len >= sizeof c->buf - 1)
            return -1;
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
    }
}

struct job {
    const char *addr;
    const char *sku;
    const char *prefix;
    _Atomic long *next;
    long n;
    _Atomic long *status;   /* [600] */
    _Atomic long *errors;
};

static void *decr_thread(void *arg)
{
    struct job *j = arg;
    struct conn *c = calloc(1, sizeof *c);
    c->fd = dial(j->addr);
    char req[1024], body[2048];
    for (;;) {
        long i = atomic_fetch_add(j->next, 1);
        if (i >= j->n)
            break;
        char payload[256];
        int pl = snprintf(payload, sizeof payload, "{\"user_id\":\"%s%ld\",\"qty\":1}", j->prefix, i);
        int rl = snprintf(req, sizeof req,
                          "POST /v1/items/%s/decrement HTTP/1.1\r\nHost: t\r\n"
                          "Content-Type: application/json\r\nIdempotency-Key: %s%ld\r\n"
                          "Content-Length: %d\r\n\r\n%s",
                          j->sku, j->prefix, i, pl, payload);
        int st = c->fd >= 0 ? roundtrip(c, req, (size_t)rl, body, sizeof body) : -1;
        if (st < 0) {
            /* Reconnect once and retry with the same key: the replay is safe. */
            if (c->fd >= 0)
                close(c->fd);
            c->len = 0;
            c->fd = dial(j->addr);
            st = c->fd >= 0 ? roundtrip(c, req, (size_t)rl, body, sizeof body) : -1;
        }
        if (st < 0 || st >= 600)
            atomic_fetch_add(j->errors, 1);
        else
            atomic_fetch_add(&j->status[st], 1);
    }
    if (c->fd >= 0)
        close(c->fd);
    free(c);
    return NULL;
}

static int cmd_decr(int argc, char **argv)
{
    if (argc < 6)
        return 2;
    char *addrs = strdup(argv[2]);
    const char *sku = argv[3];
    long n = atol(argv[4]);
    int conc = atoi(argv[5]);
    const char *prefix = argc > 6 ? argv[6] : "u";
    const char *list[16];
    int na = 0;
    for (char *p = strtok(addrs, ","); p && na < 16; p = strtok(NULL, ","))
        list[na++] = p;
    static _Atomic long status[600];
    _Atomic long next = 0, errors = 0;
    pthread_t *th = calloc((size_t)conc, sizeof *th);
    struct job *jobs = calloc((size_t)conc, sizeof *jobs);
    int64_t t0 = now_us();
    for (int i = 0; i < conc; i++) {
        jobs[i] = (struct job){list[i % na], sku, prefix, &next, n, status, &errors};
        pthread_create(&th[i], NULL, decr_thread, &jobs[i]);
    }
    for (int i = 0; i < conc; i++)
        pthread_join(th[i], NULL);
    int64_t dt = now_us() - t0;
    for (int s = 0; s < 600; s++)
        if (status[s])
            printf("status_%d=%ld\n", s, (long)status[s]);
    printf("errors=%ld\nelapsed_ms=%lld\nrps=%.0f\n", (long)errors, (long long)(dt / 1000),
           dt > 0 ? (double)n * 1e6 / (double)dt : 0.0);
    free(th);
    free(jobs);
    free(addrs);
    return errors ? 1 : 0;
}

static int cmd_wait(int argc, char **argv)
{
    if (argc < 6)
        return 2;
    const char *addr = argv[2], *sku = argv[3];
    long long want = atoll(argv[4]);
    int64_t timeout_us = atoll(argv[5]) * 1000;
    struct conn *c = calloc(1, sizeof *c);
    char req[512], body[2048];
    int rl = snprintf(req, sizeof req, "GET /v1/items/%s HTTP/1.1\r\nHost: t\r\n\r\n", sku);
    int64_t t0 = now_us();
    c->fd = dial(addr);
    while (now_us() - t0 < timeout_us) {
        int st = c->fd >= 0 ? roundtrip(c, req, (size_t)rl, body, sizeof body) : -1;
        if (st < 0) {
            if (c->fd >= 0)
                close(c->fd);
            c->len = 0;
            usleep(10000);
            c->fd = dial(addr);
            continue;
        }
        char *v = strstr(body, "\"version\":");
        if (st == 200 && v != NULL && atoll(v + 10) >= want) {
            printf("waited_us=%lld\n", (long long)(now_us() - t0));
            close(c->fd);
            free(c);
            return 0;
        }
        usleep(200);
    }
    fprintf(stderr, "wait: %s version %lld not seen within %s ms; last: %s\n", sku, want, argv[5], body);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
    return 1;
}

static int cmd_raw(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int fd = dial(argv[2]);
    if (fd < 0) {
        perror("raw: connect");
        return 1;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                goto answer;   /* the server closed early: read its answer */
            }
            off += w;
        }
    }
answer:
    shutdown(fd, SHUT_WR);
    while ((n = read(fd, buf, sizeof buf)) > 0)
        if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n)
            break;
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    /* A server that stops (the SIGTERM tests) closes connections while we
     * write: take that as a transport error, not a SIGPIPE that kills the
     * client before it prints its counts. */
    signal(SIGPIPE, SIG_IGN);
    int r = 2;
    if (argc > 1 && strcmp(argv[1], "decr") == 0)
        r = cmd_decr(argc, argv);
    else if (argc > 1 && strcmp(argv[1], "wait") == 0)
        r = cmd_wait(argc, argv);
    else if (argc > 1 && strcmp(argv[1], "raw") == 0)
        r = cmd_raw(argc, argv);
    if (r == 2)
        fprintf(stderr, "usage: service_client decr ADDRS SKU N CONC [PREFIX] | wait ADDR SKU VERSION TIMEOUT_MS | raw ADDR\n");
    return r;
}
