/*
 * cmocka_shim.h: the few cmocka calls test_runtime.c uses, for the
 * aarch64 cross build (tests/unit/test_runtime_aarch64.sh), where no
 * aarch64 cmocka is installed. Same reporting shape as cmocka.
 */
#ifndef CACHESVC_TESTS_CMOCKA_SHIM_H
#define CACHESVC_TESTS_CMOCKA_SHIM_H

#include <fnmatch.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

struct CMUnitTest {
    const char *name;
    void (*fn)(void **state);
};

static jmp_buf shim_jmp;

#define cmocka_unit_test(f) { #f, f }
#define shim_fail(what)                                                         \
    do {                                                                        \
        fprintf(stderr, "[  ERROR   ] --- %s\n[   LINE   ] --- %s:%d\n", what,   \
                __FILE__, __LINE__);                                            \
        longjmp(shim_jmp, 1);                                                   \
    } while (0)
#define fail_msg(...)                                                           \
    do {                                                                        \
        char shim_msg[640];                                                     \
        snprintf(shim_msg, sizeof shim_msg, __VA_ARGS__);                       \
        shim_fail(shim_msg);                                                    \
    } while (0)
#define assert_true(c) do { if (!(c)) shim_fail(#c); } while (0)
#define assert_false(c) assert_true(!(c))
#define assert_int_equal(a, b) assert_true((long long)(a) == (long long)(b))
#define assert_null(p) assert_true((p) == NULL)
#define assert_non_null(p) assert_true((p) != NULL)

#define cmocka_run_group_tests(tests, setup, teardown) \
    shim_run(tests, sizeof(tests) / sizeof((tests)[0]))

/* RT_TEST_FILTER=test_deadline_races runs the tests matching a glob, as
 * cmocka_set_test_filter() does in the native build. */
static int shim_run(const struct CMUnitTest *t, size_t n)
{
    volatile int failed = 0;
    volatile size_t ran = 0;
    const char *filter = getenv("RT_TEST_FILTER");
    printf("[==========] Running %zu test(s).\n", n);
    for (volatile size_t i = 0; i < n; i++) {
        if (filter && fnmatch(filter, t[i].name, 0) != 0)
            continue;
        ran++;
        printf("[ RUN      ] %s\n", t[i].name);
        fflush(stdout);
        if (setjmp(shim_jmp) == 0) {
            t[i].fn(NULL);
            printf("[       OK ] %s\n", t[i].name);
        } else {
            printf("[  FAILED  ] %s\n", t[i].name);
            failed++;
        }
        fflush(stdout);
    }
    printf("[==========] %zu test(s) run, %d failed.\n", (size_t)ran, failed);
    return failed ? 1 : 0;
}

#endif /* CACHESVC_TESTS_CMOCKA_SHIM_H */
