/*
 * router.c: method + path -> route, with {param} segments, 404 and 405.
 *
 * The table is small (a dozen routes), so a linear scan comparing segments
 * is faster than any tree; the hot route is first.
 */
#include <string.h>

#include "api/http_int.h"

const http__route http__routes[HTTP__R_NONE] = {
#define X(id, m, p, admin) [HTTP__R_##id] = {#m, HTTP_##m, p, admin},
    HTTP__ROUTES(X)
#undef X
};

/* Matches path against pattern. Returns 1 and fills the params of m on a
 * match. A {param} matches one non-empty segment. */
static int match_pattern(const char *pat, const char *path, size_t len,
                         http__match *m)
{
    size_t i = 0;
    int np = 0;
    while (*pat) {
        if (*pat == '{') {
            const char *close = strchr(pat, '}');
            size_t start = i;
            while (i < len && path[i] != '/')
                i++;
            if (i == start || np >= HTTP__MAX_PARAMS)
                return 0;
            m->param[np] = path + start;
            m->param_len[np] = i - start;
            np++;
            pat = close + 1;
        } else {
            if (i >= len || path[i] != *pat)
                return 0;
            i++;
            pat++;
        }
    }
    if (i != len)
        return 0;
    m->nparams = np;
    return 1;
}

static int method_ok(const http__route *r, int method)
{
    return r->method_id == method ||
           (method == HTTP_HEAD && r->method_id == HTTP_GET);
}

void http__route_match(int method, const char *path, size_t len,
                       http__match *m)
{
    int path_found = 0;
    m->route = HTTP__R_NONE;
    m->status = 404;
    m->allow[0] = 0;
    m->nparams = 0;
    for (int i = 0; i < HTTP__R_NONE; i++) {
        const http__route *r = &http__routes[i];
        http__match tmp;
        /* Cheap reject on the first byte after the slash. */
        if (r->pattern[1] != '{' && (len < 2 || r->pattern[1] != path[1]))
            continue;
        if (!match_pattern(r->pattern, path, len, &tmp))
            continue;
        if (method_ok(r, method)) {
            memcpy(m->param, tmp.param, sizeof m->param);
            memcpy(m->param_len, tmp.param_len, sizeof m->param_len);
            m->nparams = tmp.nparams;
            m->route = i;
            m->status = 0;
            return;
        }
        /* Remember the methods this path answers, for Allow. */
        size_t al = strlen(m->allow);
        const char *add = r->method;
        int with_head = r->method_id == HTTP_GET;
        size_t need = strlen(add) + (with_head ? 6 : 0) + 2;
        if (al + need < sizeof m->allow) {
            if (al)
                strcat(m->allow, ", ");
            strcat(m->allow, add);
            if (with_head)
                strcat(m->allow, ", HEAD");
        }
        path_found = 1;
    }
    if (path_found)
        m->status = 405;
}
