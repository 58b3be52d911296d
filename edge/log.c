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
#include "log.h"

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

int
pe_log_parse_level(const char *s)
{
    for (int i = 0; i != (int)(sizeof(level_names) / sizeof(level_names[0])); ++i)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    return -1;
}
