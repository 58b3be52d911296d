/*
 * Unit tests for pubsub/redis_url.c, the --redis URL grammar shared by the option parser and
 * the Redis engine: accepted forms (password forms, seeds, IPv6 in brackets, databases, the
 * boundaries of port, host length, item length, seed count and database number), every
 * rejection with its reason, and inputs ending at a guard page so an overread faults; the
 * redis+sentinel:// form (sentinels as hosts, the master's name, then the database).
 *
 * Not covered here: resolving the hosts (the engine does it with getaddrinfo) and the option
 * parser's messages (test_config.c).
 */
#include <string.h>
#include "tap.h"
#include "redis_url.h"

/* Parses url from a copy that ends (NUL included) at a guard page. */
static const char *
parse_guarded(const char *url, pe_redis_url_t *out)
{
    size_t len = strlen(url) + 1;
    char *p = tap_guard_copy(url, len);
    const char *ret = pe_redis_url_parse(p, out);
    /* Borrowed pointers must not outlive the copy: rebase the password on the original. */
    if (ret == NULL && out->password != NULL)
        out->password = url + (out->password - p);
    tap_guard_free(p, len);
    return ret;
}

static void
test_valid(void)
{
    static const struct {
        const char *url;
        const char *password; /* NULL: none */
        const char *hosts;    /* "host:port,..." as parsed */
        unsigned db;
    } cases[] = {
        {"redis://127.0.0.1:6379", NULL, "127.0.0.1:6379", 0},
        {"redis://localhost:1/0", NULL, "localhost:1", 0},
        {"redis://r:65535/2", NULL, "r:65535", 2},
        {"redis://:secret@10.0.0.5:6379/0", "secret", "10.0.0.5:6379", 0},
        {"redis://:p@ss@localhost:6380/2", "p@ss", "localhost:6380", 2},
        {"redis://user:pw@h:1", "pw", "h:1", 0},
        {"redis://user:pw:more@h:1", "pw:more", "h:1", 0},
        {"redis://justpw@h:1", "justpw", "h:1", 0},
        {"redis://:@h:1", "", "h:1", 0},
        {"redis://@h:1", "", "h:1", 0},
        {"redis://:a/b,c@h:1", "a/b,c", "h:1", 0},
        {"redis://h:1/0@x:2", "1/0", "x:2", 0}, /* the user information runs to the last '@' */
        {"redis://[::1]:6379", NULL, "::1:6379", 0},
        {"redis://[fe80::1%eth0]:7000/3", NULL, "fe80::1%eth0:7000", 3},
        {"redis://[x]:1", NULL, "x:1", 0},
        {"redis://a:1,b:2", NULL, "a:1,b:2", 0},
        {"redis://:pw@10.0.0.5:7000,10.0.0.6:7000", "pw", "10.0.0.5:7000,10.0.0.6:7000", 0},
        {"redis://a:1,[::2]:2,c:3/15", NULL, "a:1,::2:2,c:3", 15},
        {"redis://1:1,2:2,3:3,4:4,5:5,6:6,7:7,8:8", NULL, "1:1,2:2,3:3,4:4,5:5,6:6,7:7,8:8", 0},
        {"redis://h:00001", NULL, "h:1", 0},
        {"redis://h:1/1000000", NULL, "h:1", 1000000},
        {"redis://h:1/0001000000", NULL, "h:1", 1000000},
        {"redis://h:1/000", NULL, "h:1", 0},
        {"redis://h]:1", NULL, "h]:1", 0},
        {"redis://h%20x:1", NULL, "h%20x:1", 0},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        pe_redis_url_t u;
        const char *err = parse_guarded(cases[i].url, &u);
        if (!TAP_OK(err == NULL, "%s: accepted", cases[i].url)) {
            tap_note("reason: %s", err);
            continue;
        }
        if (cases[i].password == NULL)
            TAP_EQ_PTR(u.password, NULL, "%s: no password", cases[i].url);
        else
            TAP_EQ_MEM(u.password, u.password_len, cases[i].password, strlen(cases[i].password), "%s: password", cases[i].url);
        char hosts[1024] = "";
        for (size_t j = 0; j != u.num_seeds; ++j)
            snprintf(hosts + strlen(hosts), sizeof(hosts) - strlen(hosts), "%s%s:%u", j == 0 ? "" : ",", u.seeds[j].host,
                     u.seeds[j].port);
        TAP_EQ_STR(hosts, cases[i].hosts, "%s: seeds", cases[i].url);
        TAP_EQ_UINT(u.db, cases[i].db, "%s: db", cases[i].url);
        TAP_EQ_UINT(u.sentinel, 0, "%s: not a sentinel URL", cases[i].url);
        TAP_EQ_STR(u.master, "", "%s: no master name", cases[i].url);
    }
}

/* redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db] */
static void
test_sentinel(void)
{
    static const struct {
        const char *url;
        const char *password;
        const char *hosts;
        const char *master;
        unsigned db;
    } ok[] = {
        {"redis+sentinel://127.0.0.1:26379/mymaster", NULL, "127.0.0.1:26379", "mymaster", 0},
        {"redis+sentinel://a:1,b:2,c:3/pe", NULL, "a:1,b:2,c:3", "pe", 0},
        {"redis+sentinel://:secret@10.0.0.1:26379,10.0.0.2:26379/orders/3", "secret", "10.0.0.1:26379,10.0.0.2:26379", "orders", 3},
        {"redis+sentinel://u:p@ss@h:1/m", "p@ss", "h:1", "m", 0},
        {"redis+sentinel://[::1]:26379/m-1.a_b:c", NULL, "::1:26379", "m-1.a_b:c", 0},
        {"redis+sentinel://h:1/M/0", NULL, "h:1", "M", 0},
        {"redis+sentinel://h:1/7/1000000", NULL, "h:1", "7", 1000000}, /* a name of digits is a name */
        {"redis+sentinel://1:1,2:2,3:3,4:4,5:5,6:6,7:7,8:8/m", NULL, "1:1,2:2,3:3,4:4,5:5,6:6,7:7,8:8", "m", 0},
    };
    for (size_t i = 0; i != sizeof(ok) / sizeof(ok[0]); ++i) {
        pe_redis_url_t u;
        const char *err = parse_guarded(ok[i].url, &u);
        if (!TAP_OK(err == NULL, "%s: accepted", ok[i].url)) {
            tap_note("reason: %s", err);
            continue;
        }
        TAP_EQ_UINT(u.sentinel, 1, "%s: a sentinel URL", ok[i].url);
        TAP_EQ_STR(u.master, ok[i].master, "%s: master", ok[i].url);
        TAP_EQ_UINT(u.db, ok[i].db, "%s: db", ok[i].url);
        if (ok[i].password == NULL)
            TAP_EQ_PTR(u.password, NULL, "%s: no password", ok[i].url);
        else
            TAP_EQ_MEM(u.password, u.password_len, ok[i].password, strlen(ok[i].password), "%s: password", ok[i].url);
        char hosts[1024] = "";
        for (size_t j = 0; j != u.num_seeds; ++j)
            snprintf(hosts + strlen(hosts), sizeof(hosts) - strlen(hosts), "%s%s:%u", j == 0 ? "" : ",", u.seeds[j].host,
                     u.seeds[j].port);
        TAP_EQ_STR(hosts, ok[i].hosts, "%s: sentinels", ok[i].url);
    }

    static const struct {
        const char *url;
        const char *err;
    } bad[] = {
        {"redis+sentinel:/h:1/m", pe_redis_url_err_scheme},
        {"REDIS+SENTINEL://h:1/m", pe_redis_url_err_scheme},
        {"redis+sentinels://h:1/m", pe_redis_url_err_scheme},
        {"sentinel://h:1/m", pe_redis_url_err_scheme},
        {"redis+sentinel://", pe_redis_url_err_host},
        {"redis+sentinel:///m", pe_redis_url_err_host},
        {"redis+sentinel://h/m", pe_redis_url_err_host},
        {"redis+sentinel://h:1,/m", pe_redis_url_err_host},
        {"redis+sentinel://h:1", pe_redis_url_err_master}, /* the master is required */
        {"redis+sentinel://h:1/", pe_redis_url_err_master},
        {"redis+sentinel://h:1//0", pe_redis_url_err_master},
        {"redis+sentinel://h:1/my master", pe_redis_url_err_master},
        {"redis+sentinel://h:1/m!", pe_redis_url_err_master},
        {"redis+sentinel://h:1/m%20", pe_redis_url_err_master},
        {"redis+sentinel://h:1/m/", pe_redis_url_err_db},
        {"redis+sentinel://h:1/m/x", pe_redis_url_err_db},
        {"redis+sentinel://h:1/m/1/2", pe_redis_url_err_db},
        {"redis+sentinel://h:1/m/1000001", pe_redis_url_err_db},
        {"redis+sentinel://1:1,2:2,3:3,4:4,5:5,6:6,7:7,8:8,9:9/m", pe_redis_url_err_too_many},
        {"redis+sentinel://1:1,2:2,3:3,4:4,5:5,6:6,7:7,8:8,9:9", pe_redis_url_err_master},
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        pe_redis_url_t u;
        TAP_EQ_PTR(parse_guarded(bad[i].url, &u), bad[i].err, "%s: %s", bad[i].url, bad[i].err);
    }

    /* The name's bound: 128 bytes taken, 129 refused. */
    char url[300], name[200];
    pe_redis_url_t u;
    memset(name, 'n', 128);
    name[128] = '\0';
    snprintf(url, sizeof(url), "redis+sentinel://h:1/%s/2", name);
    TAP_EQ_PTR(parse_guarded(url, &u), NULL, "a 128-byte master name");
    TAP_EQ_UINT(strlen(u.master), 128, "the 128-byte name kept whole");
    TAP_EQ_UINT(u.db, 2, "and the database after it");
    name[128] = 'n';
    name[129] = '\0';
    snprintf(url, sizeof(url), "redis+sentinel://h:1/%s", name);
    TAP_EQ_PTR(parse_guarded(url, &u), pe_redis_url_err_master, "a 129-byte master name");
    /* A plain URL's path is a database, never a master name. */
    TAP_EQ_PTR(parse_guarded("redis://h:1/m", &u), pe_redis_url_err_db, "redis:// with a name as database");
}

static void
test_invalid(void)
{
    static const struct {
        const char *url;
        const char *err;
    } cases[] = {
        {"", pe_redis_url_err_scheme},
        {"http://localhost:6379", pe_redis_url_err_scheme},
        {"REDIS://h:1", pe_redis_url_err_scheme},
        {"rediss://h:1", pe_redis_url_err_scheme},
        {"redis:/h:1", pe_redis_url_err_scheme},
        {"redis://", pe_redis_url_err_host},
        {"redis:///0", pe_redis_url_err_host},
        {"redis://pw@", pe_redis_url_err_host},
        {"redis://localhost", pe_redis_url_err_host},
        {"redis://:6379", pe_redis_url_err_host},
        {"redis://pw@:6379", pe_redis_url_err_host},
        {"redis://h:", pe_redis_url_err_host},
        {"redis://h:0", pe_redis_url_err_host},
        {"redis://h:65536", pe_redis_url_err_host},
        {"redis://h:000001", pe_redis_url_err_host},
        {"redis://h:1x", pe_redis_url_err_host},
        {"redis://h:-1", pe_redis_url_err_host},
        {"redis://h: 1", pe_redis_url_err_host},
        {"redis://::1:6379", pe_redis_url_err_host},
        {"redis://[::1]6379", pe_redis_url_err_host},
        {"redis://[::1", pe_redis_url_err_host},
        {"redis://[::1]", pe_redis_url_err_host},
        {"redis://[]:1", pe_redis_url_err_host},
        {"redis://[a]b]:1", pe_redis_url_err_host},
        {"redis://a:1,", pe_redis_url_err_host},
        {"redis://,a:1", pe_redis_url_err_host},
        {"redis://a:1,,b:2", pe_redis_url_err_host},
        {"redis://a:1,b", pe_redis_url_err_host},
        {"redis://1:1,2:2,3:3,4:4,5:5,6:6,7:7,8:8,", pe_redis_url_err_host},
        {"redis://1:1,2:2,3:3,4:4,5:5,6:6,7:7,8:8,9", pe_redis_url_err_host},
        {"redis://1:1,2:2,3:3,4:4,5:5,6:6,7:7,8:8,9:9/x", pe_redis_url_err_db},
        {"redis://1:1,2:2,3:3,4:4,5:5,6:6,7:7,8:8,9:9", pe_redis_url_err_too_many},
        {"redis://h:1/", pe_redis_url_err_db},
        {"redis://h:1/abc", pe_redis_url_err_db},
        {"redis://localhost:6379/abc", pe_redis_url_err_db},
        {"redis://h:1/1000001", pe_redis_url_err_db},
        {"redis://h:1/99999999999999999999999", pe_redis_url_err_db},
        {"redis://h:1/+1", pe_redis_url_err_db},
        {"redis://h:1/-1", pe_redis_url_err_db},
        {"redis://h:1/1 ", pe_redis_url_err_db},
        {"redis://h:1/1/2", pe_redis_url_err_db},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        pe_redis_url_t u;
        TAP_EQ_PTR(parse_guarded(cases[i].url, &u), cases[i].err, "%s: %s", cases[i].url, cases[i].err);
    }
}

/* Host names of 255 bytes fit, 256 do not; an item of 299 bytes is read, 300 refused. */
static void
test_lengths(void)
{
    char url[700], host[300];
    pe_redis_url_t u;

    memset(host, 'h', 255);
    host[255] = '\0';
    snprintf(url, sizeof(url), "redis://%s:65535", host);
    TAP_EQ_PTR(parse_guarded(url, &u), NULL, "255-byte host");
    TAP_EQ_UINT(strlen(u.seeds[0].host), 255, "255-byte host kept whole");
    snprintf(url, sizeof(url), "redis://[%s]:65535", host);
    TAP_EQ_PTR(parse_guarded(url, &u), NULL, "255-byte bracketed host (an item of 263 bytes)");

    host[255] = 'h';
    host[256] = '\0';
    snprintf(url, sizeof(url), "redis://%s:1", host);
    TAP_EQ_PTR(parse_guarded(url, &u), pe_redis_url_err_host, "256-byte host");

    /* "[" + 290 + "]:" + 5 digits = 298 and 299 bytes with one more: still refused for the
     * host length, never read past. */
    memset(host, 'h', 296);
    host[296] = '\0';
    snprintf(url, sizeof(url), "redis://%s:1", host);
    TAP_EQ_PTR(parse_guarded(url, &u), pe_redis_url_err_host, "298-byte item with a long host");
    memset(host, 'h', 300);
    host[300 - 1] = '\0';
    snprintf(url, sizeof(url), "redis://a:1,%s:1", host);
    TAP_EQ_PTR(parse_guarded(url, &u), pe_redis_url_err_host, "an item of 301 bytes");
}

int
main(void)
{
    tap_subtest("valid", test_valid);
    tap_subtest("invalid", test_invalid);
    tap_subtest("lengths", test_lengths);
    tap_subtest("sentinel", test_sentinel);
    return tap_done();
}
