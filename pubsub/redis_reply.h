/*
 * redis_reply.h: reading Redis replies for the Redis engine (engine_redis.c), as pure functions
 * over hiredis reply trees and error strings: what a MOVED/ASK redirection says, the answer of
 * pushedge_read, a range of CLUSTER SLOTS, a pub/sub announcement
 * (single or batch).
 * Kept apart from the engine so that each is fuzzed (tests/fuzz/fuzz_redis_reply.c) with
 * synthetic reply trees. Every function only reads the tree; pointers it returns borrow from it.
 * Private to pubsub/.
 */
#ifndef PE_REDIS_REPLY_H
#define PE_REDIS_REPLY_H

#include <stddef.h>
#include "stream_id.h"

struct redisReply;

#define PE_REDIS_SLOTS 16384
/* A node's address in text, NUL included: the size of an IPv6 address (INET6_ADDRSTRLEN), what
 * the engine keeps per connection. A longer host in a redirection is refused. */
#define PE_REDIS_HOST_MAX 46

typedef struct st_pe_redis_redirect_t {
    int ask;       /* 1: ASK (this command only), 0: MOVED (the slot moved) */
    unsigned slot; /* 0..16383 */
    unsigned port; /* 1..65535 */
    /* NUL-terminated; "" means the node that answered (Redis sends ":port" when it does not
     * know its own address, cluster-preferred-endpoint-type unknown-endpoint). */
    char host[PE_REDIS_HOST_MAX];
} pe_redis_redirect_t;

/**
 * Parses the error text err[0..len) of a redirection, "MOVED <slot> <host>:<port>" or
 * "ASK <slot> <host>:<port>": decimal slot below 16384 and port from 1 to 65535, digits only,
 * single spaces, the host up to the last colon (an IPv6 address has colons of its own), nothing
 * after the port. Returns 0 with *out filled, or -1 (any other error, or a malformed one: the
 * caller then hands the error to the command's callback) with *out unspecified.
 */
int pe_redis_parse_redirect(const char *err, size_t len, pe_redis_redirect_t *out);

/**
 * Checks the shape of pushedge_read's answer {gap, base, reached_end, id1, json1, ...} (three
 * header elements, then pairs): returns 0 with *gap and *reached_end (0/1), *base and the number
 * of pairs in *num_entries; -1 if the reply is not that (an error reply, another type, a base
 * that is not a stream ID).
 */
int pe_redis_parse_read(const struct redisReply *reply, int *gap, pe_id_t *base, int *reached_end, size_t *num_entries);

/**
 * Entry i (< num_entries) of a reply accepted by pe_redis_parse_read: returns 0 with its ID and
 * its JSON text (borrowed); -1 if that pair is malformed (the entry is skipped).
 */
int pe_redis_read_entry(const struct redisReply *reply, size_t i, pe_id_t *id, const char **data, size_t *data_len);

/**
 * One element of a CLUSTER SLOTS reply, [from, to, [host, port, ...], replicas...]: returns 1
 * with the range and its master (host borrowed and NUL-terminated, "" meaning the node asked);
 * 0 if the element has another shape (skipped); -1 if it has the shape but an impossible range
 * or port (the slot map cannot be trusted).
 */
int pe_redis_slot_range(const struct redisReply *r, unsigned *from, unsigned *to, const char **host, unsigned *port);

/**
 * A pub/sub announcement of pushedge_publish, "<id> <json>": returns 0 with the ID and the JSON
 * text (borrowed from payload), or -1.
 */
int pe_redis_parse_announcement(const char *payload, size_t len, pe_id_t *id, const char **json, size_t *json_len);

/* The first byte of a batch announcement (pushedge_publish_batch): ASCII GS, which neither an
 * ID nor JSON starts with, so a parser of single announcements refuses it. */
#define PE_REDIS_BATCH_MARK '\x1d'

/**
 * One entry of a batch announcement of pushedge_publish_batch: PE_REDIS_BATCH_MARK, then per
 * message "<id> <length> <json>", the length the JSON's in bytes (decimal, at most 10 digits,
 * no leading zero unless 0), each entry right after the previous one's JSON. Call it with *pos 0
 * on the whole payload; each call reads the entry at *pos and moves *pos past it. Returns 1 with
 * the ID and the JSON text (borrowed from payload), 0 at the end of a well-formed payload (at
 * least one entry read; pos not moved), or -1 when the payload is not one (then nothing from it
 * may be trusted: check the whole payload before using any entry). Pure, no allocation.
 */
int pe_redis_batch_next(const char *payload, size_t len, size_t *pos, pe_id_t *id, const char **json, size_t *json_len);

/**
 * One ID of pushedge_publish_batch's answer: the IDs in order separated by one space, a replayed
 * one (its idempotency key was recorded) written "=<id>". Call it with *pos 0; each call reads
 * the ID at *pos and moves *pos past it (and its space). Returns 1 with the ID and replayed (0
 * or 1), 0 at the end of a well-formed answer (at least one ID read; pos not moved), or -1 when
 * the text is not one (check the whole answer before using any ID). Pure, no allocation.
 */
int pe_redis_batch_reply_next(const char *text, size_t len, size_t *pos, pe_id_t *id, int *replayed);

#endif
