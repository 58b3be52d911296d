/*
 * log.c: leveled, line-buffered logging to stderr, as text or JSON lines. Each call builds the
 * whole line first and writes it with one write(2), so lines from different threads never
 * interleave.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "edge/util/bounds.h"
#include "edge/util/log.h"

int pe_log_level = PE_LOG_INFO;
int pe_log_format = PE_LOG_FORMAT_TEXT;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* "2026-01-02T03:04:05.678Z" into buf (25 bytes); returns 24. */
static size_t
timestamp(char *buf)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, 25, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    return n > 0 && n < 25 ? (size_t)n : 0;
}

/*
 * Appends s[0..len) to buf[*o..cap) as the inside of a JSON string: quote, backslash and every
 * byte outside printable ASCII escaped (\u00XX, bytes read as Latin-1), so the line is valid JSON
 * whatever a client put in its request. Stops before cap (a value is cut, never half-escaped).
 */
static void
json_escape(char *buf, size_t *o, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            if (*o + 1 > cap)
                return;
            buf[(*o)++] = (char)c;
        } else if (c == '"' || c == '\\') {
            if (*o + 2 > cap)
                return;
            buf[(*o)++] = '\\';
            buf[(*o)++] = (char)c;
        } else {
            if (*o + 6 > cap)
                return;
            memcpy(buf + *o, "\\u00", 4);
            buf[*o + 4] = hex[c >> 4];
            buf[*o + 5] = hex[c & 15];
            *o += 6;
        }
    }
}

static void
write_line(char *line, size_t n)
{
    line[n++] = '\n';
    ssize_t r = write(2, line, n);
    (void)r;
}

void
pe_log__write(int level, const char *module, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    int tn = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (tn < 0)
        return;
    size_t tlen = (size_t)tn < sizeof(text) ? (size_t)tn : sizeof(text) - 1;

    char line[1536], ts[25];
    size_t tslen = timestamp(ts), o = 0, cap = sizeof(line) - 3; /* room for the closing "} and the newline */
    if (pe_log_format == PE_LOG_FORMAT_JSON) {
        int n = snprintf(line, cap, "{\"time\":\"%.*s\",\"level\":\"%s\",\"module\":\"", (int)tslen, ts, level_names[level]);
        o = (size_t)n;
        json_escape(line, &o, cap - 10, module, strlen(module));
        memcpy(line + o, "\",\"msg\":\"", 9);
        o += 9;
        json_escape(line, &o, cap, text, tlen);
        line[o++] = '"';
        line[o++] = '}';
    } else {
        int n = snprintf(line, cap, "%.*s %s [%s] %.*s", (int)tslen, ts, level_names[level], module, (int)tlen, text);
        o = n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
    }
    write_line(line, o);
}

/* ---- structured events ---------------------------------------------------------------------- */

void
pe_log_event_begin(pe_log_event_t *e, const char *module, const char *event)
{
    char ts[25];
    size_t tslen = timestamp(ts);
    int level = pe_log_format == PE_LOG_FORMAT_JSON ? PE_LOG_INFO : PE_LOG_DEBUG;
    int n;
    if (pe_log_format == PE_LOG_FORMAT_JSON)
        n = snprintf(e->buf, sizeof(e->buf), "{\"time\":\"%.*s\",\"level\":\"%s\",\"module\":\"%s\",\"event\":\"%s\"", (int)tslen,
                     ts, level_names[level], module, event);
    else
        n = snprintf(e->buf, sizeof(e->buf), "%.*s %s [%s] %s", (int)tslen, ts, level_names[level], module, event);
    e->len = n > 0 ? (size_t)n : 0;
}

/* What a field may use: the rest of the buffer less the closing brace and newline. */
#define EVENT_CAP(e) (sizeof((e)->buf) - 2)

void
pe_log_event_str(pe_log_event_t *e, const char *key, const char *s, size_t len)
{
    size_t klen = strlen(key);
    if (e->len + klen + 6 > EVENT_CAP(e))
        return;
    if (pe_log_format == PE_LOG_FORMAT_JSON) {
        e->buf[e->len++] = ',';
        e->buf[e->len++] = '"';
        memcpy(e->buf + e->len, key, klen);
        e->len += klen;
        memcpy(e->buf + e->len, "\":\"", 3);
        e->len += 3;
        json_escape(e->buf, &e->len, EVENT_CAP(e) - 1, s, len);
        e->buf[e->len++] = '"';
    } else {
        /* key="value", escaped like JSON so one line stays one line */
        e->buf[e->len++] = ' ';
        memcpy(e->buf + e->len, key, klen);
        e->len += klen;
        e->buf[e->len++] = '=';
        e->buf[e->len++] = '"';
        json_escape(e->buf, &e->len, EVENT_CAP(e) - 1, s, len);
        e->buf[e->len++] = '"';
    }
}

static void
event_raw(pe_log_event_t *e, const char *key, const char *value)
{
    int n =
        snprintf(e->buf + e->len, EVENT_CAP(e) - e->len, pe_log_format == PE_LOG_FORMAT_JSON ? ",\"%s\":%s" : " %s=%s", key, value);
    if (n > 0 && (size_t)n < EVENT_CAP(e) - e->len)
        e->len += (size_t)n;
}

void
pe_log_event_uint(pe_log_event_t *e, const char *key, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
    event_raw(e, key, num);
}

void
pe_log_event_seconds(pe_log_event_t *e, const char *key, uint64_t ms)
{
    char num[32];
    snprintf(num, sizeof(num), "%llu.%03u", (unsigned long long)(ms / 1000), (unsigned)(ms % 1000));
    event_raw(e, key, num);
}

void
pe_log_event_end(pe_log_event_t *e)
{
    if (pe_log_format == PE_LOG_FORMAT_JSON)
        e->buf[e->len++] = '}';
    write_line(e->buf, e->len);
}

void
pe_log_peer_set(pe_log_peer_t *peer, const struct sockaddr *sa, socklen_t len)
{
    *peer = (pe_log_peer_t){{0}, 0, 0};
    if (len == 0)
        return;
    if (len >= (socklen_t)sizeof(struct sockaddr_in) && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(peer->addr, &in->sin_addr, 4);
        peer->port = ntohs(in->sin_port);
        peer->family = AF_INET;
    } else if (len >= (socklen_t)sizeof(struct sockaddr_in6) && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(peer->addr, &in6->sin6_addr, 16);
        peer->port = ntohs(in6->sin6_port);
        peer->family = AF_INET6;
    }
}

size_t
pe_log_peer_format(const pe_log_peer_t *peer, char *buf)
{
    char a[INET6_ADDRSTRLEN];
    if (peer->family == 0 || inet_ntop(peer->family, peer->addr, a, sizeof(a)) == NULL) {
        memcpy(buf, "-", 2);
        return 1;
    }
    int n = snprintf(buf, PE_LOG_PEER_MAX, peer->family == AF_INET6 ? "[%s]:%u" : "%s:%u", a, (unsigned)peer->port);
    return n > 0 && n < PE_LOG_PEER_MAX ? (size_t)n : 0;
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
pe_log_parse_format(const char *s)
{
    return strcasecmp(s, "text") == 0 ? PE_LOG_FORMAT_TEXT : strcasecmp(s, "json") == 0 ? PE_LOG_FORMAT_JSON : -1;
}

int
pe_log_parse_level(const char *s)
{
    for (int i = 0; i != (int)(sizeof(level_names) / sizeof(level_names[0])); ++i)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    return -1;
}
