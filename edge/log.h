/*
 * Leveled logging to stderr: one line per event, tagged with a module and (where there is one) a
 * connection id. The level is checked before formatting, so disabled levels cost a compare.
 */
#ifndef PE_LOG_H
#define PE_LOG_H

enum { PE_LOG_ERROR = 0, PE_LOG_WARN, PE_LOG_INFO, PE_LOG_DEBUG };

extern int pe_log_level;

void pe_log__write(int level, const char *module, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define pe_log(level, module, ...)                                                                                                 \
    do {                                                                                                                           \
        if ((level) <= pe_log_level)                                                                                               \
            pe_log__write((level), (module), __VA_ARGS__);                                                                         \
    } while (0)

/** Parses "error", "warn", "info" or "debug"; returns the level or -1. */
int pe_log_parse_level(const char *s);

#endif
