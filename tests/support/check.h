/*
 * check.h: checks that count failures instead of stopping the test, for
 * code where cmocka's assertions cannot run: coroutines (cmocka's longjmp
 * must never cross a coroutine stack) and the integration programs that
 * use no cmocka at all.
 *
 *   CHECK(cond)                 counts a failure when cond is false
 *   CHECK(cond, fmt, ...)       the same, with a printf-style message
 *
 * Every failure is printed to stderr at once as "FAIL file:line: cond: msg";
 * the first one is also kept. At the end, after the threads that check have
 * stopped (rt_main returned), check_exit() prints a summary and gives the
 * exit status, or assert_checks_passed() fails the current cmocka test.
 *
 * CHECK may run on any thread: the count is atomic and only the failure
 * that counted first writes the kept message. check_count(), check_first()
 * and check_reset() read or reset that state and are for the one thread
 * left once the checking threads are joined. Header-only: each test that
 * includes it gets its own static copy.
 */
#ifndef CACHESVC_TESTS_CHECK_H
#define CACHESVC_TESTS_CHECK_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static atomic_int check__failures;
static char check__first[512];

/* fmt is " " followed by the caller's message, if any (see CHECK). */
__attribute__((format(printf, 4, 5)))
static inline void check__fail(const char *file, int line, const char *cond,
                               const char *fmt, ...)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s:%d: %s", file, line, cond);
    if (fmt[1] != '\0' && n >= 0 && (size_t)n < sizeof msg - 1) {
        va_list ap;
        va_start(ap, fmt);
        msg[n] = ':';
        vsnprintf(msg + n + 1, sizeof msg - (size_t)n - 1, fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "FAIL %s\n", msg);
    if (atomic_fetch_add(&check__failures, 1) == 0)
        memcpy(check__first, msg, sizeof msg);
}

/* The message, when given, must start with a string literal. */
#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond))                                                          \
            check__fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);          \
    } while (0)

/* How many checks failed since the start or the last check_reset(). */
static inline int check_count(void)
{
    return atomic_load(&check__failures);
}

/* The first failure's "file:line: cond: msg"; "" when none failed. */
static inline const char *check_first(void)
{
    return check_count() ? check__first : "";
}

static inline void check_reset(void)
{
    atomic_store(&check__failures, 0);
    check__first[0] = '\0';
}

/* Prints "<what>: all checks passed" or "<what>: N check(s) failed, the
 * first: ..." to stdout and returns the exit status: 0 or 1. */
static inline int check_exit(const char *what)
{
    int n = check_count();
    if (n == 0) {
        printf("%s: all checks passed\n", what);
        return 0;
    }
    printf("%s: %d check(s) failed, the first: %s\n", what, n, check_first());
    return 1;
}

/* In a cmocka test (or tests/support/cmocka_shim.h): fails the test with
 * the count and the first failure when a check failed. */
#define assert_checks_passed()                                                \
    do {                                                                      \
        if (check_count() != 0)                                               \
            fail_msg("%d check(s) failed, the first: %s", check_count(),      \
                     check_first());                                          \
    } while (0)

#endif /* CACHESVC_TESTS_CHECK_H */
