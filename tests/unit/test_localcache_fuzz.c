/*
 * test_localcache_fuzz.c: libFuzzer target fuzz_localcache. The input is a
 * program of cache operations on a small cache (so that eviction, floor
 * spills and ring wrap-around happen constantly) over a few keys of every
 * length, checked against a model after every step:
 *   - a hit carries the bytes stored for that key and version;
 *   - no hit and no accepted store is below a floor set by lc_evict within
 *     the floor lifetime;
 *   - a fill is refused if an evict of its key came after its lease;
 *   - the cache's own invariants hold (lc__check).
 */
#include "localcache/lc.h"
#include "localcache/lc_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NKEYS 12
#define FLOOR_TTL 1000
#define MAX_VALUE 300
#define MAX_EVENTS 32

static uint64_t now_ms;
static uint64_t fuzz_clock(void *ctx)
{
    (void)ctx;
    return now_ms;
}

typedef struct model_key {
    uint64_t floor[MAX_EVENTS], at[MAX_EVENTS]; /* evicts: floor and time */
    unsigned nev;
    bool leased, evicted_since_lease;
    lc_lease lease;
} model_key;

static size_t key_of(unsigned id, char *buf)
{
    static const size_t lens[NKEYS] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64};
    size_t n = lens[id];
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)('a' + (id * 5 + i) % 26);
    buf[0] = (char)('A' + id);
    return n;
}

static size_t value_of(unsigned id, uint64_t version, size_t len, unsigned char *v)
{
    for (size_t i = 0; i < len; i++)
        v[i] = (unsigned char)(id * 131 + version * 17 + i * 7 + len);
    return len;
}

static size_t len_of(unsigned id, uint64_t version) { return (id * 37 + version * 11) % (MAX_VALUE + 1); }

/* The highest floor the cache must still honour for k. */
static uint64_t model_floor(const model_key *k)
{
    uint64_t f = 0;
    for (unsigned i = 0; i < k->nev; i++)
        if (k->at[i] + FLOOR_TTL > now_ms && k->floor[i] > f)
            f = k->floor[i];
    return f;
}

static void model_evict(model_key *k, uint64_t floor)
{
    if (k->nev == MAX_EVENTS) {
        memmove(k->floor, k->floor + 1, sizeof(k->floor[0]) * (MAX_EVENTS - 1));
        memmove(k->at, k->at + 1, sizeof(k->at[0]) * (MAX_EVENTS - 1));
        k->nev--;
    }
    k->floor[k->nev] = floor;
    k->at[k->nev] = now_ms;
    k->nev++;
    k->evicted_since_lease = true;
}

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_localcache: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lc_config cfg = {.shards = 2, .capacity_bytes = 48 << 10, .max_value_bytes = MAX_VALUE,
                     .floor_ttl_ms = FLOOR_TTL, .lease_ttl_ms = 300, .clock_ms = fuzz_clock};
    lc_cache *c;
    model_key m[NKEYS];
    char key[LC_KEY_MAX];
    unsigned char val[MAX_VALUE], out[MAX_VALUE];
    now_ms = 1;
    memset(m, 0, sizeof(m));
    if (lc_new(&cfg, &c) != 0)
        abort();
    /* Extra keys churned through the cache to force evictions. */
    uint32_t filler = 0;

    for (size_t p = 0; p + 2 < size; p += 3) {
        unsigned op = data[p] % 8, id = data[p + 1] % NKEYS;
        uint64_t arg = data[p + 2];
        model_key *k = &m[id];
        size_t kl = key_of(id, key), vlen;
        uint64_t ver, floor = model_floor(k);
        int rc;
        switch (op) {
        case 0: /* get */
            rc = lc_get(c, key, kl, out, sizeof(out), &vlen, &ver);
            check(rc == 0 || rc == -ENOENT, "get: unexpected code");
            if (rc == 0) {
                check(ver >= floor, "get: version below an evict floor");
                check(vlen == len_of(id, ver), "get: wrong length");
                value_of(id, ver, vlen, val);
                check(memcmp(out, val, vlen) == 0, "get: wrong bytes");
            } else {
                check(ver >= floor, "get: reported floor below an evict floor");
            }
            break;
        case 1: /* set */
            vlen = value_of(id, arg, len_of(id, arg), val);
            rc = lc_set_if_newer(c, key, kl, val, vlen, arg, LC_TTL_DEFAULT);
            check(rc == 0 || rc == -ESTALE, "set: unexpected code");
            if (arg < floor)
                check(rc == -ESTALE, "set: accepted below an evict floor");
            break;
        case 2: /* evict */
            check(lc_evict(c, key, kl, arg) == 0, "evict failed");
            model_evict(k, arg);
            break;
        case 3: /* lease */
            if (k->leased)
                break;
            rc = lc_lease_acquire(c, key, kl, &k->lease);
            check(rc == 0 || rc == -EEXIST || rc == -EBUSY, "lease: unexpected code");
            if (rc == 0) {
                k->leased = true;
                k->evicted_since_lease = false;
            }
            break;
        case 4: /* fill */
            if (!k->leased)
                break;
            vlen = value_of(id, arg, len_of(id, arg), val);
            rc = lc_fill(c, &k->lease, val, vlen, arg, LC_TTL_NONE);
            check(rc == 0 || rc == -ESTALE, "fill: unexpected code");
            if (k->evicted_since_lease || arg < floor)
                check(rc == -ESTALE, "fill: accepted after an evict or below a floor");
            k->leased = false;
            break;
        case 5: /* release */
            if (k->leased)
                lc_lease_release(c, &k->lease);
            k->leased = false;
            break;
        case 6: /* time passes */
            now_ms += arg * 8;
            break;
        case 7: /* churn other keys through */
            for (unsigned i = 0; i < arg; i++) {
                char fk[16];
                int n = snprintf(fk, sizeof(fk), "zz%u", filler++ % 4096);
                vlen = value_of(99, i, 40 + i % 200, val);
                lc_set_if_newer(c, fk, (size_t)n, val, vlen, 1, 50);
                if (i % 2)
                    lc_get(c, fk, (size_t)n, out, sizeof(out), NULL, NULL);
            }
            break;
        }
        check(lc__check(c) == 0, "invariants broken");
    }
    lc_stats st;
    lc_stats_get(c, &st);
    check(st.mem_bytes <= st.capacity_bytes && st.bytes <= st.mem_bytes, "memory bound");
    lc_free(c);
    return 0;
}
