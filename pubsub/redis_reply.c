/*
 * redis_reply.c: the Redis engine's reading of replies, kept pure (see redis_reply.h). Redis is
 * trusted to be Redis, but a proxy, a different server on the port or a version with other
 * formats can answer anything: every shape is checked before a field is read, and anything
 * unexpected is refused rather than guessed at.
 */
#include <string.h>
#include <hiredis/hiredis.h>
#include "redis_reply.h"

/* Parses decimal digits s[0..len) (no sign, no space) up to max; returns 0 or -1. */
static int
parse_digits(const char *s, size_t len, unsigned long max, unsigned long *out)
{
    unsigned long v = 0;
    if (len == 0)
        return -1;
    for (size_t i = 0; i != len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
        if (v > max)
            return -1;
    }
    *out = v;
    return 0;
}

int
pe_redis_parse_redirect(const char *err, size_t len, pe_redis_redirect_t *out)
{
    size_t i;
    if (len >= 6 && memcmp(err, "MOVED ", 6) == 0) {
        out->ask = 0;
        i = 6;
    } else if (len >= 4 && memcmp(err, "ASK ", 4) == 0) {
        out->ask = 1;
        i = 4;
    } else {
        return -1;
    }
    const char *sp = memchr(err + i, ' ', len - i);
    unsigned long slot, port;
    if (sp == NULL || parse_digits(err + i, (size_t)(sp - (err + i)), PE_REDIS_SLOTS - 1, &slot) != 0)
        return -1;
    const char *addr = sp + 1, *end = err + len, *colon = NULL;
    for (const char *p = addr; p != end; ++p)
        if (*p == ':')
            colon = p;
    if (colon == NULL || parse_digits(colon + 1, (size_t)(end - colon - 1), 65535, &port) != 0 || port == 0)
        return -1;
    size_t host_len = (size_t)(colon - addr);
    if (host_len >= sizeof(out->host) || memchr(addr, '\0', host_len) != NULL || memchr(addr, ' ', host_len) != NULL)
        return -1;
    memcpy(out->host, addr, host_len);
    out->host[host_len] = '\0';
    out->slot = (unsigned)slot;
    out->port = (unsigned)port;
    return 0;
}

int
pe_redis_parse_read(const redisReply *reply, int *gap, pe_id_t *base, int *reached_end, size_t *num_entries)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 || reply->elements % 2 != 1 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER || reply->element[1]->type != REDIS_REPLY_STRING ||
        reply->element[2]->type != REDIS_REPLY_INTEGER || pe_id_parse(reply->element[1]->str, reply->element[1]->len, base) != 0)
        return -1;
    *gap = reply->element[0]->integer != 0;
    *reached_end = reply->element[2]->integer != 0;
    *num_entries = (reply->elements - 3) / 2;
    return 0;
}

int
pe_redis_read_entry(const redisReply *reply, size_t i, pe_id_t *id, const char **data, size_t *data_len)
{
    const redisReply *rid = reply->element[3 + 2 * i], *rdata = reply->element[4 + 2 * i];
    if (rid->type != REDIS_REPLY_STRING || rdata->type != REDIS_REPLY_STRING || pe_id_parse(rid->str, rid->len, id) != 0)
        return -1;
    *data = rdata->str;
    *data_len = rdata->len;
    return 0;
}

int
pe_redis_slot_range(const redisReply *r, unsigned *from, unsigned *to, const char **host, unsigned *port)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_INTEGER || r->element[2]->type != REDIS_REPLY_ARRAY || r->element[2]->elements < 2 ||
        r->element[2]->element[0]->type != REDIS_REPLY_STRING || r->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
        return 0;
    long long f = r->element[0]->integer, t = r->element[1]->integer, p = r->element[2]->element[1]->integer;
    const redisReply *h = r->element[2]->element[0];
    if (f < 0 || t >= PE_REDIS_SLOTS || f > t || p < 1 || p > 65535 || h->len >= PE_REDIS_HOST_MAX ||
        memchr(h->str, '\0', h->len) != NULL)
        return -1;
    *from = (unsigned)f;
    *to = (unsigned)t;
    *host = h->str;
    *port = (unsigned)p;
    return 1;
}

int
pe_redis_parse_announcement(const char *payload, size_t len, pe_id_t *id, const char **json, size_t *json_len)
{
    const char *sp = memchr(payload, ' ', len);
    if (sp == NULL || pe_id_parse(payload, (size_t)(sp - payload), id) != 0)
        return -1;
    *json = sp + 1;
    *json_len = len - (size_t)(sp + 1 - payload);
    return 0;
}

int
pe_redis_batch_next(const char *payload, size_t len, size_t *pos, pe_id_t *id, const char **json, size_t *json_len)
{
    size_t p = *pos;
    if (p == 0) {
        if (len < 1 || payload[0] != PE_REDIS_BATCH_MARK)
            return -1;
        p = 1;
    } else if (p == len) {
        return 0;
    }
    if (p >= len)
        return -1;
    /* "<id> " */
    const char *sp = memchr(payload + p, ' ', len - p);
    if (sp == NULL || pe_id_parse(payload + p, (size_t)(sp - (payload + p)), id) != 0)
        return -1;
    p = (size_t)(sp - payload) + 1;
    /* "<length> ": decimal, at most 10 digits (a JSON text longer than 9,999,999,999 bytes is no
     * message), no leading zero */
    size_t n = 0, digits = 0;
    while (p < len && payload[p] >= '0' && payload[p] <= '9') {
        if (++digits > 10 || (digits == 2 && n == 0))
            return -1;
        n = n * 10 + (size_t)(payload[p++] - '0');
    }
    if (digits == 0 || p >= len || payload[p] != ' ')
        return -1;
    ++p;
    if (n > len - p)
        return -1;
    *json = payload + p;
    *json_len = n;
    *pos = p + n;
    return 1;
}

int
pe_redis_batch_reply_next(const char *text, size_t len, size_t *pos, pe_id_t *id, int *replayed)
{
    size_t p = *pos;
    if (p == len)
        return p == 0 ? -1 : 0;
    if (p > len)
        return -1;
    if (p != 0) {
        /* the separator after the previous ID, then another ID (no trailing space) */
        if (text[p] != ' ' || ++p == len)
            return -1;
    }
    *replayed = text[p] == '=';
    p += (size_t)*replayed;
    const char *sp = memchr(text + p, ' ', len - p);
    size_t end = sp != NULL ? (size_t)(sp - text) : len;
    if (end == p || pe_id_parse(text + p, end - p, id) != 0)
        return -1;
    *pos = end;
    return 1;
}
