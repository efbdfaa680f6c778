/*
 * Unit tests of cachesvc/sd_notify.c: real AF_UNIX datagram sockets (a path
 * and the abstract namespace) stand in for the service manager, with
 * SO_PASSCRED as systemd sets it, so each test also sees the sender's pid
 * the way NotifyAccess=main checks it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cachesvc/sd_notify.h"

/* A listening "manager": its socket, the path (empty for abstract) and the
 * NOTIFY_SOCKET value that names it. */
typedef struct manager {
    int fd;
    char dir[64];
    char path[108];
    char env[128];
} manager;

static int open_manager(manager *m, int abstract)
{
    static int seq;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    socklen_t len;
    memset(m, 0, sizeof *m);
    m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (m->fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(m->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0)
        return -1;
    if (abstract) {
        snprintf(m->env, sizeof m->env, "@cachesvc-sdtest-%ld-%d", (long)getpid(), ++seq);
        memcpy(sa.sun_path + 1, m->env + 1, strlen(m->env) - 1);
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(m->env));
    } else {
        strcpy(m->dir, "/tmp/sdtest.XXXXXX");
        if (mkdtemp(m->dir) == NULL)
            return -1;
        snprintf(m->path, sizeof m->path, "%s/notify", m->dir);
        snprintf(m->env, sizeof m->env, "%s", m->path);
        strcpy(sa.sun_path, m->path);
        len = sizeof sa;
    }
    if (bind(m->fd, (struct sockaddr *)&sa, len) < 0)
        return -1;
    setenv("NOTIFY_SOCKET", m->env, 1);
    return 0;
}

static void close_manager(manager *m)
{
    if (m->fd >= 0)
        close(m->fd);
    if (m->path[0])
        unlink(m->path);
    if (m->dir[0])
        rmdir(m->dir);
    unsetenv("NOTIFY_SOCKET");
}

/* Receives one datagram into buf (NUL-terminated); returns its length, or
 * -1 when none is waiting. *pid is the sender's pid from SCM_CREDENTIALS. */
static ssize_t recv_state(manager *m, char *buf, size_t cap, pid_t *pid)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = cap - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = &ctl, .msg_controllen = sizeof ctl};
    ssize_t n = recvmsg(m->fd, &msg, MSG_DONTWAIT);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    *pid = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            struct ucred uc;
            memcpy(&uc, CMSG_DATA(c), sizeof uc);
            *pid = uc.pid;
        }
    }
    return n;
}

static void expect_state(manager *m, const char *want)
{
    char buf[8192];
    pid_t pid;
    assert_true(recv_state(m, buf, sizeof buf, &pid) >= 0);
    assert_string_equal(buf, want);
    assert_int_equal(pid, getpid());
}

static void test_unset_is_noop(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(svc_sd_notify("READY=1"), 0);
    assert_int_equal(svc_sd_notify_reloading(), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(svc_sd_notify("READY=1"), 0);
    unsetenv("NOTIFY_SOCKET");
}

/* The life of a service as the manager sees it, on a path socket. */
static void lifecycle(int abstract)
{
    manager m;
    assert_int_equal(open_manager(&m, abstract), 0);
    assert_int_equal(svc_sd_notify("READY=1"), 1);
    expect_state(&m, "READY=1");
    assert_int_equal(svc_sd_notifyf("STATUS=serving on %s:%d", "127.0.0.1", 8080), 1);
    expect_state(&m, "STATUS=serving on 127.0.0.1:8080");
    assert_int_equal(svc_sd_notify("WATCHDOG=1"), 1);
    expect_state(&m, "WATCHDOG=1");
    assert_int_equal(svc_sd_notify("STOPPING=1\nSTATUS=draining"), 1);
    expect_state(&m, "STOPPING=1\nSTATUS=draining");
    char buf[64];
    pid_t pid;
    assert_int_equal(recv_state(&m, buf, sizeof buf, &pid), -1);   /* nothing more */
    close_manager(&m);
}

static void test_path_socket(void **state)
{
    (void)state;
    lifecycle(0);
}

static void test_abstract_socket(void **state)
{
    (void)state;
    lifecycle(1);
}

static uint64_t mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void test_reloading_carries_monotonic_usec(void **state)
{
    (void)state;
    manager m;
    assert_int_equal(open_manager(&m, 1), 0);
    uint64_t before = mono_usec();
    assert_int_equal(svc_sd_notify_reloading(), 1);
    uint64_t after = mono_usec();
    char buf[256];
    pid_t pid;
    assert_true(recv_state(&m, buf, sizeof buf, &pid) > 0);
    assert_int_equal(pid, getpid());
    uint64_t usec = 0;
    char tail = 0;
    assert_int_equal(sscanf(buf, "RELOADING=1\nMONOTONIC_USEC=%" SCNu64 "%c", &usec, &tail), 1);
    assert_true(usec >= before && usec <= after);
    assert_int_equal(svc_sd_notify("READY=1"), 1);
    expect_state(&m, "READY=1");
    close_manager(&m);
}

static void *from_thread(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)svc_sd_notify("WATCHDOG=1");
}

/* Any thread of the process notifies as the main process. */
static void test_other_thread_is_main_pid(void **state)
{
    (void)state;
    manager m;
    assert_int_equal(open_manager(&m, 0), 0);
    pthread_t t;
    void *ret;
    assert_int_equal(pthread_create(&t, NULL, from_thread, NULL), 0);
    assert_int_equal(pthread_join(t, &ret), 0);
    assert_int_equal((intptr_t)ret, 1);
    expect_state(&m, "WATCHDOG=1");
    close_manager(&m);
}

static void test_bad_addresses(void **state)
{
    (void)state;
    setenv("NOTIFY_SOCKET", "relative/notify", 1);
    assert_int_equal(svc_sd_notify("READY=1"), -EINVAL);
    setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
    assert_int_equal(svc_sd_notify("READY=1"), -EINVAL);
    char longp[200];
    memset(longp, 'a', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    setenv("NOTIFY_SOCKET", longp, 1);
    assert_int_equal(svc_sd_notify("READY=1"), -ENAMETOOLONG);
    longp[0] = '@';
    setenv("NOTIFY_SOCKET", longp, 1);
    assert_int_equal(svc_sd_notify("READY=1"), -ENAMETOOLONG);
    setenv("NOTIFY_SOCKET", "/nonexistent-dir-sdtest/notify", 1);
    assert_int_equal(svc_sd_notify("READY=1"), -ENOENT);
    setenv("NOTIFY_SOCKET", "@cachesvc-sdtest-nobody-listens", 1);
    assert_int_equal(svc_sd_notify("READY=1"), -ECONNREFUSED);
    unsetenv("NOTIFY_SOCKET");
}

static void test_bad_states(void **state)
{
    (void)state;
    manager m;
    assert_int_equal(open_manager(&m, 1), 0);
    assert_int_equal(svc_sd_notify(""), -EINVAL);
    assert_int_equal(svc_sd_notify(NULL), -EINVAL);
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(svc_sd_notifyf("STATUS=%s", big), -EMSGSIZE);
    char buf[64];
    pid_t pid;
    assert_int_equal(recv_state(&m, buf, sizeof buf, &pid), -1);   /* nothing was sent */
    close_manager(&m);
}

/* A manager that does not read: the sender gives up after its 100 ms
 * bound instead of blocking the worker it runs on. */
static void test_full_queue_does_not_block(void **state)
{
    (void)state;
    manager m;
    assert_int_equal(open_manager(&m, 1), 0);
    int rc = 1, i;
    uint64_t t0 = 0;
    for (i = 0; i < 100000 && rc == 1; i++) {
        t0 = mono_usec();
        rc = svc_sd_notify("WATCHDOG=1");
    }
    uint64_t took = mono_usec() - t0;
    assert_int_equal(rc, -EAGAIN);
    assert_true(took >= 50000 && took < 2000000);
    close_manager(&m);
}

static void test_watchdog_usec(void **state)
{
    (void)state;
    char pid[32], other[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    snprintf(other, sizeof other, "%ld", (long)getpid() + 1);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    assert_int_equal(svc_sd_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "10000000", 1);
    assert_int_equal(svc_sd_watchdog_usec(), 10000000);
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(svc_sd_watchdog_usec(), 10000000);
    setenv("WATCHDOG_PID", other, 1);
    assert_int_equal(svc_sd_watchdog_usec(), 0);
    setenv("WATCHDOG_PID", "12x", 1);
    assert_int_equal(svc_sd_watchdog_usec(), -EINVAL);
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "0", 1);
    assert_int_equal(svc_sd_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "-5", 1);
    assert_int_equal(svc_sd_watchdog_usec(), -EINVAL);
    setenv("WATCHDOG_USEC", "5s", 1);
    assert_int_equal(svc_sd_watchdog_usec(), -EINVAL);
    setenv("WATCHDOG_USEC", "99999999999999999999999", 1);
    assert_int_equal(svc_sd_watchdog_usec(), -EINVAL);
    setenv("WATCHDOG_USEC", "", 1);
    assert_int_equal(svc_sd_watchdog_usec(), 0);
    unsetenv("WATCHDOG_USEC");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unset_is_noop),
        cmocka_unit_test(test_path_socket),
        cmocka_unit_test(test_abstract_socket),
        cmocka_unit_test(test_reloading_carries_monotonic_usec),
        cmocka_unit_test(test_other_thread_is_main_pid),
        cmocka_unit_test(test_bad_addresses),
        cmocka_unit_test(test_bad_states),
        cmocka_unit_test(test_full_queue_does_not_block),
        cmocka_unit_test(test_watchdog_usec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
