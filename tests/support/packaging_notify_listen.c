/*
 * packaging_notify_listen: a stand-in for systemd's notification socket,
 * for tests/integration/packaging_notify.sh.
 *
 * Usage: packaging_notify_listen SOCKET_PATH [SECONDS]
 *
 * Binds an AF_UNIX datagram socket at SOCKET_PATH (replacing a stale one)
 * with SO_PASSCRED, as the service manager does, and prints one line per
 * datagram to stdout, flushed at once:
 *     pid=<sender pid> <state, newlines shown as '|'>
 * It exits 0 on SIGTERM/SIGINT or after SECONDS (default 300), removing the
 * socket, so a test that forgets it does not leave it running.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s SOCKET_PATH [SECONDS]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int seconds = argc == 3 ? atoi(argv[2]) : 300;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "notify_listen: path too long\n");
        return 2;
    }
    strcpy(sa.sun_path, path);

    struct sigaction act = {.sa_handler = on_signal};   /* no SA_RESTART */
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    sigaction(SIGALRM, &act, NULL);
    alarm(seconds > 0 ? (unsigned)seconds : 300);

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int one = 1;
    unlink(path);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "notify_listen: %s: %s\n", path, strerror(errno));
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    while (!stop) {
        char buf[8192];
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(struct ucred))];
        } ctl;
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = &ctl, .msg_controllen = sizeof ctl};
        ssize_t n = recvmsg(fd, &msg, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "notify_listen: recvmsg: %s\n", strerror(errno));
            break;
        }
        buf[n] = '\0';
        long pid = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                struct ucred uc;
                memcpy(&uc, CMSG_DATA(c), sizeof uc);
                pid = (long)uc.pid;
            }
        }
        for (char *p = buf; *p; p++)
            if (*p == '\n')
                *p = '|';
        printf("pid=%ld %s\n", pid, buf);
    }
    close(fd);
    unlink(path);
    return 0;
}
