/*
 * Leveled logging to stderr: one line per event, tagged with a module and (where there is one) a
 * connection id. The level is checked before formatting, so disabled levels cost a compare.
 */
#ifndef PE_LOG_H
#define PE_LOG_H

#include <stdint.h>

enum { PE_LOG_ERROR = 0, PE_LOG_WARN, PE_LOG_INFO, PE_LOG_DEBUG };

extern int pe_log_level;

void pe_log__write(int level, const char *module, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define pe_log(level, module, ...)                                                                                                 \
    do {                                                                                                                           \
        if ((level) <= pe_log_level)                                                                                               \
            pe_log__write((level), (module), __VA_ARGS__);                                                                         \
    } while (0)

/**
 * A rate limit for one kind of log line about peer behaviour or resource exhaustion, shared by
 * every thread (static storage, zero-initialised). pe_log_ratelimited logs at most one line per
 * PE_LOG_RATE_MS per limiter, appending how many lines were skipped since the last one.
 */
typedef struct st_pe_log_rate_t {
    uint64_t _next_ms;    /* monotonic ms before which lines are skipped */
    uint64_t _suppressed; /* lines skipped since the last one logged */
} pe_log_rate_t;

void pe_log_ratelimited(pe_log_rate_t *rate, int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Parses "error", "warn", "info" or "debug"; returns the level or -1. */
int pe_log_parse_level(const char *s);

#endif
