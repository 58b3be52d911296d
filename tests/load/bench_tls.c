/*
 * bench_tls.c: the OpenSSL client set-up of pushedge-bench's TLS subscribers (--tls, or a
 * --sub-url https:// / wss://): one SSL_CTX per subscriber thread, the per-connection SSL with
 * SNI and optional verification, and the session kept for --tls-resume. The non-blocking
 * handshake and the encrypted reads and writes live in bench_sub.c's epoll loop.
 *
 * Why a context per thread: an SSL_CTX is shared state (reference counts, the session cache,
 * locks in OpenSSL 3's provider lookups); one per thread keeps the generator's threads from
 * contending, so the generator scales with its threads the way it does in clear text.
 *
 * What a subscriber offers: TLS 1.2 and 1.3 (or one with --tls-version), OpenSSL's default
 * ciphers and groups (X25519 first), ALPN "http/1.1" (the bench speaks HTTP/1.1 only, and a
 * server offering h2 must not pick it). Without --tls-ca nothing is verified: the numbers are
 * about the server's cost, and a throwaway certificate is the usual case.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"

typedef struct st_tls_ctx_data_t {
    SSL_SESSION *last; /* the newest session the server gave us (--tls-resume) */
} tls_ctx_data_t;

static int ctx_data_index = -1;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void
make_index(void)
{
    ctx_data_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static tls_ctx_data_t *
ctx_data(SSL_CTX *ctx)
{
    return SSL_CTX_get_ex_data(ctx, ctx_data_index);
}

/* Called by OpenSSL with every new session (TLS 1.3: each NewSessionTicket, after the
 * handshake). Keeping only the newest is enough: every connection of the thread resumes it. */
static int
on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    tls_ctx_data_t *d = ctx_data(SSL_get_SSL_CTX(ssl));
    if (d->last != NULL)
        SSL_SESSION_free(d->last);
    d->last = sess;
    return 1; /* we keep the reference */
}

SSL_CTX *
pb_tls_ctx_new(void)
{
    pthread_once(&index_once, make_index);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        pb_die("SSL_CTX_new failed");
    int min = pb_cfg->tls_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION;
    int max = pb_cfg->tls_version == 12 ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_max_proto_version(ctx, max);
    /* A server that closes without close_notify ends the stream like a clear-text EOF. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Read-ahead: one read() takes as many records as fit instead of a header and a body read
     * per record; bench_sub.c reads until WANT_READ, so nothing is left behind in OpenSSL's
     * buffer when the socket is empty. */
    SSL_CTX_set_read_ahead(ctx, 1);
    static const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn)) != 0)
        pb_die("SSL_CTX_set_alpn_protos failed");
    if (pb_cfg->tls_groups != NULL && SSL_CTX_set1_groups_list(ctx, pb_cfg->tls_groups) != 1)
        pb_die("--tls-groups %s: not accepted by OpenSSL", pb_cfg->tls_groups);
    if (pb_cfg->tls_ca != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, pb_cfg->tls_ca, NULL) != 1) {
            char err[256];
            pb_die("--tls-ca %s: %s", pb_cfg->tls_ca, pb_tls_error(err, sizeof(err), SSL_ERROR_SSL));
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    tls_ctx_data_t *d = pb_malloc(sizeof(*d));
    d->last = NULL;
    SSL_CTX_set_ex_data(ctx, ctx_data_index, d);
    if (pb_cfg->tls_resume) {
        /* Client-side caching only through the callback: OpenSSL's internal store is for servers. */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    return ctx;
}

SSL_SESSION *
pb_tls_session(SSL_CTX *ctx)
{
    return ctx_data(ctx)->last;
}

void
pb_tls_ctx_free(SSL_CTX *ctx)
{
    if (ctx == NULL)
        return;
    tls_ctx_data_t *d = ctx_data(ctx);
    if (d->last != NULL)
        SSL_SESSION_free(d->last);
    free(d);
    SSL_CTX_free(ctx);
}

SSL *
pb_tls_new(SSL_CTX *ctx, int fd, const struct sockaddr_in *peer)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1)
        goto Fail;
    /* SNI carries a host name, never an address (RFC 6066 3): only with --tls-sni. */
    if (pb_cfg->tls_sni != NULL && SSL_set_tlsext_host_name(ssl, pb_cfg->tls_sni) != 1)
        goto Fail;
    if (pb_cfg->tls_ca != NULL) {
        /* Verify the name we asked for, or else the address we connected to (an IP SAN). */
        if (pb_cfg->tls_sni != NULL) {
            if (SSL_set1_host(ssl, pb_cfg->tls_sni) != 1)
                goto Fail;
        } else {
            char ip[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &peer->sin_addr, ip, sizeof(ip));
            if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip) != 1)
                goto Fail;
        }
    }
    if (pb_cfg->tls_resume) {
        SSL_SESSION *s = pb_tls_session(ctx);
        if (s != NULL)
            SSL_set_session(ssl, s);
    }
    SSL_set_connect_state(ssl);
    return ssl;
Fail:
    SSL_free(ssl);
    return NULL;
}

const char *
pb_tls_error(char *buf, size_t len, int ssl_err)
{
    unsigned long e = ERR_get_error();
    if (e != 0) {
        ERR_error_string_n(e, buf, len);
        ERR_clear_error();
    } else if (ssl_err == SSL_ERROR_SYSCALL && errno != 0) {
        snprintf(buf, len, "%s", strerror(errno));
    } else {
        snprintf(buf, len, "SSL error %d", ssl_err);
    }
    return buf;
}
