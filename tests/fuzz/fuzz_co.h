/*
 * fuzz_co.h: runs each fuzz input on a coroutine of the runtime with the
 * production stack size (the runtime's default, which the HTTP server's
 * connection coroutines use), so an input that needs more stack than a
 * connection has faults on the stack's guard page ("rt: stack overflow in
 * coroutine ...") instead of passing on the fuzzer's 8 MiB thread stack.
 *
 * Header-only, for the fuzz targets: the first call starts the runtime with
 * one worker; each call spawns a joinable coroutine and blocks the calling
 * (foreign) thread in rt_join until it returns.
 */
#ifndef CACHESVC_FUZZ_CO_H
#define CACHESVC_FUZZ_CO_H

#include <stdio.h>
#include <stdlib.h>

#include "api/http_int.h"
#include "runtime/rt.h"
#include "tests/support/memservice.h"

/* The server every input is answered by: the in-memory service with items
 * "hot" and "lim" (per-user limit 2), admin token "tok", and the default
 * limits, or small ones (so they are hit often) when small is set. Made on
 * the first call, kept for the process. */
static http_server *fuzz_server(int small)
{
    static http_server srv;
    static http_service *svc;
    if (svc != NULL)
        return &srv;
    svc = http_memservice_new();
    http_memservice_put(svc, "hot", 1000000, 0, 0);
    http_memservice_put(svc, "lim", 1000000, 2, 0);
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.admin_token = "tok";
    if (small) {
        cfg.max_uri = 256;
        cfg.max_headers = 1024;
        cfg.max_body = 2048;
        cfg.read_buf = 1024;
        cfg.max_pipeline_out = 4096;
    }
    if (svc == NULL || http__server_init(&srv, &cfg, svc) != 0)
        abort();
    return &srv;
}

static void fuzz_on_coroutine(rt_fn fn, void *arg)
{
    static int started;
    if (!started) {
        rt_config cfg = {.workers = 1, .hog_threshold_ms = -1};
        if (rt_start(&cfg) != 0) {
            fprintf(stderr, "fuzz: the runtime did not start\n");
            abort();
        }
        started = 1;
    }
    rt_co *co;
    rt_spawn_opts o = {.stack_size = 0, .name = "fuzz-conn", .joinable = 1};
    if (rt_spawn_ex(&co, fn, arg, &o) != 0 || rt_join(co) != 0) {
        fprintf(stderr, "fuzz: could not run the input on a coroutine\n");
        abort();
    }
}

#endif /* CACHESVC_FUZZ_CO_H */
