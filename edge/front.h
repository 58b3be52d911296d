/*
 * front.h: request heads checked before h2o reads bodies (docs/security.md): the publish rule
 * applied to the head of a publish, HTTP/1 framing, and HTTP/2 connections swept of idle
 * streams.
 */
#ifndef PE_FRONT_H
#define PE_FRONT_H

#include <stddef.h>
#include <h2o.h>
#include "edge/core/thread.h"

typedef struct st_pe_front_t pe_front_t;

/** Sizes the descriptor table from RLIMIT_NOFILE; once, before any thread accepts. */
int pe_front_init(void);
void pe_front_thread_init(pe_thread_t *thr);
/** Wraps an accepted plaintext socket's reads; call right after h2o_accept. */
void pe_front_attach(pe_thread_t *thr, h2o_socket_t *sock);
/**
 * Wraps a TLS socket's (decrypted) reads; call right after h2o_http1_accept (h2 == 0) or
 * h2o_http2_accept (h2 == 1), before any decrypted byte reaches h2o.
 */
void pe_front_attach_tls(pe_thread_t *thr, h2o_socket_t *sock, int h2);
/**
 * First thing of the router for every request: answers (and returns 0) an HTTP/1 request whose
 * head front.c refused or whose framing is faulty, with Connection: close; otherwise -1.
 */
int pe_front_on_req(h2o_req_t *req);
/**
 * The framing rules (pure, for tests): `headers` are picohttpparser's phr_header of the head.
 * Returns 0 or a reason (> 0); *has_body says whether a body follows.
 */
int pe_front_check_framing(const char *head, size_t head_len, const void *headers, size_t num_headers, int minor_version,
                           int *has_body);

#endif
