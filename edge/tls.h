/*
 * tls.h: the TLS listeners' side of a connection (docs/operations.md "TLS"): the OpenSSL
 * context built from --tls-cert and --tls-key, the handshake of an accepted socket up to
 * h2o's HTTP/1.1 or HTTP/2 (by ALPN), and the reload of the files on SIGHUP.
 */
#ifndef PE_TLS_H
#define PE_TLS_H

#include <stddef.h>
#include <h2o.h>
#include "edge/core/thread.h"

/**
 * Builds a context from the PEM files (TLS 1.2/1.3, ALPN h2 and http/1.1, session resumption).
 * Returns NULL with a one-line message naming the file in err.
 */
struct ssl_ctx_st *pe_tls_context_create(const char *cert_file, const char *key_file, char *err, size_t errlen);
/** Releases the caller's reference (connections hold their own). */
void pe_tls_context_release(struct ssl_ctx_st *ctx);
/** One line describing the certificate in use (subject, serial, expiry), for the log. */
void pe_tls_context_describe(struct ssl_ctx_st *ctx, char *buf, size_t len);

/** On the loop thread, before it accepts: takes a reference to ctx and listens for reloads. */
void pe_tls_thread_init(pe_thread_t *thr, struct ssl_ctx_st *ctx);
/**
 * Starts the handshake of a socket accepted on a TLS listener with the thread's current
 * context; closes it if the handshake fails or has not finished within h2o's handshake timeout
 * (10 s). `limited` is pe_limits_on_accept's answer: 0 attaches edge/front.c's checks.
 */
void pe_tls_accept(pe_thread_t *thr, h2o_socket_t *sock, int limited);
/**
 * SIGHUP (main thread): rereads the files; on success every loop switches to the new context
 * for its next handshakes (established connections keep theirs), on failure the error is
 * logged and the old context stays. Returns 0 on success.
 */
int pe_tls_reload(pe_server_t *server);

#endif
