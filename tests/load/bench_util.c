/*
 * bench_util.c: the small pure helpers of pushedge-bench: clock, latency histogram, SHA-1 and
 * base64 (for Sec-WebSocket-Accept, so the tool needs no TLS library), a minimal HTTP response
 * head scanner, the payload marker parser and the /proc readers for server RSS and CPU.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "bench.h"

uint64_t
pb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
pb_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pushedge-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void *
pb_malloc(size_t sz)
{
    void *p = malloc(sz);
    if (p == NULL)
        pb_die("out of memory (%zu bytes)", sz);
    return p;
}

void *
pb_realloc(void *p, size_t sz)
{
    p = realloc(p, sz);
    if (p == NULL)
        pb_die("out of memory (%zu bytes)", sz);
    return p;
}

/* ---- histogram ------------------------------------------------------------------------------- */

/* Bucket layout: v < 128 maps to itself; above, with e = msb(v) - 6, to e * 64 + (v >> e), where
 * v >> e is in [64, 128): 64 buckets per power of two. */
static size_t
hist_index(uint64_t v)
{
    if (v < 128)
        return (size_t)v;
    unsigned e = 63 - (unsigned)__builtin_clzll(v) - 6;
    return (size_t)e * 64 + (size_t)(v >> e);
}

static uint64_t
hist_upper(size_t idx)
{
    if (idx < 128)
        return idx;
    unsigned e = (unsigned)(idx >> 6) - 1;
    uint64_t m = idx - (uint64_t)e * 64;
    return ((m + 1) << e) - 1;
}

void
pb_hist_add(pb_hist_t *h, uint64_t us)
{
    /* 60 s is the documented range; anything above is a stall, and it still shows in max. */
    size_t idx = hist_index(us > 60000000u ? 60000000u : us);
    h->count[idx]++;
    h->total++;
    if (us > h->max)
        h->max = us;
}

void
pb_hist_merge(pb_hist_t *dst, const pb_hist_t *src)
{
    for (size_t i = 0; i != PB_HIST_BUCKETS; ++i)
        dst->count[i] += src->count[i];
    dst->total += src->total;
    if (src->max > dst->max)
        dst->max = src->max;
}

void
pb_hist_print_sparse(const pb_hist_t *h)
{
    int first = 1;
    putchar('[');
    for (size_t i = 0; i != PB_HIST_BUCKETS; ++i) {
        if (h->count[i] == 0)
            continue;
        /* The upper bound, as pb_hist_quantile reports it (capped at the maximum seen). */
        uint64_t v = hist_upper(i);
        printf("%s[%llu,%llu]", first ? "" : ",", (unsigned long long)(v > h->max ? h->max : v), (unsigned long long)h->count[i]);
        first = 0;
    }
    putchar(']');
}

uint64_t
pb_hist_quantile(const pb_hist_t *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i != PB_HIST_BUCKETS; ++i) {
        seen += h->count[i];
        if (seen >= rank) {
            uint64_t v = hist_upper(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- SHA-1 (FIPS 180-4), only for the 60-byte handshake accept value --------------------- */

#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void
sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80];
    for (int i = 0; i != 16; ++i)
        w[i] = (uint32_t)p[i * 4] << 24 | (uint32_t)p[i * 4 + 1] << 16 | (uint32_t)p[i * 4 + 2] << 8 | p[i * 4 + 3];
    for (int i = 16; i != 80; ++i)
        w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i != 80; ++i) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        uint32_t t = ROL(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = ROL(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void
pb_sha1(const void *data, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    const uint8_t *p = data;
    size_t left = len;
    for (; left >= 64; p += 64, left -= 64)
        sha1_block(h, p);
    uint8_t last[128] = {0};
    memcpy(last, p, left);
    last[left] = 0x80;
    size_t tot = left + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i != 8; ++i)
        last[tot - 1 - i] = (uint8_t)(bits >> (8 * i));
    sha1_block(h, last);
    if (tot == 128)
        sha1_block(h, last + 64);
    for (int i = 0; i != 5; ++i) {
        out[i * 4] = (uint8_t)(h[i] >> 24);
        out[i * 4 + 1] = (uint8_t)(h[i] >> 16);
        out[i * 4 + 2] = (uint8_t)(h[i] >> 8);
        out[i * 4 + 3] = (uint8_t)h[i];
    }
}

size_t
pb_base64(const uint8_t *in, size_t len, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

/* ---- text ------------------------------------------------------------------------------------ */

const char *
pb_find(const char *hay, size_t hay_len, const char *needle, size_t needle_len)
{
    return memmem(hay, hay_len, needle, needle_len);
}

long
pb_http_head(const char *buf, size_t len, int *status)
{
    const char *end = pb_find(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return len > 16384 ? -1 : 0;
    /* "HTTP/1.x NNN" */
    if (end - buf < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ' || !isdigit((unsigned char)buf[9]) ||
        !isdigit((unsigned char)buf[10]) || !isdigit((unsigned char)buf[11]))
        return -1;
    *status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    return end + 4 - buf;
}

const char *
pb_http_header(const char *head, size_t head_len, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *p = pb_find(head, head_len, "\r\n", 2), *end = head + head_len;
    while (p != NULL && p + 2 < end) {
        const char *line = p + 2;
        const char *eol = pb_find(line, (size_t)(end - line), "\r\n", 2);
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - line) > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                ++v;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                --ve;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol == end ? NULL : eol;
    }
    return NULL;
}

char *
pb_expand(const char *tmpl, const char *channel)
{
    size_t clen = strlen(channel), cap = strlen(tmpl) + 1, o = 0;
    for (const char *p = tmpl; (p = strstr(p, "{channel}")) != NULL; p += 9)
        cap += clen;
    char *out = pb_malloc(cap);
    for (const char *p = tmpl; *p != '\0';) {
        if (strncmp(p, "{channel}", 9) == 0) {
            memcpy(out + o, channel, clen);
            o += clen;
            p += 9;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return out;
}

int
pb_parse_marker(const char *p, const char *end, uint32_t *seq, uint64_t *send_ns)
{
    uint64_t v[3] = {0, 0, 0};
    for (int field = 0; field != 3; ++field) {
        const char *start = p;
        while (p < end && *p >= '0' && *p <= '9')
            v[field] = v[field] * 10 + (uint64_t)(*p++ - '0');
        if (p == start || p == end)
            return -1;
        if (*p++ != (field == 2 ? '"' : ':'))
            return -1;
    }
    if (v[2] != pb_cfg->run_id)
        return 0;
    *seq = (uint32_t)v[0];
    *send_ns = v[1];
    return 1;
}

/* ---- /proc ----------------------------------------------------------------------------------- */

long
pb_server_rss_kb(void)
{
    long sum = 0;
    for (uint32_t i = 0; i != pb_cfg->npid; ++i) {
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pb_cfg->pid[i]);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            return -1;
        long kb = -1;
        while (fgets(line, sizeof(line), f) != NULL)
            if (strncmp(line, "VmRSS:", 6) == 0)
                kb = strtol(line + 6, NULL, 10);
        fclose(f);
        if (kb < 0)
            return -1;
        sum += kb;
    }
    return sum;
}

/* Nanosecond CPU time of one process: the sum of its threads' sum_exec_runtime (first field of
 * /proc/PID/task/TID/schedstat, present even without CONFIG_SCHEDSTATS). /proc/PID/stat has only
 * clock ticks (10 ms), too coarse for a few seconds of publishing. Threads that already exited
 * are missing, which for a server whose threads live as long as it does is nothing. */
static long long
task_cpu_ns(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    long long sum = 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char p2[320], buf[128];
        snprintf(p2, sizeof(p2), "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        FILE *f = fopen(p2, "r");
        if (f == NULL)
            continue; /* the thread just exited */
        if (fgets(buf, sizeof(buf), f) != NULL) {
            sum += strtoll(buf, NULL, 10);
            ++n;
        }
        fclose(f);
    }
    closedir(d);
    return n != 0 ? sum : -1;
}

static long long
stat_cpu_us(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name (field 2) may contain spaces and parentheses: count from the last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long long utime, stime;
    /* After ")": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    return (long long)((utime + stime) * 1000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
}

long long
pb_server_cpu_us(void)
{
    long long sum = 0;
    for (uint32_t i = 0; i != pb_cfg->npid; ++i) {
        long long ns = task_cpu_ns(pb_cfg->pid[i]), us = ns >= 0 ? ns / 1000 : stat_cpu_us(pb_cfg->pid[i]);
        if (us < 0)
            return -1;
        sum += us;
    }
    return sum;
}
