/*
 * policy.c: channel patterns and the subscribe / publish decisions (policy.h). Patterns have
 * at most a trailing '*', so matching is one left-to-right pass with no backtracking: linear in
 * the pattern and channel lengths, whatever a token carries.
 */
#include <string.h>
#include "pubsub/alloc.h"
#include "edge/identity/policy.h"

#define SUB_TOKEN "{sub}"
#define SUB_TOKEN_LEN 5

/* The channel-name alphabet (pubsub/stream_id.h pe_channel_is_valid). */
static int
is_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
           c == ':' || c == '@';
}

static int
is_sub_token(const char *p, size_t len, size_t i)
{
    return len - i >= SUB_TOKEN_LEN && memcmp(p + i, SUB_TOKEN, SUB_TOKEN_LEN) == 0;
}

int
pe_pattern_is_valid(const char *p, size_t len, int allow_sub)
{
    if (len == 0 || len > PE_POLICY_MAX_PATTERN_LEN)
        return 0;
    for (size_t i = 0; i != len;) {
        if (p[i] == '*') {
            /* Only last, and not right after {sub} (a prefix of one subject would be another's). */
            if (i != len - 1 || (i >= SUB_TOKEN_LEN && is_sub_token(p, len, i - SUB_TOKEN_LEN)))
                return 0;
            ++i;
        } else if (p[i] == '{') {
            if (!allow_sub || !is_sub_token(p, len, i))
                return 0;
            i += SUB_TOKEN_LEN;
        } else if (is_name_char((unsigned char)p[i])) {
            ++i;
        } else {
            return 0;
        }
    }
    return 1;
}

static int
sub_is_usable(const char *sub, size_t sublen)
{
    if (sub == NULL || sublen == 0 || sublen > PE_POLICY_MAX_SUB)
        return 0;
    for (size_t i = 0; i != sublen; ++i)
        if (!is_name_char((unsigned char)sub[i]))
            return 0;
    return 1;
}

int
pe_pattern_match(const char *pat, size_t plen, const char *sub, size_t sublen, const char *chan, size_t clen)
{
    size_t i = 0, j = 0;
    while (i != plen) {
        if (pat[i] == '*')
            return 1; /* the last character: any suffix */
        if (pat[i] == '{') {
            if (!is_sub_token(pat, plen, i) || !sub_is_usable(sub, sublen))
                return 0;
            i += SUB_TOKEN_LEN;
            /* The character after {sub} ends the subject in the channel: a subject holding it
             * could reach into another subject's channels. */
            if (i != plen && memchr(sub, pat[i], sublen) != NULL)
                return 0;
            if (clen - j < sublen || memcmp(chan + j, sub, sublen) != 0)
                return 0;
            j += sublen;
            continue;
        }
        if (j == clen || chan[j] != pat[i])
            return 0;
        ++i;
        ++j;
    }
    return j == clen;
}

int
pe_patterns_add(pe_patterns_t *list, const char *p, size_t len)
{
    if (list->num == PE_POLICY_MAX_PATTERNS)
        return -1;
    if (list->items == NULL)
        list->items = pe_calloc(PE_POLICY_MAX_PATTERNS, sizeof(list->items[0]));
    list->items[list->num++] = pe_strndup(p, len);
    return 0;
}

int
pe_patterns_match(const pe_patterns_t *list, const char *sub, size_t sublen, const char *chan, size_t clen)
{
    for (size_t i = 0; list != NULL && i != list->num; ++i)
        if (pe_pattern_match(list->items[i], strlen(list->items[i]), sub, sublen, chan, clen))
            return 1;
    return 0;
}

void
pe_patterns_dispose(pe_patterns_t *list)
{
    for (size_t i = 0; i != list->num; ++i)
        pe_free(list->items[i]);
    pe_free(list->items);
    list->items = NULL;
    list->num = 0;
}

void
pe_identity_dispose(pe_identity_t *id)
{
    pe_free(id->sub);
    pe_free(id->info);
    pe_patterns_dispose(&id->read);
    pe_patterns_dispose(&id->publish);
    memset(id, 0, sizeof(*id));
}

int
pe_auth_mode_parse(const char *s)
{
    if (strcmp(s, "off") == 0)
        return PE_AUTH_MODE_OFF;
    if (strcmp(s, "optional") == 0)
        return PE_AUTH_MODE_OPTIONAL;
    if (strcmp(s, "required") == 0)
        return PE_AUTH_MODE_REQUIRED;
    return -1;
}

pe_access_t
pe_may_subscribe(pe_auth_mode_t mode, const pe_patterns_t *public_channels, const pe_identity_t *id, const char *chan, size_t clen)
{
    if (mode == PE_AUTH_MODE_OFF)
        return PE_ACCESS_OK;
    int authenticated = id != NULL && id->authenticated;
    if (!authenticated && mode == PE_AUTH_MODE_REQUIRED)
        return PE_ACCESS_UNAUTHORIZED;
    if (pe_patterns_match(public_channels, NULL, 0, chan, clen))
        return PE_ACCESS_OK;
    if (!authenticated)
        return PE_ACCESS_UNAUTHORIZED;
    return pe_patterns_match(&id->read, id->sub, id->sub_len, chan, clen) ? PE_ACCESS_OK : PE_ACCESS_FORBIDDEN;
}

pe_access_t
pe_may_publish(const pe_identity_t *id, const char *chan, size_t clen)
{
    if (id == NULL || !id->authenticated)
        return PE_ACCESS_UNAUTHORIZED;
    return pe_patterns_match(&id->publish, id->sub, id->sub_len, chan, clen) ? PE_ACCESS_OK : PE_ACCESS_FORBIDDEN;
}

uint64_t
pe_token_notice_ms(int64_t exp_s, int64_t iat_s, uint64_t now_ms)
{
    uint64_t exp_ms = exp_s > 0 ? (uint64_t)exp_s * 1000 : 0;
    uint64_t start = iat_s > 0 && (uint64_t)iat_s * 1000 <= now_ms ? (uint64_t)iat_s * 1000 : now_ms;
    if (exp_ms <= start)
        return exp_ms;
    uint64_t margin = (exp_ms - start) / 2;
    if (margin > PE_TOKEN_NOTICE_MAX_MS)
        margin = PE_TOKEN_NOTICE_MAX_MS;
    return exp_ms - margin;
}
