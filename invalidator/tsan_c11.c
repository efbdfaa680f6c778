/*
 * tsan_c11.c: ThreadSanitizer support for programs that use librdkafka.
 * Compiled into every executable that links `inv` in TSAN builds (an
 * INTERFACE source of the library, so the definitions are always linked,
 * whatever the program references).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(RT_TSAN)
/* Debian's librdkafka starts its threads with C11 thrd_create, which this
 * toolchain's ThreadSanitizer does not intercept: the threads would run
 * without sanitizer state and crash in their first malloc. These
 * definitions in the executable interpose the library's calls and route
 * them to the intercepted pthread functions (glibc's thrd_t is a
 * pthread_t). */
#include <threads.h>

typedef struct tsan_thrd {
    thrd_start_t fn;
    void *arg;
} tsan_thrd;

static void *tsan_thrd_main(void *p)
{
    tsan_thrd t = *(tsan_thrd *)p;
    free(p);
    return (void *)(intptr_t)t.fn(t.arg);
}

static int tsan_thrd_err(int rc)
{
    return rc == 0 ? thrd_success : rc == ENOMEM ? thrd_nomem
                   : rc == ETIMEDOUT ? thrd_timedout : rc == EBUSY ? thrd_busy
                   : thrd_error;
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg)
{
    tsan_thrd *t = malloc(sizeof(*t));
    if (t == NULL)
        return thrd_nomem;
    t->fn = fn;
    t->arg = arg;
    int rc = pthread_create((pthread_t *)thr, NULL, tsan_thrd_main, t);
    if (rc != 0)
        free(t);
    return tsan_thrd_err(rc);
}

int thrd_join(thrd_t thr, int *res)
{
    void *ret = NULL;
    int rc = pthread_join((pthread_t)thr, &ret);
    if (rc == 0 && res != NULL)
        *res = (int)(intptr_t)ret;
    return tsan_thrd_err(rc);
}

/* librdkafka itself is not instrumented: the hand-offs it makes with its own
 * atomics (message buffers freed by a broker thread after the application
 * read them) are invisible to the sanitizer. Its allocator and lock calls
 * are therefore ignored; races in our code are still reported. A program
 * that defines its own default suppressions must include this line. */
const char *__tsan_default_suppressions(void)
{
    return "called_from_lib:librdkafka.so.1\n";
}
#endif /* RT_TSAN */
