/*
 * fs_stale.c: counts stale reads the way a client can see them.
 *
 * For each item the tracker keeps the frontier of (time first known,
 * version) pairs: a newer version always appears later in it, and a pair
 * that is both older in version and later in time than another is
 * dropped, since it can never decide a read. Observations arrive slightly
 * out of order (several threads), so insertion keeps the frontier sorted.
 */
#include "fs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int fs_stale_init(fs_stale *s, int nitems, int ntargets, const int64_t *win_ms, int nwin)
{
    memset(s, 0, sizeof(*s));
    if (nitems < 1 || ntargets < 1 || ntargets > FS_MAX_TARGETS || nwin < 0 ||
        nwin > FS_MAX_WINDOWS)
        return -EINVAL;
    s->items = calloc((size_t)nitems, sizeof(*s->items));
    if (s->items == NULL)
        return -ENOMEM;
    int rc = fs_hist_init(&s->age, 7, 42);
    if (rc < 0) {
        free(s->items);
        s->items = NULL;
        return rc;
    }
    s->nitems = nitems;
    s->ntargets = ntargets;
    s->nwin = nwin;
    for (int i = 0; i < nwin; i++)
        s->win_ns[i] = win_ms[i] * 1000000;
    for (int i = 0; i < nitems; i++)
        pthread_mutex_init(&s->items[i].mu, NULL);
    return 0;
}

void fs_stale_free(fs_stale *s)
{
    if (s->items) {
        for (int i = 0; i < s->nitems; i++) {
            pthread_mutex_destroy(&s->items[i].mu);
            free(s->items[i].pts);
        }
        free(s->items);
        s->items = NULL;
    }
    fs_hist_free(&s->age);
}

/* Makes room for one more point. Returns 0 or -ENOMEM. */
static int grow(fs_stale_item *it)
{
    if (it->n < it->cap)
        return 0;
    size_t cap = it->cap ? it->cap * 2 : 16;
    fs_stale_pt *p = realloc(it->pts, cap * sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    it->pts = p;
    it->cap = cap;
    return 0;
}

/* Inserts (t, v) into the frontier of it; the item's lock is held. An
 * allocation failure drops the observation, which can only undercount. */
static void do_commit(fs_stale_item *it, int64_t v, int64_t t)
{
    size_t n = it->n;
    /* Fast path: a newer version seen later than everything known. */
    if (n == 0 || (t > it->pts[n - 1].t && v > it->pts[n - 1].v)) {
        if (grow(it) < 0)
            return;
        it->pts[it->n++] = (fs_stale_pt){t, v};
        return;
    }
    /* pos: first point later than t. */
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (it->pts[mid].t <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t pos = lo;
    if (pos > 0 && it->pts[pos - 1].v >= v)
        return;   /* something at least as new was known at least as early */
    size_t start = pos;
    if (pos > 0 && it->pts[pos - 1].t == t)
        start = pos - 1;   /* same time, older version: replace it */
    size_t end = pos;
    while (end < n && it->pts[end].v <= v)
        end++;   /* later and not newer: dominated by (t, v) */
    size_t removed = end - start;
    if (removed == 0) {
        if (grow(it) < 0)
            return;
        memmove(&it->pts[start + 1], &it->pts[start], (n - start) * sizeof(*it->pts));
        it->n++;
    } else if (removed > 1) {
        memmove(&it->pts[start + 1], &it->pts[end], (n - end) * sizeof(*it->pts));
        it->n -= removed - 1;
    }
    it->pts[start] = (fs_stale_pt){t, v};
}

void fs_stale_commit(fs_stale *s, int item, int64_t v, int64_t t)
{
    if (item < 0 || item >= s->nitems)
        return;
    fs_stale_item *it = &s->items[item];
    pthread_mutex_lock(&it->mu);
    do_commit(it, v, t);
    pthread_mutex_unlock(&it->mu);
}

int64_t fs_stale_read(fs_stale *s, int item, int target, int64_t v, int64_t t_sent, int64_t t_recv)
{
    if (item < 0 || item >= s->nitems || target < 0 || target >= s->ntargets)
        return 0;
    fs_stale_item *it = &s->items[item];
    int64_t age = 0;
    pthread_mutex_lock(&it->mu);
    /* First point with a version newer than the one read. */
    size_t lo = 0, hi = it->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (it->pts[mid].v <= v)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < it->n && it->pts[lo].t < t_sent)
        age = t_sent - it->pts[lo].t;
    do_commit(it, v, t_recv);
    pthread_mutex_unlock(&it->mu);

    atomic_fetch_add_explicit(&s->reads[target], 1, memory_order_relaxed);
    if (age > 0) {
        fs_hist_record(&s->age, (uint64_t)age);
        for (int w = 0; w < s->nwin; w++)
            if (age > s->win_ns[w])
                atomic_fetch_add_explicit(&s->stale[target][w], 1, memory_order_relaxed);
    }
    return age;
}

uint64_t fs_stale_count(const fs_stale *s, int target, int win)
{
    if (win < 0 || win >= s->nwin)
        return 0;
    uint64_t n = 0;
    for (int t = 0; t < s->ntargets; t++)
        if (target < 0 || target == t)
            n += atomic_load_explicit(&s->stale[t][win], memory_order_relaxed);
    return n;
}

uint64_t fs_stale_reads(const fs_stale *s, int target)
{
    uint64_t n = 0;
    for (int t = 0; t < s->ntargets; t++)
        if (target < 0 || target == t)
            n += atomic_load_explicit(&s->reads[t], memory_order_relaxed);
    return n;
}
