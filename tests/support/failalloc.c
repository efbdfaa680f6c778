/*
 * failalloc.c: the allocation wrappers behind failalloc.h. Linked with
 * -Wl,--wrap=<name> for every name below, so a call to malloc from the
 * executable's objects is a call to __wrap_malloc, and __real_malloc is
 * the allocator the program would have called (libc's, or ASAN's).
 */
#include "tests/support/failalloc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
int __real_posix_memalign(void **out, size_t align, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);

static atomic_long target;      /* the counted call that fails; 0 = none */
static atomic_int persist;      /* and every counted call after it */
static atomic_int counting;
static atomic_long counted, failed, live;

void failalloc_target(long n, int p)
{
    atomic_store(&counting, 0);
    atomic_store(&target, n);
    atomic_store(&persist, p);
    atomic_store(&counted, 0);
    atomic_store(&failed, 0);
}

void failalloc_begin(void)
{
    atomic_store(&counting, 1);
}

void failalloc_end(void)
{
    atomic_store(&counting, 0);
}

long failalloc_count(void)
{
    return atomic_load(&counted);
}

long failalloc_failed(void)
{
    return atomic_load(&failed);
}

long failalloc_live(void)
{
    return atomic_load(&live);
}

int failalloc_reset(void **state)
{
    (void)state;
    failalloc_target(0, 0);
    return 0;
}

/* Counts one allocation call; 1 when it must fail (errno is then set). */
static int fail_now(void)
{
    if (!atomic_load(&counting))
        return 0;
    long n = atomic_fetch_add(&counted, 1) + 1;
    long t = atomic_load(&target);
    if (t <= 0 || n < t || (n > t && !atomic_load(&persist)))
        return 0;
    atomic_fetch_add(&failed, 1);
    errno = ENOMEM;
    return 1;
}

static void *took(void *p)
{
    if (p != NULL)
        atomic_fetch_add(&live, 1);
    return p;
}

void *__wrap_malloc(size_t n)
{
    return fail_now() ? NULL : took(__real_malloc(n));
}

void *__wrap_calloc(size_t k, size_t n)
{
    return fail_now() ? NULL : took(__real_calloc(k, n));
}

void *__wrap_realloc(void *p, size_t n)
{
    if (p != NULL && n == 0) {   /* glibc frees p */
        atomic_fetch_sub(&live, 1);
        return __real_realloc(p, 0);
    }
    if (fail_now())
        return NULL;   /* p stays allocated, as with a real failure */
    void *q = __real_realloc(p, n);
    return p == NULL ? took(q) : q;
}

void __wrap_free(void *p)
{
    if (p != NULL)
        atomic_fetch_sub(&live, 1);
    __real_free(p);
}

char *__wrap_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = __wrap_malloc(n);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

char *__wrap_strndup(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    char *p = __wrap_malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

int __wrap_posix_memalign(void **out, size_t align, size_t n)
{
    if (fail_now())
        return ENOMEM;
    int rc = __real_posix_memalign(out, align, n);
    if (rc == 0)
        took(*out);
    return rc;
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    return fail_now() ? NULL : took(__real_aligned_alloc(align, n));
}

/* Anonymous mappings are allocations (localcache's large blocks); file
 * mappings are not counted. Not in live: munmap is not wrapped. */
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if ((flags & MAP_ANONYMOUS) && fail_now())
        return MAP_FAILED;
    return __real_mmap(addr, len, prot, flags, fd, off);
}

long failalloc_loop(const char *what, void (*run)(void *ctx), void *ctx)
{
    long points[2] = {0, 0};
    for (int p = 0; p < 2; p++) {
        for (long n = 1;; n++) {
            long before = failalloc_live();
            failalloc_target(n, p);
            run(ctx);
            failalloc_end();
            if (failalloc_live() != before) {
                fprintf(stderr, "%s: %ld block(s) leaked with allocation %ld failing (%s)\n",
                        what, failalloc_live() - before, n, p ? "persistent" : "transient");
                failalloc_target(0, 0);
                return -1;
            }
            if (failalloc_failed() == 0) {
                points[p] = failalloc_count();
                break;
            }
        }
    }
    failalloc_target(0, 0);
    printf("%s: %ld allocation point(s)\n", what, points[0]);
    if (points[0] != points[1])
        fprintf(stderr, "%s: %ld allocation points in transient mode, %ld in persistent\n",
                what, points[0], points[1]);
    return points[0] == points[1] ? points[0] : -1;
}
