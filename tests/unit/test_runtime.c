/*
 * test_runtime.c: unit tests of the coroutine runtime (runtime/rt.h).
 *
 * cmocka's assertions longjmp, which must never cross a coroutine stack, so
 * coroutines record failures with CHECK() (tests/support/check.h) and the
 * test thread asserts on the count after rt_main() returned.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#if defined(RT_TEST_SHIM)
#include "tests/support/cmocka_shim.h"
#else
#include <cmocka.h>
#endif

#include "runtime/rt.h"

#include <errno.h>
#include <fenv.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/check.h"

static void run_rt(int workers, rt_fn fn, void *arg)
{
    rt_config cfg = {.workers = workers};
    check_reset();
    int rc = rt_main(&cfg, fn, arg);
    assert_int_equal(rc, 0);
    assert_checks_passed();
    assert_false(rt_running());
}

/* ------------------------------------------------------------------------ */
/* Callee-saved registers and FP control state survive switches.            */

#if defined(__x86_64__)
/* long check_callee_saved(void (*fn)(void)): loads patterns into rbx, rbp,
 * r12-r15, calls fn, returns the number of registers that changed. */
__asm__(".text\n"
        ".globl check_callee_saved\n"
        "check_callee_saved:\n"
        "  pushq %rbp; pushq %rbx; pushq %r12; pushq %r13; pushq %r14; pushq %r15\n"
        "  subq $8, %rsp\n"
        "  movabsq $0x1111111111111111, %rbx\n"
        "  movabsq $0x2222222222222222, %rbp\n"
        "  movabsq $0x3333333333333333, %r12\n"
        "  movabsq $0x4444444444444444, %r13\n"
        "  movabsq $0x5555555555555555, %r14\n"
        "  movabsq $0x6666666666666666, %r15\n"
        "  callq *%rdi\n"
        "  xorl %eax, %eax\n"
        "  movabsq $0x1111111111111111, %rcx; cmpq %rcx, %rbx; setne %cl; movzbl %cl, %ecx; addq %rcx, %rax\n"
        "  movabsq $0x2222222222222222, %rcx; cmpq %rcx, %rbp; setne %cl; movzbl %cl, %ecx; addq %rcx, %rax\n"
        "  movabsq $0x3333333333333333, %rcx; cmpq %rcx, %r12; setne %cl; movzbl %cl, %ecx; addq %rcx, %rax\n"
        "  movabsq $0x4444444444444444, %rcx; cmpq %rcx, %r13; setne %cl; movzbl %cl, %ecx; addq %rcx, %rax\n"
        "  movabsq $0x5555555555555555, %rcx; cmpq %rcx, %r14; setne %cl; movzbl %cl, %ecx; addq %rcx, %rax\n"
        "  movabsq $0x6666666666666666, %rcx; cmpq %rcx, %r15; setne %cl; movzbl %cl, %ecx; addq %rcx, %rax\n"
        "  addq $8, %rsp\n"
        "  popq %r15; popq %r14; popq %r13; popq %r12; popq %rbx; popq %rbp\n"
        "  ret\n");
#define HAVE_CALLEE_CHECK 1
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl check_callee_saved\n"
        "check_callee_saved:\n"
        "  stp x29, x30, [sp, #-176]!\n"
        "  stp x19, x20, [sp, #16]\n"
        "  stp x21, x22, [sp, #32]\n"
        "  stp x23, x24, [sp, #48]\n"
        "  stp x25, x26, [sp, #64]\n"
        "  stp x27, x28, [sp, #80]\n"
        "  stp d8, d9, [sp, #96]\n"
        "  stp d10, d11, [sp, #112]\n"
        "  stp d12, d13, [sp, #128]\n"
        "  stp d14, d15, [sp, #144]\n"
        "  mov x19, #19\n  mov x20, #20\n  mov x21, #21\n  mov x22, #22\n  mov x23, #23\n"
        "  mov x24, #24\n  mov x25, #25\n  mov x26, #26\n  mov x27, #27\n  mov x28, #28\n"
        "  fmov d8, #8.0\n  fmov d9, #9.0\n  fmov d10, #10.0\n  fmov d11, #11.0\n"
        "  fmov d12, #12.0\n  fmov d13, #13.0\n  fmov d14, #14.0\n  fmov d15, #15.0\n"
        "  blr x0\n"
        "  mov x0, #0\n"
        "  cmp x19, #19\n  cinc x0, x0, ne\n  cmp x20, #20\n  cinc x0, x0, ne\n"
        "  cmp x21, #21\n  cinc x0, x0, ne\n  cmp x22, #22\n  cinc x0, x0, ne\n"
        "  cmp x23, #23\n  cinc x0, x0, ne\n  cmp x24, #24\n  cinc x0, x0, ne\n"
        "  cmp x25, #25\n  cinc x0, x0, ne\n  cmp x26, #26\n  cinc x0, x0, ne\n"
        "  cmp x27, #27\n  cinc x0, x0, ne\n  cmp x28, #28\n  cinc x0, x0, ne\n"
        "  fmov d0, #8.0\n  fcmp d8, d0\n  cinc x0, x0, ne\n"
        "  fmov d0, #9.0\n  fcmp d9, d0\n  cinc x0, x0, ne\n"
        "  fmov d0, #10.0\n  fcmp d10, d0\n  cinc x0, x0, ne\n"
        "  fmov d0, #11.0\n  fcmp d11, d0\n  cinc x0, x0, ne\n"
        "  fmov d0, #12.0\n  fcmp d12, d0\n  cinc x0, x0, ne\n"
        "  fmov d0, #13.0\n  fcmp d13, d0\n  cinc x0, x0, ne\n"
        "  fmov d0, #14.0\n  fcmp d14, d0\n  cinc x0, x0, ne\n"
        "  fmov d0, #15.0\n  fcmp d15, d0\n  cinc x0, x0, ne\n"
        "  ldp x19, x20, [sp, #16]\n"
        "  ldp x21, x22, [sp, #32]\n"
        "  ldp x23, x24, [sp, #48]\n"
        "  ldp x25, x26, [sp, #64]\n"
        "  ldp x27, x28, [sp, #80]\n"
        "  ldp d8, d9, [sp, #96]\n"
        "  ldp d10, d11, [sp, #112]\n"
        "  ldp d12, d13, [sp, #128]\n"
        "  ldp d14, d15, [sp, #144]\n"
        "  ldp x29, x30, [sp], #176\n"
        "  ret\n");
#define HAVE_CALLEE_CHECK 1
#endif

#ifdef HAVE_CALLEE_CHECK
long check_callee_saved(void (*fn)(void));

/* Yields several times and clobbers every callee-saved register meanwhile
 * through other coroutines' work. */
static void yield_a_lot(void)
{
    for (int i = 0; i < 20; i++)
        rt_yield();
    rt_sleep(1);
}

static void clobberer(void *arg)
{
    volatile double acc = 1.0;
    for (int i = 0; i < 200; i++) {
        acc = acc * 1.0000001 + (double)i;
        rt_yield();
    }
    (void)arg;
}
#endif

static void regs_body(void *arg)
{
    (void)arg;
#ifdef HAVE_CALLEE_CHECK
    rt_co *c[4];
    for (int i = 0; i < 4; i++)
        CHECK(rt_spawn(&c[i], clobberer, NULL) == 0);
    for (int i = 0; i < 10; i++)
        CHECK(check_callee_saved(yield_a_lot) == 0);
    for (int i = 0; i < 4; i++)
        CHECK(rt_join(c[i]) == 0);
#endif
}

static atomic_int fp_stop;

static void fp_default_checker(void *arg)
{
    (void)arg;
    while (!atomic_load(&fp_stop)) {
        CHECK(fegetround() == FE_TONEAREST);
        rt_yield();
    }
}

static void fp_body(void *arg)
{
    (void)arg;
    rt_co *c;
    atomic_store(&fp_stop, 0);
    CHECK(rt_spawn(&c, fp_default_checker, NULL) == 0);
    CHECK(fesetround(FE_TOWARDZERO) == 0);
    for (int i = 0; i < 1000; i++) {
        rt_yield();
        CHECK(fegetround() == FE_TOWARDZERO);
    }
    fesetround(FE_TONEAREST);
    atomic_store(&fp_stop, 1);
    CHECK(rt_join(c) == 0);
}

static void test_registers_survive(void **state)
{
    (void)state;
    run_rt(2, regs_body, NULL);
    run_rt(2, fp_body, NULL);
}

/* ------------------------------------------------------------------------ */
/* spawn / join                                                             */

static void add_one(void *arg)
{
    atomic_fetch_add((atomic_long *)arg, 1);
}

static void spawn_join_body(void *arg)
{
    long n = *(long *)arg;
    atomic_long count = 0;
    for (long i = 0; i < n; i++) {
        rt_co *c;
        int rc = rt_spawn(&c, add_one, &count);
        CHECK(rc == 0);
        if (rc == 0)
            CHECK(rt_join(c) == 0);
    }
    CHECK(atomic_load(&count) == n);
    /* Batches: spawn many, then join them all. */
    rt_co *cs[256];
    atomic_store(&count, 0);
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 256; i++)
            CHECK(rt_spawn(&cs[i], add_one, &count) == 0);
        for (int i = 0; i < 256; i++)
            CHECK(rt_join(cs[i]) == 0);
    }
    CHECK(atomic_load(&count) == 25600);
    rt_stats st;
    rt_stats_get(&st);
    CHECK(st.live >= 1);
}

static void test_spawn_join_million(void **state)
{
    (void)state;
    long n = 1000000;
    run_rt(2, spawn_join_body, &n);
}

/* Detached coroutines and a foreign-thread spawn and join. */
static void detached_body(void *arg)
{
    atomic_long *count = arg;
    for (int i = 0; i < 10000; i++)
        CHECK(rt_spawn(NULL, add_one, count) == 0);
    while (atomic_load(count) < 10000)
        rt_yield();
}

static void test_spawn_detached_and_foreign(void **state)
{
    (void)state;
    atomic_long count = 0;
    run_rt(2, detached_body, &count);
    assert_int_equal(atomic_load(&count), 10000);

    rt_config cfg = {.workers = 2};
    assert_int_equal(rt_start(&cfg), 0);
    assert_true(rt_running());
    atomic_store(&count, 0);
    rt_co *cs[100];
    for (int i = 0; i < 100; i++)
        assert_int_equal(rt_spawn(&cs[i], add_one, &count), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(rt_join(cs[i]), 0);
    assert_int_equal(atomic_load(&count), 100);
    assert_null(rt_self());
    assert_int_equal(rt_worker_id(), -1);
    rt_stop();
    assert_false(rt_running());
    assert_int_equal(rt_spawn(NULL, add_one, &count), -ECANCELED);
}

/* ------------------------------------------------------------------------ */
/* Channels                                                                  */

typedef struct pp_arg { rt_chan *a, *b; long n; } pp_arg;

static void ponger(void *arg)
{
    pp_arg *p = arg;
    long v;
    for (long i = 0; i < p->n; i++) {
        CHECK(rt_chan_recv(p->a, &v, RT_NO_DEADLINE) == 0);
        CHECK(v == i);
        CHECK(rt_chan_send(p->b, &v, RT_NO_DEADLINE) == 0);
    }
}

static void pingpong_body(void *arg)
{
    (void)arg;
    pp_arg p = {rt_chan_new(sizeof(long), 1), rt_chan_new(sizeof(long), 1), 200000};
    rt_co *c;
    CHECK(rt_spawn(&c, ponger, &p) == 0);
    for (long i = 0; i < p.n; i++) {
        long v = i, r = -1;
        CHECK(rt_chan_send(p.a, &v, RT_NO_DEADLINE) == 0);
        CHECK(rt_chan_recv(p.b, &r, RT_NO_DEADLINE) == 0);
        CHECK(r == i);
    }
    CHECK(rt_join(c) == 0);
    rt_chan_free(p.a);
    rt_chan_free(p.b);
}

static void test_chan_pingpong(void **state)
{
    (void)state;
    run_rt(2, pingpong_body, NULL);
    run_rt(1, pingpong_body, NULL);
}

/* Many producers and consumers through a small channel: every value is
 * received exactly once. */
typedef struct mpmc { rt_chan *ch; atomic_long sum; atomic_long got; rt_wg *wg; } mpmc;

static void producer(void *arg)
{
    mpmc *m = arg;
    for (long i = 1; i <= 1000; i++)
        CHECK(rt_chan_send(m->ch, &i, RT_NO_DEADLINE) == 0);
    rt_wg_done(m->wg);
}

static void consumer(void *arg)
{
    mpmc *m = arg;
    long v;
    int rc;
    while ((rc = rt_chan_recv(m->ch, &v, RT_NO_DEADLINE)) == 0) {
        atomic_fetch_add(&m->sum, v);
        atomic_fetch_add(&m->got, 1);
    }
    CHECK(rc == -EPIPE);
}

static void mpmc_body(void *arg)
{
    (void)arg;
    mpmc m = {.ch = rt_chan_new(sizeof(long), 4), .wg = rt_wg_new()};
    rt_co *cons[8];
    for (int i = 0; i < 8; i++)
        CHECK(rt_spawn(&cons[i], consumer, &m) == 0);
    rt_wg_add(m.wg, 8);
    for (int i = 0; i < 8; i++)
        CHECK(rt_spawn(NULL, producer, &m) == 0);
    CHECK(rt_wg_wait(m.wg, RT_NO_DEADLINE) == 0);
    rt_chan_close(m.ch);
    for (int i = 0; i < 8; i++)
        CHECK(rt_join(cons[i]) == 0);
    CHECK(atomic_load(&m.got) == 8000);
    CHECK(atomic_load(&m.sum) == 8L * 500500);
    long v = 0;
    CHECK(rt_chan_send(m.ch, &v, RT_NO_DEADLINE) == -EPIPE);
    CHECK(rt_chan_try_recv(m.ch, &v) == -EPIPE);
    rt_chan_free(m.ch);
    rt_wg_free(m.wg);
}

static void test_chan_mpmc(void **state)
{
    (void)state;
    run_rt(2, mpmc_body, NULL);
}

/* Closing wakes every parked sender and receiver. */
typedef struct close_arg { rt_chan *full, *empty; atomic_int woke; } close_arg;

static void blocked_sender(void *arg)
{
    close_arg *c = arg;
    long v = 7;
    CHECK(rt_chan_send(c->full, &v, RT_NO_DEADLINE) == -EPIPE);
    atomic_fetch_add(&c->woke, 1);
}

static void blocked_receiver(void *arg)
{
    close_arg *c = arg;
    long v;
    CHECK(rt_chan_recv(c->empty, &v, RT_NO_DEADLINE) == -EPIPE);
    atomic_fetch_add(&c->woke, 1);
}

static void close_body(void *arg)
{
    (void)arg;
    close_arg c = {rt_chan_new(sizeof(long), 1), rt_chan_new(sizeof(long), 1), 0};
    long v = 1;
    CHECK(rt_chan_try_send(c.full, &v) == 0);
    CHECK(rt_chan_try_send(c.full, &v) == -EAGAIN);
    CHECK(rt_chan_len(c.full) == 1);
    rt_co *cs[40];
    for (int i = 0; i < 20; i++)
        CHECK(rt_spawn(&cs[i], blocked_sender, &c) == 0);
    for (int i = 20; i < 40; i++)
        CHECK(rt_spawn(&cs[i], blocked_receiver, &c) == 0);
    rt_sleep(20);
    CHECK(atomic_load(&c.woke) == 0);
    rt_chan_close(c.full);
    rt_chan_close(c.empty);
    for (int i = 0; i < 40; i++)
        CHECK(rt_join(cs[i]) == 0);
    CHECK(atomic_load(&c.woke) == 40);
    /* The buffered element is still delivered after close. */
    CHECK(rt_chan_recv(c.full, &v, RT_NO_DEADLINE) == 0 && v == 1);
    CHECK(rt_chan_recv(c.full, &v, RT_NO_DEADLINE) == -EPIPE);
    rt_chan_free(c.full);
    rt_chan_free(c.empty);
}

static void test_chan_close_wakes_all(void **state)
{
    (void)state;
    run_rt(2, close_body, NULL);
}

/* Deadlines racing with hand-offs: every value sent is received exactly
 * once although sends and receives keep timing out around each other. */
typedef struct race { rt_chan *ch; atomic_long sent_sum, recv_sum, recv_n; rt_wg *wg; } race;

static void race_producer(void *arg)
{
    race *r = arg;
    for (long i = 1; i <= 2000; i++) {
        int rc;
        while ((rc = rt_chan_send(r->ch, &i, rt_now_ns() + 20000)) == -ETIMEDOUT)
            ;
        CHECK(rc == 0);
        atomic_fetch_add(&r->sent_sum, i);
        if (i % 64 == 0)
            rt_sleep_ns(50000);
    }
    rt_wg_done(r->wg);
}

static void race_consumer(void *arg)
{
    race *r = arg;
    long v;
    for (;;) {
        int rc = rt_chan_recv(r->ch, &v, rt_now_ns() + 30000);
        if (rc == -ETIMEDOUT)
            continue;
        if (rc == -EPIPE)
            break;
        CHECK(rc == 0);
        atomic_fetch_add(&r->recv_sum, v);
        atomic_fetch_add(&r->recv_n, 1);
    }
}

static void race_body(void *arg)
{
    (void)arg;
    race r = {.ch = rt_chan_new(sizeof(long), 2), .wg = rt_wg_new()};
    rt_co *cons[6];
    for (int i = 0; i < 6; i++)
        CHECK(rt_spawn(&cons[i], race_consumer, &r) == 0);
    rt_wg_add(r.wg, 6);
    for (int i = 0; i < 6; i++)
        CHECK(rt_spawn(NULL, race_producer, &r) == 0);
    CHECK(rt_wg_wait(r.wg, RT_NO_DEADLINE) == 0);
    /* Drain: consumers still time out and retry until closed and empty. */
    while (atomic_load(&r.recv_n) < 6 * 2000)
        rt_sleep(1);
    rt_chan_close(r.ch);
    for (int i = 0; i < 6; i++)
        CHECK(rt_join(cons[i]) == 0);
    CHECK(atomic_load(&r.recv_n) == 6 * 2000);
    CHECK(atomic_load(&r.recv_sum) == atomic_load(&r.sent_sum));
    rt_chan_free(r.ch);
    rt_wg_free(r.wg);
}

static void test_deadline_races(void **state)
{
    (void)state;
    run_rt(2, race_body, NULL);
    run_rt(3, race_body, NULL);
}

/* ------------------------------------------------------------------------ */
/* Work spreading                                                            */

typedef struct spread { atomic_long per_worker[64]; atomic_long done; } spread;

static void cpu_task(void *arg)
{
    spread *s = arg;
    volatile unsigned long x = 0;
    for (int i = 0; i < 20000; i++)
        x += (unsigned long)i * 2654435761u;
    (void)x;
    int w = rt_worker_id();
    if (w >= 0 && w < 64)
        atomic_fetch_add(&s->per_worker[w], 1);
    atomic_fetch_add(&s->done, 1);
}

typedef struct steal_probe { atomic_int first, elsewhere, done; } steal_probe;

static void steal_task(void *arg)
{
    steal_probe *p = arg;
    int me = rt_worker_id(), exp = -1;
    if (atomic_compare_exchange_strong(&p->first, &exp, me)) {
        int64_t give_up = rt_now_ns() + 10000000000LL;   /* a failure, not a hang */
        while (!atomic_load(&p->elsewhere) && rt_now_ns() < give_up)
            ;
    } else if (me != atomic_load(&p->first)) {
        atomic_fetch_add(&p->elsewhere, 1);
    }
    atomic_fetch_add(&p->done, 1);
}

static void spread_body(void *arg)
{
    spread *s = arg;
    for (int i = 0; i < 10000; i++)
        CHECK(rt_spawn(NULL, cpu_task, s) == 0);
    while (atomic_load(&s->done) < 10000)
        rt_sleep(1);
    int n = rt_workers();
    for (int w = 0; w < n; w++)
        CHECK(atomic_load(&s->per_worker[w]) > 0);
    /* Those may all have spread through the inject queue (the ring
     * overflows into it). Fewer tasks than a ring holds, the first of
     * them holding its worker until another worker ran one, can only
     * spread by stealing. */
    if (n > 1) {
        steal_probe p = {.first = -1};
        for (int i = 0; i < 64; i++)
            CHECK(rt_spawn(NULL, steal_task, &p) == 0);
        while (atomic_load(&p.done) < 64)
            rt_sleep(1);
        CHECK(atomic_load(&p.elsewhere) > 0);
    }
    uint64_t steals = 0;
    for (int w = 0; w < n; w++) {
        rt_worker_stats ws;
        CHECK(rt_worker_stats_get(w, &ws) == 0);
        steals += ws.steals;
    }
    CHECK(steals > 0 || n == 1);
    rt_worker_stats ws;
    CHECK(rt_worker_stats_get(n, &ws) == -EINVAL);
}

static void test_work_spreading(void **state)
{
    (void)state;
    static spread s;
    memset(&s, 0, sizeof s);
    run_rt(2, spread_body, &s);
    memset(&s, 0, sizeof s);
    run_rt(4, spread_body, &s);
}

/* ------------------------------------------------------------------------ */
/* Sleep, deadlines                                                          */

static void sleep_body(void *arg)
{
    (void)arg;
    for (int ms = 1; ms <= 40; ms *= 3) {
        int64_t t0 = rt_now_ns();
        CHECK(rt_sleep(ms) == 0);
        int64_t el = rt_now_ns() - t0;
        CHECK(el >= (int64_t)ms * 1000000);
        CHECK(el < (int64_t)ms * 1000000 + 2000000000);  /* generous: shared machine */
    }
    CHECK(rt_deadline_ms(-1) == RT_NO_DEADLINE);
    CHECK(rt_now_ms() > 0);
}

static void sleeper(void *arg)
{
    atomic_long *n = arg;
    CHECK(rt_sleep(5 + (int64_t)(atomic_fetch_add(n, 1) % 20)) == 0);
}

static void many_sleep_body(void *arg)
{
    (void)arg;
    atomic_long n = 0;
    rt_co *cs[2000];
    for (int i = 0; i < 2000; i++)
        CHECK(rt_spawn(&cs[i], sleeper, &n) == 0);
    for (int i = 0; i < 2000; i++)
        CHECK(rt_join(cs[i]) == 0);
}

static void test_sleep_accuracy(void **state)
{
    (void)state;
    run_rt(2, sleep_body, NULL);
    run_rt(2, many_sleep_body, NULL);
}

static void deadline_body(void *arg)
{
    (void)arg;
    rt_chan *ch = rt_chan_new(1, 1);
    char c = 0;
    int64_t t0 = rt_now_ns();
    CHECK(rt_chan_recv(ch, &c, rt_deadline_ms(20)) == -ETIMEDOUT);
    CHECK(rt_now_ns() - t0 >= 20000000);
    CHECK(rt_chan_try_send(ch, &c) == 0);
    CHECK(rt_chan_send(ch, &c, rt_deadline_ms(10)) == -ETIMEDOUT);
    CHECK(rt_chan_send(ch, &c, rt_now_ns() - 1) == -ETIMEDOUT);
    rt_chan_free(ch);

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(rt_fd_register(sv[0]) == 0);
    CHECK(rt_fd_register(sv[1]) == 0);
    char buf[8];
    t0 = rt_now_ns();
    CHECK(rt_read(sv[0], buf, sizeof buf, rt_deadline_ms(20)) == -ETIMEDOUT);
    CHECK(rt_now_ns() - t0 >= 20000000);
    CHECK(rt_wait_fd(sv[0], RT_READ, rt_deadline_ms(5)) == -ETIMEDOUT);
    CHECK(rt_write(sv[1], "x", 1, RT_NO_DEADLINE) == 1);
    CHECK(rt_read(sv[0], buf, sizeof buf, rt_deadline_ms(1000)) == 1);
    CHECK(rt_close(sv[0]) == 0);
    CHECK(rt_close(sv[1]) == 0);

    rt_sem *s = rt_sem_new(0);
    CHECK(rt_sem_acquire(s, rt_deadline_ms(5)) == -ETIMEDOUT);
    CHECK(rt_sem_try_acquire(s) == -EAGAIN);
    rt_sem_release(s);
    CHECK(rt_sem_try_acquire(s) == 0);
    rt_sem_free(s);

    rt_wg *wg = rt_wg_new();
    rt_wg_add(wg, 1);
    CHECK(rt_wg_wait(wg, rt_deadline_ms(5)) == -ETIMEDOUT);
    rt_wg_done(wg);
    CHECK(rt_wg_wait(wg, rt_deadline_ms(5)) == 0);
    rt_wg_free(wg);

    rt_mutex *m = rt_mutex_new();
    rt_cond *cv = rt_cond_new();
    rt_mutex_lock(m);
    CHECK(rt_mutex_trylock(m) == -EAGAIN);
    CHECK(rt_cond_wait(cv, m, rt_deadline_ms(5)) == -ETIMEDOUT);
    rt_mutex_unlock(m);
    CHECK(rt_mutex_trylock(m) == 0);
    rt_mutex_unlock(m);
    rt_cond_free(cv);
    rt_mutex_free(m);

    rt_event *ev = rt_event_new();
    CHECK(rt_event_wait(ev, rt_deadline_ms(5)) == -ETIMEDOUT);
    rt_event_signal(ev);
    CHECK(rt_event_wait(ev, rt_deadline_ms(5)) == 0);
    CHECK(rt_event_wait(ev, rt_deadline_ms(1)) == -ETIMEDOUT);
    rt_event_free(ev);
}

static void test_deadlines(void **state)
{
    (void)state;
    run_rt(2, deadline_body, NULL);
}

/* ------------------------------------------------------------------------ */
/* Mutex / condition stress                                                  */

typedef struct mc {
    rt_mutex *m;
    rt_cond *c;
    long counter;       /* protected by m */
    long queue;         /* protected by m: items produced, not consumed */
    long consumed;
    rt_wg *wg;
} mc;

static void mc_incr(void *arg)
{
    mc *s = arg;
    for (int i = 0; i < 2000; i++) {
        rt_mutex_lock(s->m);
        long v = s->counter;
        if (i % 7 == 0)
            rt_yield();
        s->counter = v + 1;
        rt_mutex_unlock(s->m);
    }
    rt_wg_done(s->wg);
}

static void mc_producer(void *arg)
{
    mc *s = arg;
    for (int i = 0; i < 5000; i++) {
        rt_mutex_lock(s->m);
        s->queue++;
        rt_cond_signal(s->c);
        rt_mutex_unlock(s->m);
        if (i % 16 == 0)
            rt_yield();
    }
    rt_wg_done(s->wg);
}

static void mc_consumer(void *arg)
{
    mc *s = arg;
    for (int i = 0; i < 5000; i++) {
        rt_mutex_lock(s->m);
        while (s->queue == 0)
            rt_cond_wait(s->c, s->m, RT_NO_DEADLINE);
        s->queue--;
        s->consumed++;
        rt_mutex_unlock(s->m);
    }
    rt_wg_done(s->wg);
}

static void mc_body(void *arg)
{
    (void)arg;
    mc s = {.m = rt_mutex_new(), .c = rt_cond_new(), .wg = rt_wg_new()};
    rt_wg_add(s.wg, 16);
    for (int i = 0; i < 16; i++)
        CHECK(rt_spawn(NULL, mc_incr, &s) == 0);
    CHECK(rt_wg_wait(s.wg, RT_NO_DEADLINE) == 0);
    CHECK(s.counter == 16 * 2000);

    rt_wg_add(s.wg, 16);
    for (int i = 0; i < 8; i++) {
        CHECK(rt_spawn(NULL, mc_consumer, &s) == 0);
        CHECK(rt_spawn(NULL, mc_producer, &s) == 0);
    }
    /* Without lost wakeups every consumer finishes. */
    CHECK(rt_wg_wait(s.wg, rt_deadline_ms(30000)) == 0);
    CHECK(s.consumed == 8 * 5000);
    CHECK(s.queue == 0);
    rt_mutex_free(s.m);
    rt_cond_free(s.c);
    rt_wg_free(s.wg);
}

static void test_mutex_cond_stress(void **state)
{
    (void)state;
    run_rt(2, mc_body, NULL);
    run_rt(4, mc_body, NULL);
}

/* ------------------------------------------------------------------------ */
/* Loopback echo with 1,000 concurrent connections                           */

#define ECHO_CONNS 1000
#define ECHO_ROUNDS 5

typedef struct echo { int lfd; int port; rt_wg *wg; atomic_int ok; } echo;

static void echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[512];
    ssize_t n;
    while ((n = rt_read(fd, buf, sizeof buf, rt_deadline_ms(20000))) > 0)
        if (rt_write(fd, buf, (size_t)n, rt_deadline_ms(20000)) != n)
            break;
    rt_close(fd);
}

static void echo_server(void *arg)
{
    echo *e = arg;
    for (int i = 0; i < ECHO_CONNS; i++) {
        int fd = rt_accept(e->lfd, NULL, NULL, rt_deadline_ms(20000));
        CHECK(fd >= 0);
        if (fd < 0)
            break;
        CHECK(rt_spawn(NULL, echo_conn, (void *)(intptr_t)fd) == 0);
    }
}

static void echo_client(void *arg)
{
    echo *e = arg;
    int fd = rt_dial_tcp("127.0.0.1", e->port, rt_deadline_ms(20000));
    CHECK(fd >= 0);
    if (fd >= 0) {
        int good = 1;
        for (int r = 0; r < ECHO_ROUNDS; r++) {
            char out[64], in[64];
            int len = snprintf(out, sizeof out, "hello %d from %d", r, fd);
            struct iovec iov[2] = {{out, 6}, {out + 6, (size_t)len - 6}};
            if (rt_writev(fd, iov, 2, rt_deadline_ms(20000)) != len) { good = 0; break; }
            int got = 0;
            while (got < len) {
                struct iovec riov[1] = {{in + got, (size_t)(len - got)}};
                ssize_t n = rt_readv(fd, riov, 1, rt_deadline_ms(20000));
                if (n <= 0) break;
                got += (int)n;
            }
            if (got != len || memcmp(in, out, (size_t)len) != 0) { good = 0; break; }
            rt_yield();
        }
        if (good)
            atomic_fetch_add(&e->ok, 1);
        rt_close(fd);
    }
    rt_wg_done(e->wg);
}

static void echo_body(void *arg)
{
    (void)arg;
    echo e = {.wg = rt_wg_new()};
    e.lfd = rt_listen_tcp("127.0.0.1", 0, 1024, 0);
    CHECK(e.lfd >= 0);
    e.port = rt_local_port(e.lfd);
    CHECK(e.port > 0);
    rt_co *srv;
    CHECK(rt_spawn(&srv, echo_server, &e) == 0);
    rt_wg_add(e.wg, ECHO_CONNS);
    for (int i = 0; i < ECHO_CONNS; i++)
        CHECK(rt_spawn(NULL, echo_client, &e) == 0);
    CHECK(rt_wg_wait(e.wg, rt_deadline_ms(60000)) == 0);
    CHECK(atomic_load(&e.ok) == ECHO_CONNS);
    CHECK(rt_join(srv) == 0);
    rt_close(e.lfd);
    rt_wg_free(e.wg);
}

static void test_echo_1000(void **state)
{
    (void)state;
    run_rt(2, echo_body, NULL);
}

/* Many sequential round trips over one socket pair: a coroutine readied by
 * a worker's own non-blocking poll must run, not wait for an unrelated
 * event (a stranded one would hit the deadline here). */
static int rt_sv[2];

static void rt_echo_side(void *arg)
{
    (void)arg;
    char b[16];
    ssize_t n;
    while ((n = rt_read(rt_sv[1], b, sizeof b, rt_deadline_ms(10000))) > 0)
        if (rt_write(rt_sv[1], b, (size_t)n, rt_deadline_ms(10000)) != n)
            break;
    CHECK(n == 0);
}

static void roundtrip_body(void *arg)
{
    (void)arg;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, rt_sv) == 0);
    CHECK(rt_fd_register(rt_sv[0]) == 0);
    CHECK(rt_fd_register(rt_sv[1]) == 0);
    rt_co *peer;
    CHECK(rt_spawn(&peer, rt_echo_side, NULL) == 0);
    int stalls = 0;
    for (int i = 0; i < 30000 && stalls == 0; i++) {
        char b[8] = "ping";
        if (rt_write(rt_sv[0], b, 4, rt_deadline_ms(10000)) != 4 ||
            rt_read(rt_sv[0], b, sizeof b, rt_deadline_ms(10000)) != 4)
            stalls++;
    }
    CHECK(stalls == 0);
    shutdown(rt_sv[0], SHUT_WR);
    CHECK(rt_join(peer) == 0);
    rt_close(rt_sv[0]);
    rt_close(rt_sv[1]);
}

static void test_sequential_roundtrips(void **state)
{
    (void)state;
    run_rt(1, roundtrip_body, NULL);
    run_rt(2, roundtrip_body, NULL);
}

/* ------------------------------------------------------------------------ */
/* Blocking offload                                                          */

/* The blocking call waits, in its OS thread, until a coroutine has ticked
 * five times: if the offload held the (only) worker, it never would. */
typedef struct offload { atomic_int ticks; atomic_int stop; } offload;

static intptr_t wait_for_ticks(void *arg)
{
    offload *o = arg;
    for (int i = 0; i < 100000 && atomic_load(&o->ticks) < 5; i++)
        usleep(100);
    return atomic_load(&o->ticks) >= 5 ? 42 : -1;
}

static void ticker(void *arg)
{
    offload *o = arg;
    while (!atomic_load(&o->stop)) {
        rt_sleep(1);
        atomic_fetch_add(&o->ticks, 1);
    }
}

static void blocking_body(void *arg)
{
    (void)arg;
    offload o = {0, 0};
    rt_co *t;
    CHECK(rt_spawn(&t, ticker, &o) == 0);
    CHECK(rt_blocking(wait_for_ticks, &o) == 42);
    atomic_store(&o.stop, 1);
    CHECK(rt_join(t) == 0);
    rt_stats st;
    rt_stats_get(&st);
    CHECK(st.blocking_calls >= 1);
    CHECK(st.blocking_threads >= 1);
}

static void test_blocking_offload(void **state)
{
    (void)state;
    run_rt(1, blocking_body, NULL);
    run_rt(2, blocking_body, NULL);
}

/* A finished blocking call's coroutine runs ahead of the worker's ring:
 * with 100 coroutines yielding on the only worker, it used to wait for the
 * next check of the global queue (every RT_FAIR_TICKS = 61 switches, 30 on
 * average). The switches between the call's end and the caller's return
 * are counted; the median of 15 calls tells the rule from a preempted
 * pool thread. Each spinner's turn lasts 100 us, so that the pool
 * thread's own handoff (its wakeup of the worker, slow under emulation or
 * on a loaded machine) costs few switches: the rule is counted in
 * switches, the handoff in time. */
typedef struct runahead { atomic_long switches; atomic_int stop; long at_end; } runahead;

static intptr_t note_switches(void *arg)
{
    runahead *r = arg;
    usleep(2000);
    r->at_end = atomic_load(&r->switches);
    return 0;
}

static void spinner(void *arg)
{
    runahead *r = arg;
    while (!atomic_load(&r->stop)) {
        atomic_fetch_add(&r->switches, 1);
        int64_t until = rt_now_ns() + 100 * 1000;
        while (rt_now_ns() < until)
            ;
        rt_yield();
    }
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static void runahead_body(void *arg)
{
    (void)arg;
    runahead r = {0};
    rt_co *sp[100];
    long waited[15];
    for (int i = 0; i < 100; i++)
        CHECK(rt_spawn(&sp[i], spinner, &r) == 0);
    for (int i = 0; i < 15; i++) {
        CHECK(rt_blocking(note_switches, &r) == 0);
        waited[i] = atomic_load(&r.switches) - r.at_end;
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 100; i++)
        CHECK(rt_join(sp[i]) == 0);
    qsort(waited, 15, sizeof waited[0], cmp_long);
    CHECK(waited[7] <= 8);
}

static void test_blocking_runs_ahead(void **state)
{
    (void)state;
    run_rt(1, runahead_body, NULL);
}

/* ------------------------------------------------------------------------ */
/* An event signalled by a foreign thread                                    */

static void *foreign_signaller(void *arg)
{
    for (int i = 0; i < 1000; i++) {
        rt_event_signal(arg);
        if (i % 10 == 0)
            usleep(100);
    }
    return NULL;
}

static void event_body(void *arg)
{
    (void)arg;
    rt_event *ev = rt_event_new();
    pthread_t th;
    CHECK(pthread_create(&th, NULL, foreign_signaller, ev) == 0);
    int got = 0;
    while (rt_event_wait(ev, rt_deadline_ms(500)) == 0)
        got++;
    pthread_join(th, NULL);
    CHECK(got >= 10);
    rt_event_free(ev);
}

static void test_event_foreign(void **state)
{
    (void)state;
    run_rt(2, event_body, NULL);
}

/* ------------------------------------------------------------------------ */
/* Shutdown with coroutines parked on I/O, timers and sync objects           */

static rt_chan *g_chan;
static rt_mutex *g_mutex;
static int g_sv[2];

static void park_read(void *arg)
{
    char b;
    (void)arg;
    rt_read(g_sv[0], &b, 1, RT_NO_DEADLINE);
    CHECK(0);   /* never resumes */
}
static void park_sleep(void *arg)
{
    (void)arg;
    rt_sleep(1000000);
    CHECK(0);
}
static void park_chan(void *arg)
{
    long v;
    (void)arg;
    rt_chan_recv(g_chan, &v, RT_NO_DEADLINE);
    CHECK(0);
}
static void park_mutex(void *arg)
{
    (void)arg;
    rt_mutex_lock(g_mutex);
    CHECK(0);
}

static void shutdown_body(void *arg)
{
    (void)arg;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv) == 0);
    CHECK(rt_fd_register(g_sv[0]) == 0);
    rt_mutex_lock(g_mutex);
    for (int i = 0; i < 100; i++) {
        CHECK(rt_spawn(NULL, park_sleep, NULL) == 0);
        CHECK(rt_spawn(NULL, park_chan, NULL) == 0);
        CHECK(rt_spawn(NULL, park_mutex, NULL) == 0);
        CHECK(rt_spawn_ex(NULL, park_sleep, NULL,
                          &(rt_spawn_opts){.stack_size = 200000, .name = "big"}) == 0);
    }
    CHECK(rt_spawn(NULL, park_read, NULL) == 0);
    rt_sleep(20);
    rt_stats st;
    rt_stats_get(&st);
    CHECK(st.live >= 401);
}

static void test_shutdown_parked(void **state)
{
    (void)state;
    g_chan = rt_chan_new(sizeof(long), 1);
    g_mutex = rt_mutex_new();
    run_rt(2, shutdown_body, NULL);
    rt_chan_free(g_chan);
    rt_mutex_free(g_mutex);
    close(g_sv[0]);
    close(g_sv[1]);
}

/* ------------------------------------------------------------------------ */
/* rt_fd_await: a coroutine started by readiness, none held while waiting  */

typedef struct await_ctx {
    rt_await a;
    int fd, peer;
    atomic_int calls;
    int result;
    int rounds;               /* echo: round trips left */
    rt_event *done;
} await_ctx;

/* Records why it was started and signals done. */
static void await_note(void *arg)
{
    await_ctx *x = arg;
    x->result = rt_await_result(&x->a);
    atomic_fetch_add(&x->calls, 1);
    rt_event_signal(x->done);
}

/* Echo side of a ping-pong: reads a byte, answers it, arms again (or goes
 * on at once when the next byte is there already). */
static void await_echo(void *arg)
{
    await_ctx *x = arg;
    atomic_fetch_add(&x->calls, 1);
    CHECK(rt_await_result(&x->a) == RT_READ);
    for (;;) {
        char b;
        CHECK(rt_read(x->fd, &b, 1, rt_deadline_ms(2000)) == 1);
        CHECK(rt_write(x->fd, &b, 1, rt_deadline_ms(2000)) == 1);
        if (--x->rounds == 0) {
            rt_event_signal(x->done);
            return;
        }
        int r = rt_fd_await(&x->a, x->fd, RT_READ, RT_NO_DEADLINE, await_echo, x, NULL);
        CHECK(r >= 0);
        if (r <= 0)
            return;   /* armed: the next byte starts a new coroutine */
    }
}

static void await_pair(await_ctx *x)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(rt_fd_register(sv[0]) == 0);
    CHECK(rt_fd_register(sv[1]) == 0);
    x->fd = sv[0];
    x->peer = sv[1];
    atomic_store(&x->calls, 0);
    x->result = 0;
}

static uint64_t live_now(void)
{
    rt_stats st;
    rt_stats_get(&st);
    return st.live;
}

static await_ctx g_await_left;   /* armed when the runtime stops */

static void await_body(void *arg)
{
    (void)arg;
    await_ctx x;
    memset(&x, 0, sizeof x);
    x.done = rt_event_new();
    await_pair(&x);

    /* Readable later: fn runs once, with RT_READ; nothing runs before. */
    uint64_t live0 = live_now();
    CHECK(rt_fd_await(&x.a, x.fd, RT_READ, RT_NO_DEADLINE, await_note, &x, NULL) == 0);
    CHECK(live_now() == live0);
    CHECK(rt_fd_await(&x.a, x.fd, RT_READ, RT_NO_DEADLINE, await_note, &x, NULL) == -EBUSY);
    rt_sleep(10);
    CHECK(atomic_load(&x.calls) == 0);
    CHECK(rt_write(x.peer, "x", 1, RT_NO_DEADLINE) == 1);
    CHECK(rt_event_wait(x.done, rt_deadline_ms(2000)) == 0);
    CHECK(atomic_load(&x.calls) == 1 && x.result == RT_READ);
    char b[8];
    CHECK(rt_read(x.fd, b, sizeof b, rt_deadline_ms(100)) == 1);

    /* An edge that arrived while nobody waited: ready at once, no call. */
    CHECK(rt_write(x.peer, "y", 1, RT_NO_DEADLINE) == 1);
    rt_sleep(50);
    CHECK(rt_fd_await(&x.a, x.fd, RT_READ, RT_NO_DEADLINE, await_note, &x, NULL) == RT_READ);
    CHECK(rt_read(x.fd, b, sizeof b, rt_deadline_ms(100)) == 1);

    /* The deadline: -ETIMEDOUT, and the fd's slot is free afterwards. */
    CHECK(rt_fd_await(&x.a, x.fd, RT_READ, rt_now_ns() - 1, await_note, &x, NULL) == -ETIMEDOUT);
    CHECK(rt_fd_await(&x.a, x.fd, RT_READ, rt_deadline_ms(20), await_note, &x, NULL) == 0);
    CHECK(rt_event_wait(x.done, rt_deadline_ms(2000)) == 0);
    CHECK(atomic_load(&x.calls) == 2 && x.result == -ETIMEDOUT);
    CHECK(rt_wait_fd(x.fd, RT_READ, rt_deadline_ms(5)) == -ETIMEDOUT);

    /* Readiness before the deadline: the timer is gone (no second call). */
    CHECK(rt_fd_await(&x.a, x.fd, RT_READ, rt_deadline_ms(30), await_note, &x, NULL) == 0);
    CHECK(rt_write(x.peer, "z", 1, RT_NO_DEADLINE) == 1);
    CHECK(rt_event_wait(x.done, rt_deadline_ms(2000)) == 0);
    CHECK(x.result == RT_READ);
    CHECK(rt_read(x.fd, b, sizeof b, rt_deadline_ms(100)) == 1);
    rt_sleep(60);
    CHECK(atomic_load(&x.calls) == 3);

    /* The fd unregistered under it: -ECANCELED. */
    CHECK(rt_fd_await(&x.a, x.fd, RT_READ, RT_NO_DEADLINE, await_note, &x, NULL) == 0);
    CHECK(rt_fd_unregister(x.fd) == 0);
    CHECK(rt_event_wait(x.done, rt_deadline_ms(2000)) == 0);
    CHECK(atomic_load(&x.calls) == 4 && x.result == -ECANCELED);
    CHECK(rt_fd_await(&x.a, x.fd, RT_READ, RT_NO_DEADLINE, await_note, &x, NULL) == -EBADF);
    CHECK(rt_fd_await(&x.a, x.fd, 0, RT_NO_DEADLINE, await_note, &x, NULL) == -EINVAL);
    CHECK(rt_fd_register(x.fd) == 0);

    /* 2,000 round trips, the echo side re-arming itself from fn. */
    x.rounds = 2000;
    atomic_store(&x.calls, 0);
    CHECK(rt_fd_await(&x.a, x.fd, RT_READ, RT_NO_DEADLINE, await_echo, &x, NULL) == 0);
    for (int i = 0; i < 2000; i++) {
        char c = (char)i;
        CHECK(rt_write(x.peer, &c, 1, rt_deadline_ms(2000)) == 1);
        CHECK(rt_read(x.peer, b, 1, rt_deadline_ms(2000)) == 1 && b[0] == c);
    }
    CHECK(rt_event_wait(x.done, rt_deadline_ms(2000)) == 0);
    CHECK(atomic_load(&x.calls) >= 1);
    CHECK(rt_close(x.fd) == 0);
    CHECK(rt_close(x.peer) == 0);

    /* 1,000 awaits hold no coroutine; each runs once when its fd turns
     * readable. */
    enum { NAW = 1000 };
    await_ctx *many = calloc(NAW, sizeof *many);
    CHECK(many != NULL);
    if (many) {
        rt_sleep(10);   /* the echo's last coroutine has exited */
        live0 = live_now();
        for (int i = 0; i < NAW; i++) {
            many[i].done = x.done;
            await_pair(&many[i]);
            CHECK(rt_fd_await(&many[i].a, many[i].fd, RT_READ, RT_NO_DEADLINE, await_note,
                              &many[i], NULL) == 0);
        }
        CHECK(live_now() == live0);
        for (int i = 0; i < NAW; i++)
            CHECK(rt_write(many[i].peer, "m", 1, RT_NO_DEADLINE) == 1);
        int64_t dl = rt_deadline_ms(5000);
        for (int i = 0; i < NAW; i++) {
            while (atomic_load(&many[i].calls) == 0 && rt_now_ns() < dl)
                rt_event_wait(x.done, rt_deadline_ms(10));
            CHECK(atomic_load(&many[i].calls) == 1 && many[i].result == RT_READ);
        }
        for (int i = 0; i < NAW; i++) {
            rt_close(many[i].fd);
            rt_close(many[i].peer);
        }
        free(many);
    }

    /* Left armed (with a timer) when the runtime stops: never called. */
    g_await_left.done = x.done;
    await_pair(&g_await_left);
    CHECK(rt_fd_await(&g_await_left.a, g_await_left.fd, RT_READ, rt_deadline_ms(60000),
                      await_note, &g_await_left, NULL) == 0);
}

static void test_fd_await(void **state)
{
    (void)state;
    memset(&g_await_left, 0, sizeof g_await_left);
    run_rt(2, await_body, NULL);
    assert_int_equal(atomic_load(&g_await_left.calls), 0);
    close(g_await_left.fd);
    close(g_await_left.peer);
    rt_event_free(g_await_left.done);
}

/* ------------------------------------------------------------------------ */
/* Stack overflow in a child process                                         */

static int recurse(int n)
{
    volatile char pad[512];
    pad[0] = (char)n;
    if (n == 0)
        return pad[0];
    return recurse(n - 1) + pad[0];
}

static void overflow_body(void *arg)
{
    (void)arg;
    recurse(1000000);
}

static void test_stack_overflow_reported(void **state)
{
    (void)state;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pfd[1], 2);
        close(pfd[0]);
        rt_config cfg = {.workers = 1};
        rt_main(&cfg, overflow_body, NULL);
        _exit(0);
    }
    close(pfd[1]);
    char out[4096];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof out - 1 && (n = read(pfd[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = 0;
    close(pfd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
#if defined(RT_ASAN)
    assert_true(strstr(out, "stack overflow") || strstr(out, "stack-overflow") ||
                strstr(out, "SEGV"));
#else
    if (!strstr(out, "stack overflow in coroutine"))
        fprintf(stderr, "child said: %s\n", out);
    assert_non_null(strstr(out, "stack overflow in coroutine"));
    assert_int_equal(WTERMSIG(status), SIGABRT);
#endif
}

/* ------------------------------------------------------------------------ */
/* Coroutine-local storage, ids, errno                                       */

static void local_child(void *arg)
{
    (void)arg;
    void **l = rt_co_local();
    CHECK(l && *l == NULL);
    *l = (void *)0x1234;
    rt_yield();
    CHECK(*rt_co_local() == (void *)0x1234);
}

static void misc_body(void *arg)
{
    (void)arg;
    rt_co *a, *b;
    CHECK(rt_spawn(&a, local_child, NULL) == 0);
    CHECK(rt_spawn(&b, local_child, NULL) == 0);
    CHECK(rt_co_id(a) != rt_co_id(b));
    CHECK(rt_co_id(rt_self()) != 0);
    CHECK(rt_join(a) == 0);
    CHECK(rt_join(b) == 0);
    CHECK(rt_worker_id() >= 0 && rt_worker_id() < rt_workers());
    CHECK(strcmp(rt_strerror(-ETIMEDOUT), "deadline passed") == 0);
    CHECK(rt_strerror(-ENOMEM) != NULL);
    CHECK(rt_read(-1, NULL, 0, RT_NO_DEADLINE) == -EBADF);
    CHECK(rt_fd_register(-1) == -EBADF);
    CHECK(rt_listen_tcp("not-an-ip", 0, 1, 0) == -EINVAL);
    /* Connection refused on a closed port of our range. */
    int fd = rt_dial_tcp("127.0.0.1", 20999, rt_deadline_ms(2000));
    CHECK(fd == -ECONNREFUSED || fd == -ETIMEDOUT);
}

static void test_misc(void **state)
{
    (void)state;
    run_rt(2, misc_body, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registers_survive),
        cmocka_unit_test(test_spawn_join_million),
        cmocka_unit_test(test_spawn_detached_and_foreign),
        cmocka_unit_test(test_chan_pingpong),
        cmocka_unit_test(test_chan_mpmc),
        cmocka_unit_test(test_chan_close_wakes_all),
        cmocka_unit_test(test_deadline_races),
        cmocka_unit_test(test_work_spreading),
        cmocka_unit_test(test_sleep_accuracy),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_mutex_cond_stress),
        cmocka_unit_test(test_echo_1000),
        cmocka_unit_test(test_sequential_roundtrips),
        cmocka_unit_test(test_blocking_offload),
        cmocka_unit_test(test_blocking_runs_ahead),
        cmocka_unit_test(test_event_foreign),
        cmocka_unit_test(test_shutdown_parked),
        cmocka_unit_test(test_fd_await),
        cmocka_unit_test(test_stack_overflow_reported),
        cmocka_unit_test(test_misc),
    };
#if !defined(RT_TEST_SHIM)
    /* RT_TEST_FILTER=test_echo_1000 runs one test (a glob); the aarch64
     * shim reads the same variable. */
    if (getenv("RT_TEST_FILTER"))
        cmocka_set_test_filter(getenv("RT_TEST_FILTER"));
#endif
    return cmocka_run_group_tests(tests, NULL, NULL);
}
