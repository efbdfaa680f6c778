/*
 * api_server.c: http-memserver over real sockets on 127.0.0.1.
 *
 *   slow:      200 clients send a request one byte per second while a fast
 *              client's requests (keep-alive and new connections) complete;
 *              the header deadline drops the slow ones.
 *   cap:       connections over --max-conns are answered 503 and closed.
 *   pipeline:  many requests in one write are answered in order.
 *   drain:     SIGTERM closes idle keep-alive connections, the server
 *              exits 0.
 *
 * Usage: api_server <http-memserver> <first port>   (uses port..port+3)
 * Every server is started here and killed on the way out, also on failure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *bin;
static pid_t servers[8];
static int nservers;

static void kill_servers(void)
{
    for (int i = 0; i < nservers; i++)
        if (servers[i] > 0) {
            kill(servers[i], SIGKILL);
            waitpid(servers[i], NULL, 0);
            servers[i] = 0;
        }
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    kill_servers();
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Starts the server with extra flags; returns its pid once it answers. */
static pid_t start(int port, const char *flags)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "exec %s --port %d --workers 2 %s", bin, port, flags);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    servers[nservers++] = pid;
    for (int i = 0; i < 100; i++) {
        int fd = dial(port);
        if (fd >= 0) {
            close(fd);
            return pid;
        }
        usleep(50000);
    }
    die("server on port %d did not start", port);
    return -1;
}

static int stop(pid_t pid)
{
    kill(pid, SIGTERM);
    int st = 0;
    double t0 = now_s();
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (now_s() - t0 > 15)
            die("server %d did not stop on SIGTERM", (int)pid);
        usleep(20000);
    }
    for (int i = 0; i < nservers; i++)
        if (servers[i] == pid)
            servers[i] = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Reads one response (headers + Content-Length body) into buf. Returns
 * its length, 0 on EOF, -1 on error or timeout. */
static int read_response(int fd, char *buf, size_t cap, size_t *have)
{
    for (;;) {
        buf[*have] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            const char *cl = strcasestr(buf, "Content-Length:");
            size_t blen = cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0;
            size_t total = (size_t)(end + 4 - buf) + blen;
            if (*have >= total)
                return (int)total;
        }
        if (*have + 1 >= cap)
            return -1;
        ssize_t n = read(fd, buf + *have, cap - 1 - *have);
        if (n <= 0)
            return n == 0 && *have == 0 ? 0 : -1;
        *have += (size_t)n;
    }
}

static void consume(char *buf, size_t *have, int len)
{
    memmove(buf, buf + len, *have - (size_t)len);
    *have -= (size_t)len;
}

static const char get_hot[] = "GET /v1/items/hot HTTP/1.1\r\nHost: t\r\n\r\n";

/* ------------------------------------------------------------------------ */

typedef struct fast_res {
    int port, ok;
    double max_s;
} fast_res;

static void *fast_client(void *arg)
{
    fast_res *r = arg;
    char buf[8192];
    int fd = dial(r->port);
    if (fd < 0)
        return NULL;
    for (int i = 0; i < 300; i++) {
        double t0 = now_s();
        size_t have = 0;
        if (write(fd, get_hot, sizeof get_hot - 1) < 0)
            break;
        int n = read_response(fd, buf, sizeof buf, &have);
        if (n <= 0 || strncmp(buf, "HTTP/1.1 200 ", 13) != 0)
            break;
        double dt = now_s() - t0;
        if (dt > r->max_s)
            r->max_s = dt;
        r->ok++;
        if (i % 10 == 0) {          /* and new connections now and then */
            close(fd);
            if ((fd = dial(r->port)) < 0)
                return NULL;
        }
        usleep(10000);
    }
    close(fd);
    return NULL;
}

static void test_slow_clients(int port)
{
    pid_t pid = start(port, "--header-timeout-ms 3000 --max-conns 1000");
    enum { NSLOW = 200 };
    int fds[NSLOW];
    for (int i = 0; i < NSLOW; i++) {
        if ((fds[i] = dial(port)) < 0)
            die("slow client %d could not connect", i);
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
    }
    fast_res fr = {.port = port};
    pthread_t th;
    pthread_create(&th, NULL, fast_client, &fr);
    /* One byte per second for 6 seconds; the header deadline is 3 s. */
    int closed = 0, got408 = 0;
    char dead[NSLOW] = {0};
    for (int sec = 0; sec < 6; sec++) {
        for (int i = 0; i < NSLOW; i++) {
            if (dead[i])
                continue;
            char b = get_hot[sec];
            if (send(fds[i], &b, 1, MSG_NOSIGNAL) < 0 && errno != EAGAIN) {
                dead[i] = 1;
                closed++;
            }
        }
        sleep(1);
        for (int i = 0; i < NSLOW; i++) {
            if (dead[i])
                continue;
            char buf[512];
            ssize_t n = recv(fds[i], buf, sizeof buf - 1, 0);
            if (n > 0) {
                buf[n] = 0;
                if (strstr(buf, " 408 "))
                    got408++;
            }
            if (n == 0 || (n > 0) || (n < 0 && errno != EAGAIN)) {
                dead[i] = 1;
                closed++;
            }
        }
    }
    pthread_join(th, NULL);
    for (int i = 0; i < NSLOW; i++)
        close(fds[i]);
    printf("slow: fast client %d/300 ok, max latency %.3f s; %d/%d slow clients "
           "dropped (%d answered 408)\n", fr.ok, fr.max_s, closed, NSLOW, got408);
    if (fr.ok != 300)
        die("the fast client's requests did not all complete (%d)", fr.ok);
    if (closed < NSLOW)
        die("only %d of %d slow clients were dropped at the header deadline",
            closed, NSLOW);
    if (stop(pid) != 0)
        die("server exit status not 0");
}

static void test_conn_cap(int port)
{
    pid_t pid = start(port, "--max-conns 20");
    enum { N = 30 };
    int fds[N], rejected = 0, served = 0;
    for (int i = 0; i < N; i++)
        if ((fds[i] = dial(port)) < 0)
            die("cap: connect %d", i);
    usleep(300000);
    for (int i = 0; i < N; i++) {
        char buf[4096];
        size_t have = 0;
        if (write(fds[i], get_hot, sizeof get_hot - 1) < 0) {
            rejected++;
            continue;
        }
        int n = read_response(fds[i], buf, sizeof buf, &have);
        if (n > 0 && strstr(buf, "HTTP/1.1 503 ") == buf &&
            strstr(buf, "Connection: close"))
            rejected++;
        else if (n > 0 && strstr(buf, "HTTP/1.1 200 ") == buf)
            served++;
        else if (n <= 0)
            rejected++;   /* closed after the 503 was read by nobody */
    }
    for (int i = 0; i < N; i++)
        close(fds[i]);
    printf("cap: %d served, %d rejected of %d (cap 20)\n", served, rejected, N);
    /* The test's own start-up probe may still count for a moment. */
    if (served < 18 || served > 21 || rejected < N - 21)
        die("connection cap not enforced (%d served, %d rejected)", served, rejected);
    /* Once they are gone, new connections are served again. */
    usleep(200000);
    int fd = dial(port);
    char buf[4096];
    size_t have = 0;
    if (fd < 0 || write(fd, get_hot, sizeof get_hot - 1) < 0 ||
        read_response(fd, buf, sizeof buf, &have) <= 0 ||
        strncmp(buf, "HTTP/1.1 200 ", 13) != 0)
        die("cap: a new connection after the others closed was not served");
    close(fd);
    if (stop(pid) != 0)
        die("server exit status not 0");
}

static void test_pipeline(int port)
{
    pid_t pid = start(port, "--item hot:1000 --item b:5");
    int fd = dial(port);
    char req[65536];
    size_t len = 0;
    enum { N = 100 };
    for (int i = 0; i < N; i++) {
        if (i % 3 == 2) {
            static const char body[] = "{\"user_id\":\"u1\",\"qty\":1}";
            len += (size_t)snprintf(req + len, sizeof req - len,
                "POST /v1/items/hot/decrement HTTP/1.1\r\nContent-Length: %zu\r\n"
                "X-Request-Id: r%d\r\n\r\n%s", sizeof body - 1, i, body);
        } else {
            len += (size_t)snprintf(req + len, sizeof req - len,
                "GET /v1/items/%s HTTP/1.1\r\nX-Request-Id: r%d\r\n\r\n",
                i % 3 ? "b" : "hot", i);
        }
    }
    if (write(fd, req, len) != (ssize_t)len)
        die("pipeline: write");
    static char buf[1 << 20];
    size_t have = 0;
    int64_t last_stock = 1000;
    for (int i = 0; i < N; i++) {
        int n = read_response(fd, buf, sizeof buf, &have);
        if (n <= 0)
            die("pipeline: response %d missing", i);
        char id[32];
        snprintf(id, sizeof id, "X-Request-Id: r%d\r\n", i);
        if (!strstr(buf, id) || strstr(buf, id) > buf + n)
            die("pipeline: response %d out of order", i);
        if (i % 3 == 2) {
            const char *s = strstr(buf, "\"stock\":");
            int64_t st = s ? atoll(s + 8) : -1;
            if (st != last_stock - 1)
                die("pipeline: decrement %d saw stock %lld", i, (long long)st);
            last_stock = st;
        }
        consume(buf, &have, n);
    }
    close(fd);
    printf("pipeline: %d requests in one write answered in order\n", N);
    if (stop(pid) != 0)
        die("server exit status not 0");
}

static void test_drain(int port)
{
    pid_t pid = start(port, "--drain-ms 3000");
    enum { N = 20 };
    int fds[N];
    char buf[4096];
    for (int i = 0; i < N; i++) {
        size_t have = 0;
        if ((fds[i] = dial(port)) < 0 ||
            write(fds[i], get_hot, sizeof get_hot - 1) < 0 ||
            read_response(fds[i], buf, sizeof buf, &have) <= 0)
            die("drain: request %d", i);
    }
    double t0 = now_s();
    int rc = stop(pid);
    double dt = now_s() - t0;
    int eof = 0;
    for (int i = 0; i < N; i++) {
        if (read(fds[i], buf, sizeof buf) == 0)
            eof++;
        close(fds[i]);
    }
    printf("drain: exit %d after %.3f s, %d/%d idle connections closed\n", rc, dt,
           eof, N);
    if (rc != 0 || eof != N)
        die("drain: idle keep-alive connections were not closed cleanly");
    /* After the stop nothing listens. */
    int fd = dial(port);
    if (fd >= 0)
        die("drain: still accepting after stop");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s <http-memserver> <port>\n", argv[0]);
        return 2;
    }
    bin = argv[1];
    int port = atoi(argv[2]);
    signal(SIGPIPE, SIG_IGN);
    const char *only = argc > 3 ? argv[3] : "";
    if (!*only || !strcmp(only, "pipeline"))
        test_pipeline(port);
    if (!*only || !strcmp(only, "cap"))
        test_conn_cap(port + 1);
    if (!*only || !strcmp(only, "drain"))
        test_drain(port + 2);
    if (!*only || !strcmp(only, "slow"))
        test_slow_clients(port + 3);
    kill_servers();
    printf("PASS\n");
    return 0;
}
