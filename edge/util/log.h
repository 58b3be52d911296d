/*
 * Leveled logging to stderr: one line per event, tagged with a module and (where there is one) a
 * connection id. The level is checked before formatting, so disabled levels cost a compare.
 *
 * Two formats (--log-format): text, for people, and json, one JSON object per line for log
 * pipelines ({"time","level","module","msg"} for every line, and named fields for the
 * structured events of pe_log_event_*: connection open and close, refused requests).
 */
#ifndef PE_LOG_H
#define PE_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum { PE_LOG_ERROR = 0, PE_LOG_WARN, PE_LOG_INFO, PE_LOG_DEBUG };
enum { PE_LOG_FORMAT_TEXT = 0, PE_LOG_FORMAT_JSON };

extern int pe_log_level;
extern int pe_log_format;

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
/** Parses "text" or "json"; returns PE_LOG_FORMAT_* or -1. */
int pe_log_parse_format(const char *s);

/* ---- structured events ---------------------------------------------------------------------- */

/*
 * The level of the structured events: info in json (what the format is for), debug in text (a
 * line per connection would drown the text log people read). Check pe_log_events_enabled()
 * before building one.
 */
static inline int
pe_log_events_enabled(void)
{
    return pe_log_level >= (pe_log_format == PE_LOG_FORMAT_JSON ? PE_LOG_INFO : PE_LOG_DEBUG);
}

/* A peer's address kept small (a connection keeps one for its close line). family 0: none. */
typedef struct st_pe_log_peer_t {
    uint8_t addr[16];
    uint16_t port;
    uint8_t family; /* 0, AF_INET or AF_INET6 */
} pe_log_peer_t;
void pe_log_peer_set(pe_log_peer_t *peer, const struct sockaddr *sa, socklen_t len);
/** "1.2.3.4:5678", "[::1]:5678" or "-"; buf needs PE_LOG_PEER_MAX bytes. Returns the length. */
#define PE_LOG_PEER_MAX 56
size_t pe_log_peer_format(const pe_log_peer_t *peer, char *buf);

/* One event line, built field by field; long values are cut so the line fits. */
typedef struct st_pe_log_event_t {
    char buf[2048];
    size_t len;
} pe_log_event_t;
void pe_log_event_begin(pe_log_event_t *e, const char *module, const char *event);
void pe_log_event_str(pe_log_event_t *e, const char *key, const char *s, size_t len);
void pe_log_event_uint(pe_log_event_t *e, const char *key, uint64_t v);
/** A duration in ms, written as seconds with millisecond precision. */
void pe_log_event_seconds(pe_log_event_t *e, const char *key, uint64_t ms);
/** Writes the line (one write(2)). */
void pe_log_event_end(pe_log_event_t *e);

#endif
