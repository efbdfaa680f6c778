/*
 * fs_report.c: the text report, the sweep table, name=value lines, the
 * JSON summary and the gnuplot rendering.
 */
#include "fs.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *route_name[FS_ROUTES] = {"GET item", "POST buy"};
static const char *route_key[FS_ROUTES] = {"get", "buy"};
static const char *tier_name[FS_TIERS] = {"local", "redis", "db", "none"};

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* "0ms", "100ms", "1s": the window's name in reports and kv keys. */
static void window_name(char *buf, size_t n, int64_t w_ms)
{
    if (w_ms > 0 && w_ms % 1000 == 0)
        snprintf(buf, n, "%llds", (long long)(w_ms / 1000));
    else
        snprintf(buf, n, "%lldms", (long long)w_ms);
}

static double nines(uint64_t stale, uint64_t reads)
{
    if (reads == 0)
        return 0.0;
    if (stale == 0)
        return INFINITY;
    if (stale >= reads)
        return 0.0;
    return -log10((double)stale / (double)reads);
}

static uint64_t outcome(const fs_result *r, int route, int o)
{
    return atomic_load_explicit(&r->outcomes[route][o], memory_order_relaxed);
}

static uint64_t route_count(const fs_result *r, int route)
{
    uint64_t n = 0;
    for (int o = 0; o < FS_O_COUNT; o++)
        n += outcome(r, route, o);
    return n;
}

static int verify_passed(const fs_result *r)
{
    return r->verified && !r->verify_failed;
}

static void lat_row(FILE *f, const char *name, const fs_hist *h, uint64_t count, double secs)
{
    fprintf(f, "  %-9s %9llu %9.0f %8.3f %8.3f %8.3f %8.3f %9.3f\n", name,
            (unsigned long long)count, secs > 0 ? (double)count / secs : 0.0,
            ms(fs_hist_percentile(h, 50)), ms(fs_hist_percentile(h, 90)),
            ms(fs_hist_percentile(h, 99)), ms(fs_hist_percentile(h, 99.9)),
            ms(fs_hist_max(h)));
}

/* A fault's recovery: from the end of its command to its last error
 * (0 when none came after the command returned). */
static double fault_recovery_ms(const fs_result *r, int i)
{
    int64_t last = atomic_load(&r->fault_last_error_ns[i]);
    return last > r->fault_end_ns[i] ? (double)(last - r->fault_end_ns[i]) / 1e6 : 0.0;
}

/* The p99 (ms) of the answers of second s of the run; -1 when none. */
static double second_p99_ms(const fs_result *r, size_t s)
{
    if (s >= r->nslots)
        return -1;
    fs_slot *sl = atomic_load(&r->slots[s]);
    if (sl == NULL || atomic_load(&sl->requests) == 0)
        return -1;
    return ms(fs_hist_percentile(&sl->lat, 99));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A fault's latency recovery: from its command's end to the first second
 * (of the per-second timeline) whose p99 is back within twice the median
 * p99 of the 5 seconds before the fault; -1 when that never happens in the
 * run or there is no second before it to compare with. */
static double fault_p99_recovery_ms(const fs_result *r, int i)
{
    size_t start = (size_t)(r->fault_start_ns[i] / 1000000000);
    double base[5];
    int nb = 0;
    for (size_t s = start >= 5 ? start - 5 : 0; s < start; s++) {
        double p = second_p99_ms(r, s);
        if (p >= 0)
            base[nb++] = p;
    }
    if (nb == 0)
        return -1;
    qsort(base, (size_t)nb, sizeof(base[0]), cmp_double);
    double limit = 2 * base[nb / 2];
    double end_ms = (double)r->fault_end_ns[i] / 1e6;
    for (size_t s = (size_t)(r->fault_end_ns[i] / 1000000000); s < r->nslots; s++) {
        double p = second_p99_ms(r, s);
        if (p >= 0 && p <= limit)
            return (double)s * 1000 > end_ms ? (double)s * 1000 - end_ms : 0.0;
    }
    return -1;
}

/* How long the fleet took to recover, from the fault's start: until its
 * last error and until the p99 was back (fault_p99_recovery_ms after the
 * command's end), whichever came later; -1 when the p99 never came back. */
static double fault_recovered_ms(const fs_result *r, int i)
{
    double p99 = fault_p99_recovery_ms(r, i);
    if (p99 < 0)
        return -1;
    double end = (double)(r->fault_end_ns[i] - r->fault_start_ns[i]) / 1e6;
    double err = end + fault_recovery_ms(r, i);
    return err > end + p99 ? err : end + p99;
}

static int faults_run(const fs_opts *o, const fs_result *r)
{
    int n = 0;
    while (n < o->nfaults && r->fault_end_ns[n] > 0)
        n++;
    return n;
}

/* The nemesis part of the text report. */
static void report_faults(FILE *f, const fs_opts *o, const fs_result *r)
{
    int n = faults_run(o, r);
    uint64_t reads = fs_stale_reads(&r->stale, -1), in = atomic_load(&r->reads_in_faults);
    fprintf(f, "faults (nemesis: %d of %d run; a window is the command's run plus %lld ms)\n", n,
            o->nfaults, (long long)o->fault_grace_ms);
    fprintf(f, "  %3s %-16s %8s %8s %4s %8s %12s %12s %13s\n", "#", "fault", "start_s", "end_s",
            "rc", "errors", "recovery_ms", "p99_back_ms", "recovered_ms");
    for (int i = 0; i < n; i++)
        fprintf(f, "  %3d %-16s %8.2f %8.2f %4d %8llu %12.0f %12.0f %13.0f\n", i, o->faults[i].name,
                (double)r->fault_start_ns[i] / 1e9, (double)r->fault_end_ns[i] / 1e9,
                r->fault_rc[i], (unsigned long long)atomic_load(&r->fault_errors[i]),
                fault_recovery_ms(r, i), fault_p99_recovery_ms(r, i), fault_recovered_ms(r, i));
    fprintf(f, "  (recovery: from the command's end to its last error; p99_back: to the first\n"
               "   second whose p99 is within 2x the median p99 of the 5 s before it, -1 never;\n"
               "   recovered: from the fault's start to the later of the two)\n");
    fprintf(f, "  reads inside fault windows %llu, outside %llu\n", (unsigned long long)in,
            (unsigned long long)(reads - in));
    for (int w = 0; w < o->nwindows; w++) {
        char wn[32];
        window_name(wn, sizeof(wn), o->windows_ms[w]);
        uint64_t si = atomic_load(&r->stale_in_faults[w]);
        uint64_t so = fs_stale_count(&r->stale, -1, w) - si;
        fprintf(f, "  stale > %-7s inside %8llu (%5.2f nines)   outside %8llu (%5.2f nines)\n", wn,
                (unsigned long long)si, nines(si, in), (unsigned long long)so,
                nines(so, reads - in));
    }
    fprintf(f, "  oldest stale read: inside %.1f ms, outside %.1f ms\n",
            ms(atomic_load(&r->max_age_in_faults_ns)), ms(atomic_load(&r->max_age_outside_ns)));
    if (r->monitor_seen)
        fprintf(f, "  the instances' consistency monitor: %lld violations in %lld checks\n",
                (long long)r->monitor_violations, (long long)r->monitor_checks);
}

void fs_report_text(FILE *f, const fs_opts *o, const fs_result *r)
{
    uint64_t total = fs_result_requests(r);
    fprintf(f, "\n== flashsale%s%s ==\n", r->label[0] ? ": " : "", r->label);
    fprintf(f, "%llu requests in %.2f s = %.0f requests/s (%s, %d connections, %d target%s)\n",
            (unsigned long long)total, r->elapsed_s, fs_result_rps(r),
            o->rate > 0 ? "open loop" : "closed loop", o->connections, o->ntargets,
            o->ntargets > 1 ? "s" : "");
    if (o->rate > 0)
        fprintf(f,
                "open loop at %.0f requests/s: latency counted from the intended send time; "
                "sent at %.0f requests/s, send lag p99 %.3f ms (max %.3f), %llu due while their "
                "connection awaited an answer\n",
                o->rate, fs_result_sent_rate(r, o->rate), ms(fs_hist_percentile(&r->send_lag, 99)),
                ms(fs_hist_max(&r->send_lag)), (unsigned long long)atomic_load(&r->busy_sends));
    fprintf(f, "tester CPU: %.1f us per request (%.2f of a core)\n",
            fs_result_cpu_us_per_request(r), r->elapsed_s > 0 ? r->cpu_s / r->elapsed_s : 0.0);
    fprintf(f, "latency (ms)  %9s %9s %8s %8s %8s %8s %9s\n", "count", "rps", "p50", "p90",
            "p99", "p99.9", "max");
    for (int rt = 0; rt < FS_ROUTES; rt++)
        lat_row(f, route_name[rt], &r->lat[rt], route_count(r, rt), r->elapsed_s);
    lat_row(f, "all", &r->all, total, r->elapsed_s);

    fprintf(f, "outcomes\n");
    for (int rt = 0; rt < FS_ROUTES; rt++) {
        fprintf(f, "  %-9s", route_name[rt]);
        int any = 0;
        for (int oc = 0; oc < FS_O_COUNT; oc++) {
            uint64_t n = outcome(r, rt, oc);
            if (n) {
                fprintf(f, "%s %s: %llu", any ? "," : "", fs_outcome_label((fs_outcome)oc),
                        (unsigned long long)n);
                any = 1;
            }
        }
        fprintf(f, "%s\n", any ? "" : " -");
    }
    fprintf(f, "  units sold (acknowledged): %llu; buy retries: %llu; errors: %llu\n",
            (unsigned long long)atomic_load(&r->sold_units),
            (unsigned long long)atomic_load(&r->retries),
            (unsigned long long)fs_result_errors(r));
    double sell_s, sell_rps, after_rps;
    uint64_t sell_p99, after_p99;
    if (fs_result_phases(r, &sell_s, &sell_rps, &after_rps) == 0 &&
        fs_result_phase_percentile(r, 99, &sell_p99, &after_p99) == 0)
        fprintf(f,
                "  selling phase: the last acknowledged buy %.2f s into the run, %.0f "
                "requests/s until then (p99 %.3f ms), %.0f requests/s after it (p99 %.3f ms)\n",
                sell_s, sell_rps, ms(sell_p99), after_rps, ms(after_p99));

    fprintf(f, "reads by tier (X-Cache)\n");
    for (int t = 0; t < o->ntargets; t++) {
        uint64_t n = 0;
        for (int k = 0; k < FS_TIERS; k++)
            n += atomic_load(&r->tiers[t][k]);
        fprintf(f, "  %-24s", o->targets[t].url);
        for (int k = 0; k < FS_TIERS; k++)
            fprintf(f, " %s %5.1f%%", tier_name[k],
                    n ? 100.0 * (double)atomic_load(&r->tiers[t][k]) / (double)n : 0.0);
        fprintf(f, "\n");
    }
    fprintf(f, "  redis hit ratio (of local misses) %.3f, database reads %.1f/s\n",
            fs_result_redis_hit_ratio(r), fs_result_db_reads_per_s(r));

    fprintf(f, "stale reads: version older than one committed more than W before the read\n");
    fprintf(f, "  %-24s %9s", "target", "reads");
    for (int w = 0; w < r->stale.nwin; w++) {
        char wn[32];
        window_name(wn, sizeof(wn), o->windows_ms[w]);
        fprintf(f, "   W=%-6s  nines", wn);
    }
    fprintf(f, "\n");
    for (int t = -1; t < o->ntargets; t++) {
        if (t < 0 && o->ntargets == 1)
            continue;
        uint64_t reads = fs_stale_reads(&r->stale, t);
        fprintf(f, "  %-24s %9llu", t < 0 ? "all" : o->targets[t].url, (unsigned long long)reads);
        for (int w = 0; w < r->stale.nwin; w++) {
            uint64_t s = fs_stale_count(&r->stale, t, w);
            fprintf(f, "   %8llu %6.2f", (unsigned long long)s, nines(s, reads));
        }
        fprintf(f, "\n");
    }
    if (fs_hist_count(&r->stale.age))
        fprintf(f, "  age of stale reads (ms): p50 %.3f p99 %.3f max %.3f\n",
                ms(fs_hist_percentile(&r->stale.age, 50)),
                ms(fs_hist_percentile(&r->stale.age, 99)), ms(fs_hist_max(&r->stale.age)));
    if (o->nfaults > 0)
        report_faults(f, o, r);

    if (!r->verified) {
        fprintf(f, "verification: skipped\n");
        return;
    }
    fprintf(f, "verification (audit)\n");
    for (int i = 0; i < r->nverify; i++) {
        const fs_verify_out *v = &r->verify[i];
        if (v->audit_failed) {
            fprintf(f, "  %s: the audit could not be read: FAILED\n", r->verify_sku[i]);
            continue;
        }
        fprintf(f, "  %s: sold %lld, acknowledged %lld; oversold %lld, ledger %lld, lost %lld, "
                   "duplicates %lld, limit violations %lld, unexplained %lld: %s\n",
                r->verify_sku[i], (long long)v->sold_units, (long long)v->acked_units,
                (long long)v->oversold, (long long)v->ledger_mismatch, (long long)v->lost,
                (long long)v->duplicates, (long long)v->limit_violations,
                (long long)v->phantom_units, v->passed ? "ok" : "FAILED");
        for (int64_t k = 0; k < v->lost && k < 4; k++) {
            const fs_ack *l = &v->lost_first[k];
            int64_t wall = r->t0_wall_ms + l->at_ms;
            time_t secs = (time_t)(wall / 1000);
            struct tm tm;
            char hms[16] = "?";
            if (gmtime_r(&secs, &tm) != NULL)
                strftime(hms, sizeof(hms), "%H:%M:%S", &tm);
            fprintf(f, "    lost order %lld: user u%d, %d unit(s), acknowledged at %.3f s "
                       "(%s.%03d UTC) by instance %d on attempt %d%s\n",
                    (long long)l->order_id, l->user, l->qty, l->at_ms / 1e3, hms,
                    (int)(wall % 1000), l->target, l->attempt + 1,
                    l->replayed ? " (a replay)" : "");
        }
    }
    fprintf(f, "verification: %s\n", verify_passed(r) ? "PASSED" : "FAILED");
}

/* Reads target t answered from its own memory, over the reads it answered
 * with a tier. */
static double local_hit_ratio(const fs_result *r, int t)
{
    uint64_t n = 0;
    for (int k = 0; k < FS_TIERS; k++)
        n += atomic_load(&r->tiers[t][k]);
    return n ? (double)atomic_load(&r->tiers[t][FS_TIER_LOCAL]) / (double)n : 0.0;
}

/* The same for the target that answered the fewest reads from memory. */
static double local_hit_ratio_min(const fs_opts *o, const fs_result *r)
{
    double m = o->ntargets > 0 ? 1.0 : 0.0;
    for (int t = 0; t < o->ntargets; t++)
        if (local_hit_ratio(r, t) < m)
            m = local_hit_ratio(r, t);
    return m;
}

static double sweep_stale_ratio(const fs_result *r, int w)
{
    uint64_t reads = fs_stale_reads(&r->stale, -1);
    return reads ? (double)fs_stale_count(&r->stale, -1, w) / (double)reads : 0.0;
}

void fs_report_sweep(FILE *f, const fs_opts *o, fs_result *const *rs, int n)
{
    fprintf(f, "\n== invalidation delay sweep: the operator's tuning table ==\n");
    fprintf(f, "%9s", "delay_ms");
    for (int w = 0; w < o->nwindows; w++) {
        char wn[32];
        window_name(wn, sizeof(wn), o->windows_ms[w]);
        fprintf(f, " stale>%-6s", wn);
    }
    fprintf(f, " %9s %9s %11s %9s %8s %8s %7s %21s\n", "local_min", "redis_hit", "db_reads/s",
            "req/s", "p50_ms", "p99_ms", "verify", "monitor_viol/checks");
    for (int i = 0; i < n; i++) {
        const fs_result *r = rs[i];
        fprintf(f, "%9lld", (long long)r->delay_ms);
        for (int w = 0; w < o->nwindows; w++)
            fprintf(f, " %5llu %5.2f%%", (unsigned long long)fs_stale_count(&r->stale, -1, w),
                    100.0 * sweep_stale_ratio(r, w));
        char mon[48] = "-";
        if (r->monitor_seen)
            snprintf(mon, sizeof(mon), "%lld/%lld", (long long)r->monitor_violations,
                     (long long)r->monitor_checks);
        fprintf(f, " %9.3f %9.3f %11.1f %9.0f %8.3f %8.3f %7s %21s\n",
                local_hit_ratio_min(o, r), fs_result_redis_hit_ratio(r),
                fs_result_db_reads_per_s(r), fs_result_rps(r),
                ms(fs_hist_percentile(&r->all, 50)), ms(fs_hist_percentile(&r->all, 99)),
                !r->verified ? "skip" : verify_passed(r) ? "pass" : "FAIL", mon);
    }
}

static void kv_run(FILE *f, const fs_opts *o, const fs_result *r, const char *pfx)
{
    int64_t oversold = 0, lost = 0, dups = 0, limit = 0, phantom = 0, ledger = 0, unread = 0;
    for (int i = 0; i < r->nverify; i++) {
        unread += r->verify[i].audit_failed;
        oversold += r->verify[i].oversold;
        lost += r->verify[i].lost;
        dups += r->verify[i].duplicates;
        limit += r->verify[i].limit_violations;
        phantom += r->verify[i].phantom_units;
        ledger += r->verify[i].ledger_mismatch;
    }
    fprintf(f, "%srequests=%llu\n", pfx, (unsigned long long)fs_result_requests(r));
    fprintf(f, "%selapsed_s=%.3f\n", pfx, r->elapsed_s);
    fprintf(f, "%srequests_per_s=%.0f\n", pfx, fs_result_rps(r));
    fprintf(f, "%stester_cpu_us_per_request=%.2f\n", pfx, fs_result_cpu_us_per_request(r));
    fprintf(f, "%sp50_ms=%.3f\n", pfx, ms(fs_hist_percentile(&r->all, 50)));
    fprintf(f, "%sp90_ms=%.3f\n", pfx, ms(fs_hist_percentile(&r->all, 90)));
    fprintf(f, "%sp99_ms=%.3f\n", pfx, ms(fs_hist_percentile(&r->all, 99)));
    fprintf(f, "%sp999_ms=%.3f\n", pfx, ms(fs_hist_percentile(&r->all, 99.9)));
    fprintf(f, "%smax_ms=%.3f\n", pfx, ms(fs_hist_max(&r->all)));
    for (int rt = 0; rt < FS_ROUTES; rt++) {
        fprintf(f, "%s%s_requests=%llu\n", pfx, route_key[rt],
                (unsigned long long)route_count(r, rt));
        fprintf(f, "%s%s_p99_ms=%.3f\n", pfx, route_key[rt],
                ms(fs_hist_percentile(&r->lat[rt], 99)));
    }
    fprintf(f, "%serrors=%llu\n", pfx, (unsigned long long)fs_result_errors(r));
    fprintf(f, "%ssold=%llu\n", pfx, (unsigned long long)atomic_load(&r->sold_units));
    fprintf(f, "%ssold_out_rejections=%llu\n", pfx,
            (unsigned long long)outcome(r, FS_ROUTE_BUY, FS_O_SOLD_OUT));
    fprintf(f, "%soverloaded=%llu\n", pfx,
            (unsigned long long)(outcome(r, FS_ROUTE_GET, FS_O_OVERLOADED) +
                                 outcome(r, FS_ROUTE_BUY, FS_O_OVERLOADED)));
    if (o->rate > 0) {
        fprintf(f, "%soffered_rate_per_s=%.0f\n", pfx, o->rate);
        fprintf(f, "%sachieved_rate_per_s=%.0f\n", pfx, fs_result_sent_rate(r, o->rate));
        fprintf(f, "%ssend_lag_p99_ms=%.3f\n", pfx, ms(fs_hist_percentile(&r->send_lag, 99)));
        fprintf(f, "%ssend_lag_max_ms=%.3f\n", pfx, ms(fs_hist_max(&r->send_lag)));
        fprintf(f, "%sbusy_connection_sends=%llu\n", pfx,
                (unsigned long long)atomic_load(&r->busy_sends));
    }
    double sell_s, sell_rps, after_rps;
    uint64_t sell_p99, after_p99;
    if (fs_result_phases(r, &sell_s, &sell_rps, &after_rps) == 0) {
        fprintf(f, "%sselling_s=%.3f\n", pfx, sell_s);
        fprintf(f, "%sselling_requests_per_s=%.0f\n", pfx, sell_rps);
        fprintf(f, "%safter_selling_requests_per_s=%.0f\n", pfx, after_rps);
        if (fs_result_phase_percentile(r, 99, &sell_p99, &after_p99) == 0) {
            fprintf(f, "%sselling_p99_ms=%.3f\n", pfx, ms(sell_p99));
            fprintf(f, "%safter_selling_p99_ms=%.3f\n", pfx, ms(after_p99));
        }
    }
    if (r->verified) {
        fprintf(f, "%soversold=%lld\n", pfx, (long long)oversold);
        fprintf(f, "%slost=%lld\n", pfx, (long long)lost);
        fprintf(f, "%sduplicates=%lld\n", pfx, (long long)dups);
        fprintf(f, "%slimit_violations=%lld\n", pfx, (long long)limit);
        fprintf(f, "%sunexplained_units=%lld\n", pfx, (long long)phantom);
        fprintf(f, "%sledger_mismatch=%lld\n", pfx, (long long)ledger);
        fprintf(f, "%saudits_failed=%lld\n", pfx, (long long)unread);
    }
    fprintf(f, "%sreads_checked=%llu\n", pfx, (unsigned long long)fs_stale_reads(&r->stale, -1));
    for (int w = 0; w < r->stale.nwin; w++) {
        char wn[32];
        window_name(wn, sizeof(wn), o->windows_ms[w]);
        fprintf(f, "%sstale_reads_over_%s=%llu\n", pfx, wn,
                (unsigned long long)fs_stale_count(&r->stale, -1, w));
    }
    if (o->restock_at_s > 0)
        fprintf(f, "%srestocked_items=%d\n", pfx, r->restocked);
    if (o->nfaults > 0) {
        int n = faults_run(o, r);
        uint64_t in = atomic_load(&r->reads_in_faults);
        fprintf(f, "%sfaults_run=%d\n", pfx, n);
        for (int i = 0; i < n; i++) {
            fprintf(f, "%sfault_%d_name=%s\n", pfx, i, o->faults[i].name);
            fprintf(f, "%sfault_%d_start_ms=%.0f\n", pfx, i, (double)r->fault_start_ns[i] / 1e6);
            fprintf(f, "%sfault_%d_duration_ms=%.0f\n", pfx, i,
                    (double)(r->fault_end_ns[i] - r->fault_start_ns[i]) / 1e6);
            fprintf(f, "%sfault_%d_rc=%d\n", pfx, i, r->fault_rc[i]);
            fprintf(f, "%sfault_%d_errors=%llu\n", pfx, i,
                    (unsigned long long)atomic_load(&r->fault_errors[i]));
            fprintf(f, "%sfault_%d_recovery_ms=%.0f\n", pfx, i, fault_recovery_ms(r, i));
            fprintf(f, "%sfault_%d_p99_recovery_ms=%.0f\n", pfx, i, fault_p99_recovery_ms(r, i));
            fprintf(f, "%sfault_%d_recovered_ms=%.0f\n", pfx, i, fault_recovered_ms(r, i));
        }
        fprintf(f, "%sreads_in_faults=%llu\n", pfx, (unsigned long long)in);
        fprintf(f, "%sreads_outside_faults=%llu\n", pfx,
                (unsigned long long)(fs_stale_reads(&r->stale, -1) - in));
        for (int w = 0; w < r->stale.nwin; w++) {
            char wn[32];
            window_name(wn, sizeof(wn), o->windows_ms[w]);
            uint64_t si = atomic_load(&r->stale_in_faults[w]);
            fprintf(f, "%sstale_in_faults_over_%s=%llu\n", pfx, wn, (unsigned long long)si);
            fprintf(f, "%sstale_outside_faults_over_%s=%llu\n", pfx, wn,
                    (unsigned long long)(fs_stale_count(&r->stale, -1, w) - si));
        }
        fprintf(f, "%smax_stale_age_in_faults_ms=%.1f\n", pfx,
                ms(atomic_load(&r->max_age_in_faults_ns)));
        fprintf(f, "%smax_stale_age_outside_ms=%.1f\n", pfx,
                ms(atomic_load(&r->max_age_outside_ns)));
    }
    if (r->monitor_seen) {
        fprintf(f, "%smonitor_checks=%lld\n", pfx, (long long)r->monitor_checks);
        fprintf(f, "%smonitor_violations=%lld\n", pfx, (long long)r->monitor_violations);
    }
    for (int t = 0; t < o->ntargets; t++)
        fprintf(f, "%slocal_hit_ratio_%d=%.4f\n", pfx, t, local_hit_ratio(r, t));
    fprintf(f, "%slocal_hit_ratio_min=%.4f\n", pfx, local_hit_ratio_min(o, r));
    fprintf(f, "%sredis_hit_ratio=%.4f\n", pfx, fs_result_redis_hit_ratio(r));
    fprintf(f, "%sdb_reads_per_s=%.1f\n", pfx, fs_result_db_reads_per_s(r));
    fprintf(f, "%sverify=%s\n", pfx, !r->verified ? "skipped" : verify_passed(r) ? "pass" : "fail");
}

void fs_report_kv(FILE *f, const fs_opts *o, fs_result *const *rs, int n)
{
    for (int i = 0; i < n; i++) {
        char pfx[48] = "";
        if (rs[i]->delay_ms >= 0 && n > 1)
            snprintf(pfx, sizeof(pfx), "delay_%lldms_", (long long)rs[i]->delay_ms);
        kv_run(f, o, rs[i], pfx);
    }
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */

static cJSON *hist_json(const fs_hist *h)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", (double)fs_hist_count(h));
    cJSON_AddNumberToObject(o, "mean_ms", fs_hist_mean(h) / 1e6);
    cJSON_AddNumberToObject(o, "p50_ms", ms(fs_hist_percentile(h, 50)));
    cJSON_AddNumberToObject(o, "p90_ms", ms(fs_hist_percentile(h, 90)));
    cJSON_AddNumberToObject(o, "p99_ms", ms(fs_hist_percentile(h, 99)));
    cJSON_AddNumberToObject(o, "p99_9_ms", ms(fs_hist_percentile(h, 99.9)));
    cJSON_AddNumberToObject(o, "max_ms", ms(fs_hist_max(h)));
    return o;
}

/* One entry per interval of slots (width seconds) that saw an answer;
 * key names the interval's start. */
static void timeline_json(cJSON *tl, const char *key, _Atomic(fs_slot *) *slots, size_t n,
                          double width)
{
    for (size_t s = 0; tl && s < n; s++) {
        fs_slot *sl = atomic_load(&slots[s]);
        if (sl == NULL)
            continue;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, key, (double)s * width);
        cJSON_AddNumberToObject(e, "requests", (double)atomic_load(&sl->requests));
        cJSON_AddNumberToObject(e, "errors", (double)atomic_load(&sl->errors));
        cJSON_AddNumberToObject(e, "sold", (double)atomic_load(&sl->sold));
        cJSON_AddNumberToObject(e, "p50_ms", ms(fs_hist_percentile(&sl->lat, 50)));
        cJSON_AddNumberToObject(e, "p99_ms", ms(fs_hist_percentile(&sl->lat, 99)));
        cJSON_AddItemToArray(tl, e);
    }
}

static cJSON *run_json(const fs_opts *o, const fs_result *r)
{
    cJSON *j = cJSON_CreateObject();
    if (r->label[0])
        cJSON_AddStringToObject(j, "label", r->label);
    if (r->delay_ms >= 0)
        cJSON_AddNumberToObject(j, "invalidation_delay_ms", (double)r->delay_ms);
    cJSON_AddNumberToObject(j, "elapsed_s", r->elapsed_s);
    cJSON_AddNumberToObject(j, "tester_cpu_us_per_request", fs_result_cpu_us_per_request(r));
    cJSON_AddNumberToObject(j, "requests", (double)fs_result_requests(r));
    cJSON_AddNumberToObject(j, "requests_per_s", fs_result_rps(r));
    cJSON_AddNumberToObject(j, "errors", (double)fs_result_errors(r));
    cJSON_AddNumberToObject(j, "units_sold", (double)atomic_load(&r->sold_units));
    cJSON_AddNumberToObject(j, "retries", (double)atomic_load(&r->retries));
    double sell_s, sell_rps, after_rps;
    uint64_t sell_p99, after_p99;
    if (fs_result_phases(r, &sell_s, &sell_rps, &after_rps) == 0) {
        cJSON *ph = cJSON_AddObjectToObject(j, "selling_phase");
        cJSON_AddNumberToObject(ph, "seconds", sell_s);
        cJSON_AddNumberToObject(ph, "requests_per_s", sell_rps);
        cJSON_AddNumberToObject(ph, "after_requests_per_s", after_rps);
        if (fs_result_phase_percentile(r, 99, &sell_p99, &after_p99) == 0) {
            cJSON_AddNumberToObject(ph, "p99_ms", ms(sell_p99));
            cJSON_AddNumberToObject(ph, "after_p99_ms", ms(after_p99));
        }
    }
    if (o->rate > 0) {
        cJSON *ol = cJSON_AddObjectToObject(j, "open_loop");
        cJSON_AddNumberToObject(ol, "offered_rate_per_s", o->rate);
        cJSON_AddNumberToObject(ol, "achieved_rate_per_s", fs_result_sent_rate(r, o->rate));
        cJSON_AddItemToObject(ol, "send_lag", hist_json(&r->send_lag));
        cJSON_AddNumberToObject(ol, "busy_connection_sends", (double)atomic_load(&r->busy_sends));
    }

    cJSON *lat = cJSON_AddObjectToObject(j, "latency");
    for (int rt = 0; rt < FS_ROUTES; rt++)
        cJSON_AddItemToObject(lat, route_key[rt], hist_json(&r->lat[rt]));
    cJSON_AddItemToObject(lat, "all", hist_json(&r->all));

    cJSON *oc = cJSON_AddObjectToObject(j, "outcomes");
    for (int rt = 0; rt < FS_ROUTES; rt++) {
        cJSON *m = cJSON_AddObjectToObject(oc, route_key[rt]);
        for (int k = 0; k < FS_O_COUNT; k++)
            if (outcome(r, rt, k))
                cJSON_AddNumberToObject(m, fs_outcome_label((fs_outcome)k),
                                        (double)outcome(r, rt, k));
    }

    cJSON *tiers = cJSON_AddObjectToObject(j, "reads_by_tier");
    for (int k = 0; k < FS_TIERS; k++) {
        uint64_t n = 0;
        for (int t = 0; t < o->ntargets; t++)
            n += atomic_load(&r->tiers[t][k]);
        cJSON_AddNumberToObject(tiers, tier_name[k], (double)n);
    }
    cJSON_AddNumberToObject(j, "redis_hit_ratio", fs_result_redis_hit_ratio(r));
    cJSON_AddNumberToObject(j, "db_reads_per_s", fs_result_db_reads_per_s(r));

    cJSON *st = cJSON_AddObjectToObject(j, "staleness");
    cJSON *wins = cJSON_AddArrayToObject(st, "windows_ms");
    for (int w = 0; w < r->stale.nwin; w++)
        cJSON_AddItemToArray(wins, cJSON_CreateNumber((double)o->windows_ms[w]));
    cJSON *per = cJSON_AddArrayToObject(st, "targets");
    for (int t = 0; t < o->ntargets; t++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "target", o->targets[t].url);
        cJSON_AddNumberToObject(e, "reads", (double)fs_stale_reads(&r->stale, t));
        cJSON *arr = cJSON_AddArrayToObject(e, "stale");
        for (int w = 0; w < r->stale.nwin; w++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)fs_stale_count(&r->stale, t, w)));
        cJSON_AddItemToArray(per, e);
    }
    cJSON_AddItemToObject(st, "age_of_stale_reads", hist_json(&r->stale.age));
    if (o->nfaults > 0) {
        /* Inside / outside the nemesis' windows, per window W. */
        uint64_t in = atomic_load(&r->reads_in_faults);
        cJSON *fi = cJSON_AddObjectToObject(st, "fault_windows");
        cJSON_AddNumberToObject(fi, "reads_inside", (double)in);
        cJSON_AddNumberToObject(fi, "reads_outside", (double)(fs_stale_reads(&r->stale, -1) - in));
        cJSON *si = cJSON_AddArrayToObject(fi, "stale_inside");
        cJSON *so = cJSON_AddArrayToObject(fi, "stale_outside");
        for (int w = 0; w < r->stale.nwin; w++) {
            uint64_t x = atomic_load(&r->stale_in_faults[w]);
            cJSON_AddItemToArray(si, cJSON_CreateNumber((double)x));
            cJSON_AddItemToArray(so, cJSON_CreateNumber((double)(fs_stale_count(&r->stale, -1, w) - x)));
        }
        cJSON_AddNumberToObject(fi, "max_age_inside_ms", ms(atomic_load(&r->max_age_in_faults_ns)));
        cJSON_AddNumberToObject(fi, "max_age_outside_ms", ms(atomic_load(&r->max_age_outside_ns)));
        cJSON *fa = cJSON_AddArrayToObject(j, "faults");
        for (int i = 0; i < faults_run(o, r); i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", o->faults[i].name);
            cJSON_AddStringToObject(e, "command", o->faults[i].cmd);
            cJSON_AddNumberToObject(e, "start_s", (double)r->fault_start_ns[i] / 1e9);
            cJSON_AddNumberToObject(e, "end_s", (double)r->fault_end_ns[i] / 1e9);
            cJSON_AddNumberToObject(e, "exit_status", r->fault_rc[i]);
            cJSON_AddNumberToObject(e, "errors", (double)atomic_load(&r->fault_errors[i]));
            cJSON_AddNumberToObject(e, "recovery_ms", fault_recovery_ms(r, i));
            cJSON_AddNumberToObject(e, "p99_recovery_ms", fault_p99_recovery_ms(r, i));
            cJSON_AddNumberToObject(e, "recovered_ms", fault_recovered_ms(r, i));
            cJSON_AddItemToArray(fa, e);
        }
    }
    if (r->monitor_seen) {
        cJSON *mo = cJSON_AddObjectToObject(j, "monitor");
        cJSON_AddNumberToObject(mo, "checks", (double)r->monitor_checks);
        cJSON_AddNumberToObject(mo, "violations", (double)r->monitor_violations);
    }

    cJSON *v = cJSON_AddObjectToObject(j, "verification");
    cJSON_AddBoolToObject(v, "performed", r->verified);
    cJSON_AddBoolToObject(v, "passed", verify_passed(r));
    cJSON *items = cJSON_AddArrayToObject(v, "items");
    for (int i = 0; r->verified && i < r->nverify; i++) {
        const fs_verify_out *x = &r->verify[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "sku", r->verify_sku[i]);
        cJSON_AddNumberToObject(e, "units_sold", (double)x->sold_units);
        cJSON_AddNumberToObject(e, "acknowledged_units", (double)x->acked_units);
        cJSON_AddNumberToObject(e, "oversold", (double)x->oversold);
        cJSON_AddNumberToObject(e, "ledger_mismatch", (double)x->ledger_mismatch);
        cJSON_AddNumberToObject(e, "lost", (double)x->lost);
        cJSON_AddNumberToObject(e, "duplicates", (double)x->duplicates);
        cJSON_AddNumberToObject(e, "limit_violations", (double)x->limit_violations);
        cJSON_AddNumberToObject(e, "unexplained_units", (double)x->phantom_units);
        cJSON_AddBoolToObject(e, "audit_failed", x->audit_failed);
        cJSON_AddBoolToObject(e, "passed", x->passed);
        cJSON_AddItemToArray(items, e);
    }

    timeline_json(cJSON_AddArrayToObject(j, "timeline"), "second", r->slots, r->nslots, 1.0);
    if (r->elapsed_s <= FS_FINE_SLOTS * (FS_FINE_NS / 1e9))
        timeline_json(cJSON_AddArrayToObject(j, "timeline_100ms"), "t_s", r->fine, FS_FINE_SLOTS,
                      FS_FINE_NS / 1e9);
    return j;
}

int fs_report_json(const char *path, const fs_opts *o, fs_result *const *rs, int n)
{
    int rc = 0, passed = 1;
    char *text = NULL;
    FILE *f = NULL;
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        return -ENOMEM;
    cJSON *cfg = cJSON_AddObjectToObject(root, "config");
    cJSON *tg = cJSON_AddArrayToObject(cfg, "targets");
    for (int t = 0; t < o->ntargets; t++)
        cJSON_AddItemToArray(tg, cJSON_CreateString(o->targets[t].url));
    cJSON_AddNumberToObject(cfg, "skus", o->nskus);
    cJSON_AddNumberToObject(cfg, "stock", (double)o->stock);
    cJSON_AddNumberToObject(cfg, "per_user_limit", (double)o->per_user_limit);
    cJSON_AddNumberToObject(cfg, "users", (double)o->users);
    cJSON_AddNumberToObject(cfg, "skew", o->skew);
    cJSON_AddNumberToObject(cfg, "read_ratio", o->read_ratio);
    cJSON_AddNumberToObject(cfg, "qty", (double)o->qty);
    cJSON_AddNumberToObject(cfg, "connections", o->connections);
    cJSON_AddNumberToObject(cfg, "requests", (double)o->requests);
    cJSON_AddNumberToObject(cfg, "duration_s", o->duration_s);
    cJSON_AddNumberToObject(cfg, "rate", o->rate);
    cJSON_AddStringToObject(cfg, "mode", o->rate > 0 ? "open" : "closed");
    cJSON *runs = cJSON_AddArrayToObject(root, "runs");
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToArray(runs, run_json(o, rs[i]));
        if (rs[i]->verified && !verify_passed(rs[i]))
            passed = 0;
    }
    cJSON_AddBoolToObject(root, "passed", passed);
    text = cJSON_Print(root);
    if (text == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((f = fopen(path, "w")) == NULL) {
        rc = -errno;
        goto out;
    }
    if (fputs(text, f) < 0 || fputc('\n', f) < 0)
        rc = -EIO;
out:
    if (f && fclose(f) != 0 && rc == 0)
        rc = -EIO;
    free(text);
    cJSON_Delete(root);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* gnuplot                                                                   */

/* Writes the HdrHistogram-style percentile curve of h: x = 1/(1-p). */
static void curve(FILE *f, const fs_hist *h)
{
    uint64_t n = fs_hist_count(h);
    if (n == 0) {
        fprintf(f, "1 0\n");
        return;
    }
    for (int i = 0;; i++) {
        double inv = pow(2.0, i / 4.0);   /* 1/(1-p) */
        double p = 100.0 * (1.0 - 1.0 / inv);
        fprintf(f, "%g %.4f\n", inv, ms(fs_hist_percentile(h, p)));
        if (inv > (double)n)
            break;
    }
    fprintf(f, "%g %.4f\n", (double)n * 2, ms(fs_hist_max(h)));
}

/* Runs gnuplot on script; its chatter goes to errlog, which the caller
 * shows only when gnuplot failed. */
static int run_gnuplot(const char *script, const char *errlog)
{
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        fd = open(errlog, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0)
            dup2(fd, 2);
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -errno;
    if (!WIFEXITED(st))
        return -EIO;
    if (WEXITSTATUS(st) == 127)
        return -ENOENT;
    return WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

/* "12000 requests, open loop at 5000/s, 64 connections, 2 targets": what
 * ran, for the plot's title. */
static void run_summary(char *buf, size_t n, const fs_opts *o, uint64_t requests)
{
    char loop[64];
    if (o->rate > 0)
        snprintf(loop, sizeof(loop), "open loop at %.0f/s", o->rate);
    else
        snprintf(loop, sizeof(loop), "closed loop");
    snprintf(buf, n, "%llu requests, %s, %d connections, %d target%s",
             (unsigned long long)requests, loop, o->connections, o->ntargets,
             o->ntargets > 1 ? "s" : "");
}

static int plot_run(FILE *sc, const char *dir, const fs_opts *o, const fs_result *r,
                    const char *path)
{
    char p[600], what[200];
    snprintf(p, sizeof(p), "%s/timeline.dat", dir);
    FILE *f = fopen(p, "w");
    if (f == NULL)
        return -errno;
    /* A short run is drawn per 100 ms (a sale of a few seconds would be
     * two or three points per second), a longer one per second. */
    int fine = r->elapsed_s <= FS_FINE_SLOTS * (FS_FINE_NS / 1e9);
    double w = fine ? FS_FINE_NS / 1e9 : 1.0;
    size_t nsl = fine ? FS_FINE_SLOTS : r->nslots;
    _Atomic(fs_slot *) *slots = fine ? r->fine : r->slots;
    uint64_t sold = 0;
    for (size_t s = 0; s < nsl && (double)s * w < r->elapsed_s; s++) {
        fs_slot *sl = atomic_load(&slots[s]);
        /* The last interval is partial: scale it to a rate, and place every
         * interval's point in the middle of the time it covers. */
        double span = r->elapsed_s - (double)s * w;
        span = span > w ? w : span < 0.05 * w ? 0.05 * w : span;
        if (sl == NULL) {   /* nothing answered: a stall shows as 0 */
            fprintf(f, "%.3f 0 0 NaN NaN NaN %llu 0\n", (double)s * w + span / 2,
                    (unsigned long long)sold);
            continue;
        }
        sold += atomic_load(&sl->sold);
        fprintf(f, "%.3f %.0f %.0f %.4f %.4f %.4f %llu %.0f\n", (double)s * w + span / 2,
                (double)atomic_load(&sl->requests) / span,
                (double)atomic_load(&sl->errors) / span, ms(fs_hist_percentile(&sl->lat, 50)),
                ms(fs_hist_percentile(&sl->lat, 99)), ms(fs_hist_max(&sl->lat)),
                (unsigned long long)sold, (double)atomic_load(&sl->stale) / span);
    }
    fclose(f);
    for (int rt = 0; rt <= FS_ROUTES; rt++) {
        snprintf(p, sizeof(p), "%s/curve%d.dat", dir, rt);
        if ((f = fopen(p, "w")) == NULL)
            return -errno;
        curve(f, rt < FS_ROUTES ? &r->lat[rt] : &r->all);
        fclose(f);
    }
    run_summary(what, sizeof(what), o, fs_result_requests(r));
    const char *since = o->rate > 0 ? "intended send time" : "send time";
    const char *per = fine ? "100 ms" : "second";
    char stw[32] = "-";
    if (o->nwindows > 0)
        window_name(stw, sizeof(stw), o->windows_ms[o->nwindows > 1 ? 1 : 0]);
    /* The nemesis' windows, shaded behind the two panels over time: the
     * command's run darker, its grace lighter, the fault named on top. */
    for (int i = 0; i < faults_run(o, r); i++) {
        double x0 = (double)r->fault_start_ns[i] / 1e9, x1 = (double)r->fault_end_ns[i] / 1e9;
        double x2 = x1 + (double)o->fault_grace_ms / 1e3;
        fprintf(sc,
                "set object %d rect from %.3f, graph 0 to %.3f, graph 1 fc rgb '#f4b6b6' "
                "fs solid 0.5 noborder behind\n"
                "set object %d rect from %.3f, graph 0 to %.3f, graph 1 fc rgb '#fbe3e3' "
                "fs solid 0.5 noborder behind\n"
                "set label %d '%s' at %.3f, graph 0.97 font 'sans,8' tc rgb '#a02020'\n",
                2 * i + 1, x0, x1, 2 * i + 2, x1, x2, i + 1, o->faults[i].name, x0);
    }
    fprintf(sc,
            "set terminal pngcairo size 1000,1150 font 'sans,10'\n"
            "set output '%s'\n"
            "set multiplot layout 3,1 title \"flashsale%s%s: %s\" font 'sans,12'\n"
            "set grid\nset lmargin at screen 0.10\nset rmargin at screen 0.80\n"
            "set key outside right top vertical box\nset xrange [0:*]\nset yrange [0:*]\n"
            "set title 'Throughput (per %s of the run) and units sold'\n"
            "set xlabel 'time since start (s)'\nset ylabel 'requests/s'\n"
            "set y2label 'units sold (cumulative)'\nset y2tics\nset y2range [0:%.0f]\n"
            "plot '%s/timeline.dat' using 1:2 with linespoints title 'requests/s', "
            "'' using 1:3 with linespoints title 'errors/s', "
            "'' using 1:8 with linespoints title 'stale reads/s (> %s)', "
            "'' using 1:7 axes x1y2 with lines lw 2 title 'units sold'\n"
            "unset y2tics\nunset y2label\n"
            "set title 'Latency per %s, all routes (from %s)'\n"
            "set ylabel 'latency (ms)'\n"
            "plot '%s/timeline.dat' using 1:4 with linespoints title 'p50', "
            "'' using 1:5 with linespoints title 'p99', "
            "'' using 1:6 with linespoints title 'max'\n"
            "unset object\nunset label\n"
            "set title 'Latency by percentile, whole run (from %s)'\n"
            "set key inside top left opaque box\n"
            "set logscale xy\nset xrange [*:*]\nset yrange [*:*]\nset xlabel 'percentile (%%)'\n"
            "set ylabel 'latency (ms, log scale)'\n"
            "set xtics ('0' 1, '90' 10, '99' 100, '99.9' 1000, '99.99' 10000, "
            "'99.999' 100000, '99.9999' 1000000)\n"
            "plot '%s/curve0.dat' using 1:2 with lines lw 2 title 'GET item', "
            "'%s/curve1.dat' using 1:2 with lines lw 2 title 'POST buy', "
            "'%s/curve2.dat' using 1:2 with lines lw 2 dt 2 title 'all'\n"
            "unset multiplot\n",
            path, r->label[0] ? ", " : "", r->label, what, per,
            sold > 0 ? (double)sold * 1.15 : 1.0, dir, stw, per, since, dir, since, dir, dir, dir);
    return 0;
}

static int plot_sweep(FILE *sc, const char *dir, const fs_opts *o, fs_result *const *rs, int n,
                      const char *path)
{
    char p[600], what[200];
    snprintf(p, sizeof(p), "%s/sweep.dat", dir);
    FILE *f = fopen(p, "w");
    if (f == NULL)
        return -errno;
    for (int i = 0; i < n; i++) {
        const fs_result *r = rs[i];
        fprintf(f, "%lld %.4f %.2f %.4f %.4f", (long long)r->delay_ms,
                fs_result_redis_hit_ratio(r), fs_result_db_reads_per_s(r),
                ms(fs_hist_percentile(&r->all, 50)), ms(fs_hist_percentile(&r->all, 99)));
        for (int w = 0; w < o->nwindows; w++)
            fprintf(f, " %.6f", 100.0 * sweep_stale_ratio(r, w));
        fprintf(f, "\n");
    }
    fclose(f);
    run_summary(what, sizeof(what), o, fs_result_requests(rs[0]));
    fprintf(sc,
            "set terminal pngcairo size 1000,1150 font 'sans,10'\n"
            "set output '%s'\n"
            "set multiplot layout 3,1 title \"flashsale: invalidation delay sweep "
            "(per round: %s)\" font 'sans,12'\n"
            "set grid\nset lmargin at screen 0.10\nset rmargin at screen 0.78\n"
            "set key outside right top box width 2\nset yrange [0:*]\n"
            "set xlabel 'invalidation delay (ms)'\n"
            "set title 'Stale reads: version older than one committed more than W before "
            "the read was sent'\n"
            "set ylabel 'stale reads (%% of reads)'\n"
            "plot ",
            path, what);
    for (int w = 0; w < o->nwindows; w++) {
        char wn[32];
        window_name(wn, sizeof(wn), o->windows_ms[w]);
        fprintf(sc, "%s'%s/sweep.dat' using 1:%d with linespoints title 'W=%s'", w ? ", " : "",
                dir, 6 + w, wn);
    }
    fprintf(sc,
            "\nset title 'Redis hit ratio (reads that missed the local cache) and database "
            "reads'\n"
            "set ylabel 'redis hit ratio (0-1)'\nset y2label 'database reads/s'\n"
            "set y2tics\nset y2range [0:*]\nset key outside right bottom box width 1\n"
            "plot '%s/sweep.dat' using 1:2 with linespoints title 'Redis hits', "
            "'' using 1:3 axes x1y2 with linespoints title 'db reads/s'\n"
            "unset y2tics\nunset y2label\nset key outside right top box width 2\n"
            "set title 'Latency, all routes'\nset ylabel 'latency (ms)'\n"
            "plot '%s/sweep.dat' using 1:4 with linespoints title 'p50', "
            "'' using 1:5 with linespoints title 'p99'\n"
            "unset multiplot\n",
            dir, dir);
    return 0;
}

int fs_report_plot_script(FILE *sc, const char *dir, const char *path, const fs_opts *o,
                          fs_result *const *rs, int n)
{
    if (n < 1)
        return -EINVAL;
    return n == 1 ? plot_run(sc, dir, o, rs[0], path) : plot_sweep(sc, dir, o, rs, n, path);
}

static void rm_dir(const char *dir)
{
    static const char *files[] = {"plot.gp", "timeline.dat", "curve0.dat", "curve1.dat",
                                  "curve2.dat", "sweep.dat", "gnuplot.err"};
    char p[600];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

int fs_report_plot(const char *path, const fs_opts *o, fs_result *const *rs, int n)
{
    char dir[] = "/tmp/flashsale-plot.XXXXXX", sp[600];
    if (n < 1 || mkdtemp(dir) == NULL)
        return n < 1 ? -EINVAL : -errno;
    snprintf(sp, sizeof(sp), "%s/plot.gp", dir);
    int rc;
    FILE *sc = fopen(sp, "w");
    if (sc == NULL) {
        rc = -errno;
        goto out;
    }
    rc = fs_report_plot_script(sc, dir, path, o, rs, n);
    if (fclose(sc) != 0 && rc == 0)
        rc = -EIO;
    if (rc == 0) {
        char ep[600];
        snprintf(ep, sizeof(ep), "%s/gnuplot.err", dir);
        rc = run_gnuplot(sp, ep);
        FILE *ef = rc == -EIO ? fopen(ep, "r") : NULL;
        if (ef) {
            char line[256];
            while (fgets(line, sizeof(line), ef))
                fprintf(stderr, "gnuplot: %s", line);
            fclose(ef);
        }
    }
out:
    rm_dir(dir);
    return rc;
}
