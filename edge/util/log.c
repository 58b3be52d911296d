/*
 * log.c: leveled, line-buffered logging to stderr. Each call builds the whole line first and
 * writes it with one write(2), so lines from different threads never interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "edge/util/bounds.h"
#include "edge/util/log.h"

int pe_log_level = PE_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void
pe_log__write(int level, const char *module, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], module);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line) - 1)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t r = write(2, line, (size_t)n);
    (void)r;
}

void
pe_log_ratelimited(pe_log_rate_t *rate, int level, const char *module, const char *fmt, ...)
{
    if (level > pe_log_level)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uint64_t next = __atomic_load_n(&rate->_next_ms, __ATOMIC_RELAXED);
    /* One thread wins the slot; the others count themselves as skipped. */
    if (now < next ||
        !__atomic_compare_exchange_n(&rate->_next_ms, &next, now + PE_LOG_RATE_MS, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        __atomic_fetch_add(&rate->_suppressed, 1, __ATOMIC_RELAXED);
        return;
    }
    uint64_t skipped = __atomic_exchange_n(&rate->_suppressed, 0, __ATOMIC_RELAXED);
    char text[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (skipped != 0)
        pe_log__write(level, module, "%s (%llu more like this not logged in the last %u s)", text, (unsigned long long)skipped,
                      PE_LOG_RATE_MS / 1000);
    else
        pe_log__write(level, module, "%s", text);
}

int
pe_log_parse_level(const char *s)
{
    for (int i = 0; i != (int)(sizeof(level_names) / sizeof(level_names[0])); ++i)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    return -1;
}
