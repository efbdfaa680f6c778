/*
 * sh.h: run a shell command from a coroutine (tests only).
 *
 * sh(out, cap, fmt, ...) runs the formatted command through popen(3) on a
 * blocking thread (rt_blocking), so the worker keeps serving the other
 * coroutines; its stdout, trailing newlines trimmed and cut at 8 KiB, is
 * copied to out when out is not NULL. Returns pclose's status (0 when the
 * command exited 0) or -1 when it could not start. Header-only: each test
 * that includes it gets its own static copy.
 */
#ifndef CACHESVC_TESTS_SH_H
#define CACHESVC_TESTS_SH_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

struct sh_cmd {
    char cmd[1024];
    char out[8192];
};

static intptr_t sh_blocking(void *arg)
{
    struct sh_cmd *s = arg;
    FILE *f = popen(s->cmd, "r");
    size_t n = 0;

    if (f == NULL)
        return -1;
    while (n + 1 < sizeof s->out) {
        size_t k = fread(s->out + n, 1, sizeof s->out - 1 - n, f);
        if (k == 0)
            break;
        n += k;
    }
    s->out[n] = '\0';
    while (n > 0 && (s->out[n - 1] == '\n' || s->out[n - 1] == '\r'))
        s->out[--n] = '\0';
    return pclose(f);
}

static __attribute__((format(printf, 3, 4), unused)) int sh(char *out, size_t cap,
                                                             const char *fmt, ...)
{
    struct sh_cmd *s = calloc(1, sizeof *s);
    va_list ap;
    int rc;

    if (s == NULL)
        return -1;
    va_start(ap, fmt);
    vsnprintf(s->cmd, sizeof s->cmd, fmt, ap);
    va_end(ap);
    rc = (int)rt_blocking(sh_blocking, s);
    if (out != NULL && cap > 0) {
        size_t len = strlen(s->out);
        if (len >= cap)
            len = cap - 1;
        memcpy(out, s->out, len);
        out[len] = '\0';
    }
    free(s);
    return rc;
}

#endif /* CACHESVC_TESTS_SH_H */
