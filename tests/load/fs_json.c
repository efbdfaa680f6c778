/*
 * fs_json.c: flat JSON field scanning for the hot path, and the audit
 * parser (cJSON: it is read once per item, not per request).
 */
#include "fs.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Returns a pointer just past `"key"\s*:\s*` in s[0..n), or NULL. */
static const char *find_value(const char *s, size_t n, const char *key)
{
    size_t kl = strlen(key);
    const char *end = s + n, *p = s;
    while (p + kl + 2 <= end) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (q == NULL || q + kl + 2 > end)
            return NULL;
        if (memcmp(q + 1, key, kl) == 0 && q[kl + 1] == '"') {
            const char *v = q + kl + 2;
            while (v < end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r'))
                v++;
            if (v < end && *v == ':') {
                v++;
                while (v < end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r'))
                    v++;
                return v;
            }
        }
        p = q + 1;
    }
    return NULL;
}

int fs_json_int(const char *s, size_t n, const char *key, int64_t *out)
{
    const char *v = find_value(s, n, key), *end = s + n;
    if (v == NULL)
        return -ENOENT;
    int neg = 0;
    if (v < end && *v == '-') {
        neg = 1;
        v++;
    }
    if (v >= end || *v < '0' || *v > '9')
        return -EINVAL;
    uint64_t x = 0;
    while (v < end && *v >= '0' && *v <= '9') {
        if (x > (UINT64_MAX - 9) / 10)
            return -EINVAL;
        x = x * 10 + (uint64_t)(*v - '0');
        v++;
    }
    if (v < end && (*v == '.' || *v == 'e' || *v == 'E'))
        return -EINVAL;
    if (x > (uint64_t)INT64_MAX)
        return -EINVAL;
    *out = neg ? -(int64_t)x : (int64_t)x;
    return 0;
}

int fs_json_bool(const char *s, size_t n, const char *key, int *out)
{
    const char *v = find_value(s, n, key), *end = s + n;
    if (v == NULL)
        return -ENOENT;
    if (end - v >= 4 && memcmp(v, "true", 4) == 0) {
        *out = 1;
        return 0;
    }
    if (end - v >= 5 && memcmp(v, "false", 5) == 0) {
        *out = 0;
        return 0;
    }
    return -EINVAL;
}

int fs_json_str(const char *s, size_t n, const char *key, char *out, size_t outsz)
{
    const char *v = find_value(s, n, key), *end = s + n;
    if (v == NULL)
        return -ENOENT;
    if (v >= end || *v != '"' || outsz == 0)
        return -EINVAL;
    v++;
    const char *q = memchr(v, '"', (size_t)(end - v));
    if (q == NULL)
        return -EINVAL;
    size_t l = (size_t)(q - v);
    if (l >= outsz)
        l = outsz - 1;
    memcpy(out, v, l);
    out[l] = '\0';
    return 0;
}

void fs_audit_free(fs_audit *a)
{
    free(a->order_ids);
    a->order_ids = NULL;
    a->norder_ids = 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int get_int(const cJSON *o, const char *k, int64_t *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(it))
        return -EINVAL;
    *out = (int64_t)it->valuedouble;
    return 0;
}

int fs_audit_parse(const char *body, size_t len, fs_audit *a)
{
    int rc = 0;
    memset(a, 0, sizeof(*a));
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (root == NULL || !cJSON_IsObject(root)) {
        rc = -EINVAL;
        goto out;
    }
    if ((rc = get_int(root, "stock", &a->stock)) < 0 ||
        (rc = get_int(root, "version", &a->version)) < 0 ||
        (rc = get_int(root, "units_supplied", &a->units_supplied)) < 0 ||
        (rc = get_int(root, "units_sold", &a->units_sold)) < 0 ||
        (rc = get_int(root, "orders", &a->orders)) < 0 ||
        (rc = get_int(root, "max_user_qty", &a->max_user_qty)) < 0 ||
        (rc = get_int(root, "duplicate_idempotency_keys", &a->duplicate_idempotency_keys)) < 0)
        goto out;
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(root, "order_ids");
    if (ids != NULL) {
        if (!cJSON_IsArray(ids)) {
            rc = -EINVAL;
            goto out;
        }
        size_t n = (size_t)cJSON_GetArraySize(ids);
        a->order_ids = malloc((n ? n : 1) * sizeof(*a->order_ids));
        if (a->order_ids == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, ids) {
            if (!cJSON_IsNumber(e)) {
                rc = -EINVAL;
                goto out;
            }
            a->order_ids[a->norder_ids++] = (int64_t)e->valuedouble;
        }
        qsort(a->order_ids, a->norder_ids, sizeof(*a->order_ids), cmp_i64);
        a->has_order_ids = 1;
    }
out:
    if (rc < 0)
        fs_audit_free(a);
    cJSON_Delete(root);
    return rc;
}
