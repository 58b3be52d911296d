/*
 * libFuzzer driver for pubsub/redis_url.c, the --redis URL grammar.
 *
 * The input, cut at its first NUL, is parsed. An accepted URL must give 1..8 seeds, each with a
 * host of 1..255 bytes free of the separators (',' '/' '@', and ':' only where the URL had it
 * bracketed) and a port of 1..65535, a database of at most 1000000, and a password borrowed from
 * inside the input. Written back in canonical form (":password@", bracketed hosts where needed,
 * "/db"), it must parse again to the same seeds, password and database. A redis+sentinel://
 * URL must also hold a master name of 1..128 bytes of A-Z a-z 0-9 . _ - :, kept through the
 * round trip. A refused URL must name one of the five reasons. Results feed a volatile sink so nothing is optimised away.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "redis_url.h"
#include "fuzz.h"

static volatile size_t sink;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    memcpy(url, data, size);
    url[size] = '\0';
    size_t len = strlen(url);
    pe_redis_url_t u;
    const char *err = pe_redis_url_parse(url, &u);
    if (err != NULL) {
        CHECK(err == pe_redis_url_err_scheme || err == pe_redis_url_err_host || err == pe_redis_url_err_too_many ||
              err == pe_redis_url_err_db || err == pe_redis_url_err_master);
        sink += strlen(err);
        free(url);
        return 0;
    }

    CHECK(u.num_seeds >= 1 && u.num_seeds <= PE_REDIS_URL_MAX_SEEDS);
    CHECK(u.db <= PE_REDIS_URL_MAX_DB);
    if (u.password != NULL)
        CHECK(u.password >= url + 8 && u.password + u.password_len <= url + len);
    size_t ml = strlen(u.master);
    CHECK(u.sentinel ? ml >= 1 && ml < PE_REDIS_URL_MASTER_MAX &&
                           strspn(u.master, "abcdefghijklmnopqrstuvwxyz"
                                            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:") == ml
                     : ml == 0);
    size_t cap = len + 64, n = 0;
    char *back = malloc(cap);
    n += (size_t)snprintf(back + n, cap - n, u.sentinel ? "redis+sentinel://" : "redis://");
    if (u.password != NULL) {
        back[n++] = ':';
        memcpy(back + n, u.password, u.password_len);
        n += u.password_len;
        back[n++] = '@';
    }
    for (size_t i = 0; i != u.num_seeds; ++i) {
        const char *h = u.seeds[i].host;
        size_t hl = strlen(h);
        CHECK(hl >= 1 && hl < PE_REDIS_URL_HOST_MAX);
        CHECK(strpbrk(h, ",/@") == NULL);
        CHECK(u.seeds[i].port >= 1 && u.seeds[i].port <= 65535);
        int bracket = strchr(h, ':') != NULL || h[0] == '[';
        CHECK(!bracket || strchr(h, ']') == NULL);
        CHECK(n + hl + 16 < cap);
        n += (size_t)snprintf(back + n, cap - n, "%s%s%s%s:%u", i == 0 ? "" : ",", bracket ? "[" : "", h, bracket ? "]" : "",
                              u.seeds[i].port);
    }
    if (u.sentinel)
        n += (size_t)snprintf(back + n, cap - n, "/%s", u.master);
    n += (size_t)snprintf(back + n, cap - n, "/%u", u.db);
    CHECK(n < cap);

    pe_redis_url_t v;
    CHECK(pe_redis_url_parse(back, &v) == NULL);
    CHECK(v.num_seeds == u.num_seeds && v.db == u.db);
    CHECK(v.sentinel == u.sentinel && strcmp(v.master, u.master) == 0);
    CHECK((v.password == NULL) == (u.password == NULL));
    if (u.password != NULL)
        CHECK(v.password_len == u.password_len && memcmp(v.password, u.password, u.password_len) == 0);
    for (size_t i = 0; i != u.num_seeds; ++i)
        CHECK(strcmp(v.seeds[i].host, u.seeds[i].host) == 0 && v.seeds[i].port == u.seeds[i].port);
    sink += u.num_seeds + u.db;
    free(back);
    free(url);
    return 0;
}
