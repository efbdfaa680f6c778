/*
 * test_store_rtstub.c: the two runtime calls the SQLite backend makes, for
 * test_store, which runs the backend outside the runtime: rt_self() says
 * "not a coroutine", so every call runs inline and rt_blocking is never
 * reached.
 */
#include <stdlib.h>

#include "runtime/rt.h"

rt_co *rt_self(void)
{
    return NULL;
}

intptr_t rt_blocking(intptr_t (*fn)(void *arg), void *arg)
{
    abort();   /* unreachable: rt_self() is NULL */
    return fn(arg);
}
