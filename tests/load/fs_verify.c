/*
 * fs_verify.c: decides from the audits and the acknowledgements the tester
 * received whether the sale was correct.
 */
#include "fs.h"

#include <stdlib.h>

static int cmp_ack_id(const void *a, const void *b)
{
    int64_t x = ((const fs_ack *)a)->order_id, y = ((const fs_ack *)b)->order_id;
    return (x > y) - (x < y);
}

static int cmp_ack_user(const void *a, const void *b)
{
    int32_t x = ((const fs_ack *)a)->user, y = ((const fs_ack *)b)->user;
    return (x > y) - (x < y);
}

static int has_id(const fs_audit *a, int64_t id)
{
    size_t lo = 0, hi = a->norder_ids;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (a->order_ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < a->norder_ids && a->order_ids[lo] == id;
}

static int64_t max3(int64_t a, int64_t b, int64_t c)
{
    int64_t m = a > b ? a : b;
    return m > c ? m : c;
}

void fs_verify(const fs_verify_in *in, fs_verify_out *out)
{
    static const fs_audit empty;
    const fs_audit *b = in->before ? in->before : &empty;
    const fs_audit *a = in->after;
    *out = (fs_verify_out){0};

    for (size_t i = 0; i < in->nacks; i++)
        out->acked_units += in->acks[i].qty;
    out->sold_units = a->units_sold - b->units_sold;

    out->oversold = max3(0, a->units_sold - a->units_supplied, -a->stock);
    out->ledger_mismatch = llabs(a->units_supplied - a->units_sold - a->stock);

    /* Lost: an acknowledged order the database does not list. Without the
     * id list, fall back to the unit count. */
    if (a->has_order_ids) {
        for (size_t i = 0; i < in->nacks; i++)
            if (!has_id(a, in->acks[i].order_id)) {
                if (out->lost < (int64_t)(sizeof(out->lost_first) / sizeof(out->lost_first[0])))
                    out->lost_first[out->lost] = in->acks[i];
                out->lost++;
            }
    } else if (out->acked_units > out->sold_units) {
        out->lost = out->acked_units - out->sold_units;
    }

    /* Duplicates: keys the database holds twice, and one order id
     * acknowledged to two different requests. */
    out->duplicates = a->duplicate_idempotency_keys;
    if (in->nacks > 1) {
        qsort(in->acks, in->nacks, sizeof(*in->acks), cmp_ack_id);
        for (size_t i = 1; i < in->nacks; i++)
            if (in->acks[i].order_id == in->acks[i - 1].order_id)
                out->duplicates++;
    }

    if (in->per_user_limit > 0) {
        if (a->max_user_qty > in->per_user_limit)
            out->limit_violations++;
        if (in->nacks > 0) {
            qsort(in->acks, in->nacks, sizeof(*in->acks), cmp_ack_user);
            int64_t sum = 0;
            for (size_t i = 0; i < in->nacks; i++) {
                if (i > 0 && in->acks[i].user != in->acks[i - 1].user)
                    sum = 0;
                sum += in->acks[i].qty;
                /* Counted once per user, when the sum first crosses. */
                if (sum > in->per_user_limit && sum - in->acks[i].qty <= in->per_user_limit)
                    out->limit_violations++;
            }
        }
    }

    int64_t explained = out->acked_units + in->unknown_units;
    if (out->sold_units > explained)
        out->phantom_units = out->sold_units - explained;

    out->passed = out->oversold == 0 && out->ledger_mismatch == 0 && out->lost == 0 &&
                  out->duplicates == 0 && out->limit_violations == 0 &&
                  out->phantom_units == 0;
}
