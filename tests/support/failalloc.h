/*
 * failalloc.h: allocation-failure injection for the unit tests, as
 * SQLite's fault simulation does it: a run in which the n-th allocation
 * fails, for n = 1, 2, 3, ... until a run completes without reaching n.
 *
 * How. The test executables that link the failalloc library are linked
 * with -Wl,--wrap for malloc, calloc, realloc, free, strdup, strndup,
 * posix_memalign, aligned_alloc and mmap (tests/support/CMakeLists.txt):
 * every call to them from the objects of the executable (the test, and
 * the static libraries and sources under test) goes to the __wrap_
 * functions in failalloc.c, which count and may fail it, then forward to
 * the real allocator. Shared libraries (libc's own calls, cmocka) are not
 * redirected. The real allocator is whatever `malloc` resolves to, so in an
 * AddressSanitizer build it is ASAN's and LeakSanitizer still sees every
 * block. (A strong definition of malloc forwarding to __libc_malloc would
 * hand ASAN blocks it never made, and would also fail the allocations of
 * libc, cmocka and the database libraries, which are not under test.)
 *
 * A run. failalloc_target(n, persist) sets which counted allocation fails
 * (persist: that one and every one after it, SQLite's "persistent" mode;
 * else only that one, the "transient" mode). Counting is on only between
 * failalloc_begin() and failalloc_end(), so a run builds its fixture and
 * checks its results without failures. A failed call returns NULL (mmap:
 * MAP_FAILED, posix_memalign: ENOMEM) with errno ENOMEM, as libc does.
 *
 * Leaks. failalloc_live() counts the blocks allocated through the shim and
 * not freed yet (mmap excluded), in every build: failalloc_loop() checks
 * that each run gives back all it took, and LeakSanitizer checks the same
 * in the ASAN build.
 *
 * Single-threaded use: the counters are atomic, but which allocation is
 * the n-th is only meaningful when one thread allocates.
 */
#ifndef CACHESVC_TESTS_FAILALLOC_H
#define CACHESVC_TESTS_FAILALLOC_H

/* Clears the counters and sets the allocation that fails: the n-th counted
 * one (n >= 1), and with persist every later one too; n = 0 fails none.
 * Counting stays off until failalloc_begin(). */
void failalloc_target(long n, int persist);
/* Counting (and failing) on and off. */
void failalloc_begin(void);
void failalloc_end(void);
/* Allocation calls counted since failalloc_target, failed ones included. */
long failalloc_count(void);
/* Allocation calls failed since failalloc_target. */
long failalloc_failed(void);
/* Blocks allocated through the shim and not freed yet. */
long failalloc_live(void);

/* failalloc_target(0, 0), in the shape of a cmocka setup or teardown: a
 * test whose assertion failed inside a run leaves counting on, which the
 * next test must not inherit. Returns 0. */
int failalloc_reset(void **state);
/* A cmocka test entry with that reset before and after (cmocka.h first). */
#define FAILALLOC_TEST(f) cmocka_unit_test_setup_teardown(f, failalloc_reset, failalloc_reset)

/* Runs run(ctx) with the n-th counted allocation failing, for n = 1, 2, ...
 * until a run counts fewer than n allocations (it met no failure), first in
 * transient then in persistent mode. run builds its fixture, brackets the
 * calls under test with failalloc_begin/end, checks the results
 * (failalloc_failed() says whether a failure was injected) and frees
 * everything. Prints one line with what and the count, and returns the
 * number of allocation points (allocations of the run without a failure),
 * or -1 when a run leaked (failalloc_live() moved), said on stderr. */
long failalloc_loop(const char *what, void (*run)(void *ctx), void *ctx);

#endif /* CACHESVC_TESTS_FAILALLOC_H */
