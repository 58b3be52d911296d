/*
 * query.c: the subscription query (query.h). Unknown parameters are ignored so that clients
 * can add cache-busting or tracing parameters; everything we do read is validated strictly.
 */
#include <string.h>
#include "pubsub/stream_id.h"
#include "edge/util/query.h"

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long
pe_query_decode(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; ++i) {
        if (s[i] == '%') {
            int hi, lo;
            if (i + 2 >= len)
                return -1; /* a truncated escape */
            if ((hi = hexval(s[i + 1])) < 0 || (lo = hexval(s[i + 2])) < 0)
                return -1;
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else if (s[i] == '+') {
            out[o++] = ' ';
        } else {
            out[o++] = s[i];
        }
    }
    return (long)o;
}

/* 1 if the parameter name n[0..nl) decodes to "token" (percent-escapes and all: a client that
 * writes t%6Fken still sends a token). */
static int
is_secret_param(const char *n, size_t nl)
{
    char name[16];
    if (nl >= sizeof(name) || nl < 5)
        return 0; /* "token" escaped in full is 15 bytes */
    long dl = pe_query_decode(n, nl, name);
    return dl == 5 && memcmp(name, "token", 5) == 0;
}

size_t
pe_query_redact(const char *path, size_t len, char *out, size_t cap)
{
    size_t o = 0;
#define PUT(s, n)                                                                                                                  \
    do {                                                                                                                           \
        size_t n_ = (n) < cap - 1 - o ? (n) : cap - 1 - o;                                                                         \
        memcpy(out + o, (s), n_);                                                                                                  \
        o += n_;                                                                                                                   \
    } while (0)
    const char *q = memchr(path, '?', len);
    PUT(path, q != NULL ? (size_t)(q - path) : len);
    if (q != NULL) {
        const char *p = q + 1, *end = path + len;
        int first = 1;
        while (p <= end) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            const char *pe = amp != NULL ? amp : end;
            const char *eq = memchr(p, '=', (size_t)(pe - p));
            if (pe != p && !is_secret_param(p, (size_t)((eq != NULL ? eq : pe) - p))) {
                PUT(first ? "?" : "&", 1);
                PUT(p, (size_t)(pe - p));
                first = 0;
            }
            p = pe + 1;
        }
    }
#undef PUT
    out[o] = '\0';
    return o;
}

/* Calls cb for every name=value pair; stops early when cb returns non-zero (and returns it). */
static int
each_param(const char *qs, size_t len, int (*cb)(const char *n, size_t nl, const char *v, size_t vl, void *arg), void *arg)
{
    const char *p = qs, *end = qs + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp != NULL ? amp : end;
        if (pe != p) {
            const char *eq = memchr(p, '=', (size_t)(pe - p));
            const char *ne = eq != NULL ? eq : pe, *vs = eq != NULL ? eq + 1 : pe;
            int r = cb(p, (size_t)(ne - p), vs, (size_t)(pe - vs), arg);
            if (r != 0)
                return r;
        }
        p = pe + 1;
    }
    return 0;
}

struct get_ctx {
    const char *name;
    char *out;
    long result;
};

static int
on_get(const char *n, size_t nl, const char *v, size_t vl, void *arg)
{
    struct get_ctx *ctx = arg;
    if (nl != strlen(ctx->name) || memcmp(n, ctx->name, nl) != 0)
        return 0;
    ctx->result = pe_query_decode(v, vl, ctx->out);
    if (ctx->result < 0)
        ctx->result = -2;
    return 1;
}

long
pe_query_get(const char *qs, size_t len, const char *name, char *out)
{
    struct get_ctx ctx = {name, out, -1};
    each_param(qs, len, on_get, &ctx);
    return ctx.result;
}

struct parse_ctx {
    pe_sub_query_t *q;
    char *arena;
    size_t used;
    const char *code, *err;
};

#define NAME_IS(lit) (nl == sizeof(lit) - 1 && memcmp(n, lit, nl) == 0)

static int
on_param(const char *n, size_t nl, const char *v, size_t vl, void *arg)
{
    struct parse_ctx *ctx = arg;
    pe_sub_query_t *q = ctx->q;
    if (!(NAME_IS("channel") || NAME_IS("since") || NAME_IS("padding") || NAME_IS("presence")))
        return 0;
    char *dst = ctx->arena + ctx->used;
    long dl = pe_query_decode(v, vl, dst);
    if (dl < 0) {
        ctx->code = "bad_query";
        ctx->err = "malformed percent-encoding in the query string";
        return -1;
    }
    if (NAME_IS("channel")) {
        if (!pe_channel_is_valid(dst, (size_t)dl)) {
            ctx->code = "bad_channel";
            ctx->err = pe_ps_err_bad_channel;
            return -1;
        }
        for (size_t i = 0; i != q->num_channels; ++i)
            if (q->channels[i].len == (size_t)dl && memcmp(q->channels[i].name, dst, (size_t)dl) == 0)
                return 0; /* a repeated channel is the same subscription */
        if (q->num_channels == PE_CURSOR_MAX_ENTRIES) {
            ctx->code = "too_many_channels";
            ctx->err = "too many channels in one subscription (at most 64)";
            return -1;
        }
        q->channels[q->num_channels].name = dst;
        q->channels[q->num_channels].len = (size_t)dl;
        ++q->num_channels;
        ctx->used += (size_t)dl;
    } else if (NAME_IS("since")) {
        const char *perr = NULL;
        if (pe_cursor_parse(dst, (size_t)dl, &q->since, &perr) != 0) {
            ctx->code = "bad_cursor";
            ctx->err = perr != NULL ? perr : "malformed cursor";
            return -1;
        }
        q->has_since = 1;
    } else if (NAME_IS("presence")) {
        q->presence = dl == 1 && dst[0] == '1';
    } else {
        q->padding = dl == 1 && dst[0] == '1';
    }
    return 0;
}

int
pe_sub_query_parse(const char *qs, size_t len, pe_sub_query_t *out, char *arena, const char **code, const char **err)
{
    struct parse_ctx ctx = {out, arena, 0, NULL, NULL};
    out->num_channels = 0;
    out->has_since = 0;
    out->since.kind = PE_CURSOR_NONE;
    out->padding = 0;
    out->presence = 0;
    if (each_param(qs, len, on_param, &ctx) != 0) {
        *code = ctx.code;
        *err = ctx.err;
        return -1;
    }
    if (out->num_channels == 0) {
        *code = "missing_channel";
        *err = "at least one channel parameter is required";
        return -1;
    }
    return 0;
}
