/*
 * A tiny TAP producer for unit tests, in the spirit of picotest: header-only, one test program
 * per module, results on stdout as "ok N - desc" / "not ok N - desc" and a closing "1..N", so
 * that both prove and meson's `protocol: 'tap'` read it.
 *
 *     static void test_parse(void)
 *     {
 *         TAP_EQ_INT(parse("1-2"), 0, "parses");
 *     }
 *     int main(void)
 *     {
 *         tap_subtest("parse", test_parse);
 *         return tap_done();
 *     }
 *
 * Subtests are flat, not TAP 14 indented blocks (meson reports indented lines as unknown): a
 * "# Subtest: name" comment, then the subtest's assertions numbered with the rest, each
 * description prefixed with "name: ". Failed assertions print both sides and the source line as
 * "#" comments. tap_done() returns the exit status (1 if anything failed).
 *
 * tap_guard_copy() places bytes so that they end exactly at a PROT_NONE page: a parser that
 * reads one byte past its input faults even without a sanitizer (picohttpparser's test.c).
 * tap_rng() is a seeded xorshift64* for randomized tests.
 */
#ifndef PE_TAP_H
#define PE_TAP_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define TAP__MAX_DEPTH 8

static int tap__num;    /* assertions so far */
static int tap__failed; /* failed assertions so far */
static int tap__planned = -1;
static const char *tap__prefix[TAP__MAX_DEPTH];
static int tap__depth;

/** Prints a "# ..." diagnostic line. */
__attribute__((format(printf, 1, 2))) static inline void
tap_note(const char *fmt, ...)
{
    va_list ap;
    fputs("# ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
}

/** Optional: announces the number of assertions up front; tap_done() then checks it. */
static inline void
tap_plan(int n)
{
    tap__planned = n;
    printf("1..%d\n", n);
}

/** Prints "1..0 # SKIP reason" and exits 0: for tests whose prerequisites are missing. */
__attribute__((noreturn)) static inline void
tap_skip_all(const char *reason)
{
    printf("1..0 # SKIP %s\n", reason);
    exit(0);
}

/* Records one result; the description is a printf format. Returns ok. */
__attribute__((format(printf, 4, 5))) static inline int
tap__ok(int ok, const char *file, int line, const char *fmt, ...)
{
    char desc[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    printf("%s %d - ", ok ? "ok" : "not ok", ++tap__num);
    for (int i = 0; i < tap__depth; ++i)
        printf("%s: ", tap__prefix[i]);
    /* A bare '#' would start a TAP directive, and a newline would end the line. */
    for (const char *p = desc; *p != '\0'; ++p) {
        if (*p == '#')
            fputc('\\', stdout);
        fputc(*p == '\n' || *p == '\r' ? ' ' : *p, stdout);
    }
    fputc('\n', stdout);
    if (!ok) {
        ++tap__failed;
        tap_note("  Failed at %s line %d.", file, line);
    }
    fflush(stdout);
    return ok;
}

/* Prints len bytes as a C string literal, with at most 200 bytes shown. */
static inline void
tap__print_mem(const char *label, const void *p, size_t len)
{
    const unsigned char *s = p;
    size_t shown = len < 200 ? len : 200;

    printf("#   %8s: ", label);
    if (p == NULL) {
        printf("NULL\n");
        return;
    }
    fputc('"', stdout);
    for (size_t i = 0; i != shown; ++i) {
        if (s[i] == '"' || s[i] == '\\')
            printf("\\%c", s[i]);
        else if (s[i] >= 0x20 && s[i] < 0x7f)
            fputc(s[i], stdout);
        else
            printf("\\x%02x", s[i]);
    }
    printf("\"%s (%zu bytes)\n", shown < len ? "..." : "", len);
}

/** Runs fn as a named group: its assertions' descriptions get "name: " in front. */
static inline void
tap_subtest(const char *name, void (*fn)(void))
{
    int failed_before = tap__failed;

    if (tap__depth == TAP__MAX_DEPTH) {
        fprintf(stderr, "tap.h: subtests nested deeper than %d\n", TAP__MAX_DEPTH);
        abort();
    }
    tap_note("Subtest: %s", name);
    tap__prefix[tap__depth++] = name;
    fn();
    --tap__depth;
    if (tap__failed != failed_before)
        tap_note("Subtest %s: %d failed", name, tap__failed - failed_before);
}

/** Prints the plan (unless tap_plan was used) and returns the exit status: 0 if all passed. */
static inline int
tap_done(void)
{
    if (tap__planned < 0) {
        printf("1..%d\n", tap__num);
    } else if (tap__planned != tap__num) {
        tap_note("Planned %d tests but ran %d.", tap__planned, tap__num);
        return 1;
    }
    if (tap__failed != 0)
        tap_note("Looks like you failed %d test%s of %d.", tap__failed, tap__failed == 1 ? "" : "s", tap__num);
    fflush(stdout);
    return tap__failed != 0 || tap__num == 0;
}

/** Returns 1 if no assertion has failed so far (to stop a subtest early). */
static inline int
tap_all_ok(void)
{
    return tap__failed == 0;
}

/* ---- assertions: each takes a printf-style description after its operands ---- */

#define TAP_OK(cond, ...) tap__ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

#define TAP_EQ_INT(got, want, ...)                                                                                                 \
    do {                                                                                                                           \
        long long tap__g = (long long)(got), tap__w = (long long)(want);                                                           \
        if (!tap__ok(tap__g == tap__w, __FILE__, __LINE__, __VA_ARGS__))                                                           \
            printf("#   %s == %s\n#        got: %lld\n#   expected: %lld\n", #got, #want, tap__g, tap__w);                         \
    } while (0)

#define TAP_EQ_UINT(got, want, ...)                                                                                                \
    do {                                                                                                                           \
        unsigned long long tap__g = (unsigned long long)(got), tap__w = (unsigned long long)(want);                                \
        if (!tap__ok(tap__g == tap__w, __FILE__, __LINE__, __VA_ARGS__))                                                           \
            printf("#   %s == %s\n#        got: %llu\n#   expected: %llu\n", #got, #want, tap__g, tap__w);                         \
    } while (0)

#define TAP_EQ_PTR(got, want, ...)                                                                                                 \
    do {                                                                                                                           \
        const void *tap__g = (got), *tap__w = (want);                                                                              \
        if (!tap__ok(tap__g == tap__w, __FILE__, __LINE__, __VA_ARGS__))                                                           \
            printf("#   %s == %s\n#        got: %p\n#   expected: %p\n", #got, #want, tap__g, tap__w);                             \
    } while (0)

/* NUL-terminated strings; NULL equals only NULL. */
#define TAP_EQ_STR(got, want, ...)                                                                                                 \
    do {                                                                                                                           \
        const char *tap__g = (got), *tap__w = (want);                                                                              \
        int tap__eq = tap__g == NULL || tap__w == NULL ? tap__g == tap__w : strcmp(tap__g, tap__w) == 0;                           \
        if (!tap__ok(tap__eq, __FILE__, __LINE__, __VA_ARGS__)) {                                                                  \
            printf("#   %s == %s\n", #got, #want);                                                                                 \
            tap__print_mem("got", tap__g, tap__g != NULL ? strlen(tap__g) : 0);                                                    \
            tap__print_mem("expected", tap__w, tap__w != NULL ? strlen(tap__w) : 0);                                               \
        }                                                                                                                          \
    } while (0)

/* Byte ranges, compared by length and content. */
#define TAP_EQ_MEM(got, got_len, want, want_len, ...)                                                                              \
    do {                                                                                                                           \
        const void *tap__g = (got), *tap__w = (want);                                                                              \
        size_t tap__gl = (got_len), tap__wl = (want_len);                                                                          \
        int tap__eq = tap__gl == tap__wl && (tap__gl == 0 || memcmp(tap__g, tap__w, tap__gl) == 0);                                \
        if (!tap__ok(tap__eq, __FILE__, __LINE__, __VA_ARGS__)) {                                                                  \
            printf("#   %s == %s\n", #got, #want);                                                                                 \
            tap__print_mem("got", tap__g, tap__gl);                                                                                \
            tap__print_mem("expected", tap__w, tap__wl);                                                                           \
        }                                                                                                                          \
    } while (0)

/* ---- guarded input buffers ---- */

/*
 * Returns a copy of src[0..len) whose last byte is followed by an inaccessible page; release it
 * with tap_guard_free(p, len). Aborts if mmap fails (test infrastructure, not a test result).
 */
static inline char *
tap_guard_copy(const void *src, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), data_pages = (len + page - 1) / page;
    char *base;

    if (data_pages == 0)
        data_pages = 1;
    base = mmap(NULL, (data_pages + 1) * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || mprotect(base + data_pages * page, page, PROT_NONE) != 0) {
        perror("tap.h: mmap");
        abort();
    }
    if (len != 0)
        memcpy(base + data_pages * page - len, src, len);
    return base + data_pages * page - len;
}

static inline void
tap_guard_free(char *p, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), data_pages = (len + page - 1) / page;

    if (data_pages == 0)
        data_pages = 1;
    munmap(p + len - data_pages * page, (data_pages + 1) * page);
}

/* ---- deterministic randomness ---- */

/** xorshift64* over *state (never 0): the same seed gives the same sequence, so a failure
 *  reproduces. */
static inline uint64_t
tap_rng(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717u;
}

#endif
