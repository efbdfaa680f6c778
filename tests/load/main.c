/*
 * main.c: flashsale, the flash-sale load tester. See docs/flashsale.md.
 */
#include "fs.h"

#include <signal.h>
#include <string.h>

#include "cachesvc_version.h"
#include "runtime/rt.h"

typedef struct main_arg {
    fs_opts *o;
    int status;
} main_arg;

static void on_sigint(int sig)
{
    (void)sig;
    /* First Ctrl-C: stop sending, audit and report. Second: die. */
    atomic_store(&fs_interrupted, 1);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
}

static void main_co(void *arg)
{
    main_arg *m = arg;
    m->status = fs_run_all(m->o);
}

int main(int argc, char **argv)
{
    fs_opts o;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--version") == 0) {
            printf("flashsale %s (%s)\n", CACHESVC_VERSION, CACHESVC_COMMIT);
            return 0;
        }
    int rc = fs_opts_parse(&o, argc, argv, stdout, stderr);
    if (rc != 0) {
        fs_opts_free(&o);
        return rc == 1 ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    main_arg m = {.o = &o, .status = 2};
    /* The tester's coroutines never compute for long; on a loaded machine
     * the OS preempting a worker is what the default 100 ms report would
     * show, in the middle of the progress lines. */
    rt_config cfg = {.workers = o.workers, .hog_threshold_ms = 1000};
    rc = rt_main(&cfg, main_co, &m);
    if (rc < 0) {
        fprintf(stderr, "flashsale: runtime: %s\n", rt_strerror(rc));
        m.status = 2;
    }
    fs_opts_free(&o);
    return m.status;
}
