/*
 * tls.c: TLS for the --listen-tls listeners: the OpenSSL context, the handshake of each accepted
 * socket, and the certificate reload on SIGHUP (docs/operations.md "TLS").
 *
 * Context. TLS 1.2 and 1.3 only; TLS 1.2 with ECDHE key exchange and AEAD ciphers only (forward
 * secrecy, no CBC), TLS 1.3 with OpenSSL's defaults (all AEAD). No renegotiation, no
 * compression. ALPN offers h2 first, then http/1.1; a client that offers neither gets
 * HTTP/1.1.
 *
 * Session resumption. Tickets, encrypted with keys of this process (ticket_cb): a new key every
 * hour, the previous one still accepted for an hour (a ticket found under it is renewed), so a
 * ticket lives at most two hours and a stolen key exposes at most two hours of sessions. The
 * keys are not tied to a context, so tickets survive a certificate reload. For clients without
 * tickets, OpenSSL's server session cache (per context, bounded). Keys are random per process:
 * behind a load balancer a client resumes only on the node that issued its ticket.
 *
 * OCSP stapling: libh2o 2.2.5 has none (its stapling lives in the standalone h2o server, not in
 * the library), and none is done here.
 *
 * Handshake. h2o_accept would do the handshake and then hand the connection to HTTP/1 or
 * HTTP/2 itself, with no point where edge/front.c could attach its checks to the decrypted
 * bytes. So this file drives h2o_socket_ssl_handshake, bounded by h2o's handshake timeout
 * (10 s: a client that sends nothing, stops mid-handshake, or trickles is closed), and then
 * calls h2o_http1_accept or h2o_http2_accept and front.c, which wraps the socket's read
 * callback: h2o calls it with the decrypted bytes, so the checks of clear-text connections
 * apply unchanged. Garbage in place of a ClientHello fails the handshake and closes the socket.
 *
 * Memory (docs/architecture.md "TLS memory"). Beyond a clear connection's, a TLS one holds
 * OpenSSL's per-connection state (the SSL object, 7.6 KiB in OpenSSL 3.0, its two record
 * cipher contexts, the session: ~14 KiB in all, fixed while the connection lives), and buffers
 * that only I/O needs: OpenSSL's record buffers (~17 KiB for reading, ~17 KiB for writing) and
 * h2o's buffer of encrypted input (8 KiB, kept for the socket's life like the clear input
 * buffer that edge/core/http.c already gives back). The buffers are given back when a
 * connection has had no TLS I/O for PE_TLS_IDLE_RELEASE_MS (checked once per period, per
 * connection, by comparing the byte counts of the SSL object's BIOs) and right after the
 * handshake, and allocated again by the next read or write: a busy connection keeps them, so
 * fan-out allocates no record buffer per write (SSL_MODE_RELEASE_BUFFERS, which frees them
 * after every record, cost ~10% of the server's CPU in libc's allocator under TLS fan-out).
 * h2o's encrypted-input buffer lives in libh2o's private struct st_h2o_socket_ssl_t, and so
 * does the SSL object: they are reached through a mirror of that struct's head (libh2o 2.2.5
 * built without picotls, as Debian's), checked on every connection against what is known (the
 * context and the SSL object's context): if the check ever fails, the idle release is turned
 * off and logged, never guessed, and contexts made from then on release buffers after every
 * record (SSL_MODE_RELEASE_BUFFERS) instead.
 *
 * Reload. Each loop holds its own reference to the context it hands to new handshakes
 * (thr->tls_ctx) and changes it only on its own thread: pe_tls_reload builds the new context
 * on the main thread and posts a reference to every loop. A handshake in progress holds a
 * reference of its own; an established connection's SSL object holds one (OpenSSL's
 * refcount), so the old context lives until its last connection ends.
 */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include "pubsub/alloc.h"
#include "edge/util/log.h"
#include "edge/util/bounds.h"
#include "edge/tls.h"
#include "edge/front.h"
#include "edge/core/http.h"

#include <h2o/http1.h>
#include <h2o/http2.h>

/* ---- session tickets ------------------------------------------------------------------------- */

#define TICKET_KEY_LIFETIME 3600 /* seconds a key issues tickets; it decrypts for as long again */

typedef struct st_ticket_key_t {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    time_t born; /* 0: unused */
} ticket_key_t;

static pthread_mutex_t ticket_lock = PTHREAD_MUTEX_INITIALIZER;
static ticket_key_t ticket_keys[2]; /* [0] issues, [1] the previous one, still decrypts */

/* Called with ticket_lock held. */
static int
rotate_ticket_keys(time_t now)
{
    if (ticket_keys[0].born != 0 && now - ticket_keys[0].born < TICKET_KEY_LIFETIME)
        return 0;
    ticket_key_t fresh;
    if (RAND_bytes(fresh.name, sizeof(fresh.name)) != 1 || RAND_bytes(fresh.aes, sizeof(fresh.aes)) != 1 ||
        RAND_bytes(fresh.hmac, sizeof(fresh.hmac)) != 1)
        return -1;
    fresh.born = now;
    ticket_keys[1] = ticket_keys[0];
    ticket_keys[0] = fresh;
    OPENSSL_cleanse(&fresh, sizeof(fresh));
    return 0;
}

static int
set_hmac_key(EVP_MAC_CTX *hctx, unsigned char *key)
{
    OSSL_PARAM params[] = {OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32),
                           OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0), OSSL_PARAM_construct_end()};
    return EVP_MAC_CTX_set_params(hctx, params);
}

/* OpenSSL's ticket key callback: 1 = key set, 2 = decrypted with an old key (issue a new
 * ticket), 0 = unknown key (full handshake), -1 = error. */
static int
ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    (void)ssl;
    int ret = -1;
    pthread_mutex_lock(&ticket_lock);
    if (rotate_ticket_keys(time(NULL)) != 0)
        goto Exit;
    if (enc) {
        ticket_key_t *k = &ticket_keys[0];
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
            goto Exit;
        memcpy(key_name, k->name, 16);
        if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1 || set_hmac_key(hctx, k->hmac) != 1)
            goto Exit;
        ret = 1;
    } else {
        ret = 0;
        for (int i = 0; i != 2; ++i) {
            ticket_key_t *k = &ticket_keys[i];
            if (k->born == 0 || memcmp(key_name, k->name, 16) != 0)
                continue;
            if (set_hmac_key(hctx, k->hmac) != 1 || EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
                ret = -1;
            else
                ret = i == 0 ? 1 : 2;
            break;
        }
    }
Exit:
    pthread_mutex_unlock(&ticket_lock);
    return ret;
}

/* ---- the context ----------------------------------------------------------------------------- */

static int mirror_off; /* atomic: set once libh2o's layout check failed (see the mirror below) */

/* Server preference: HTTP/2 when the client offers it. */
static const h2o_iovec_t alpn_protocols[] = {{H2O_STRLIT("h2")}, {H2O_STRLIT("http/1.1")}, {NULL, 0}};

/* TLS 1.2: ECDHE with AEAD only. TLS 1.3's suites are OpenSSL's defaults (all AEAD). */
static const char tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/* Sessions kept by the server-side cache per context (about 1 KiB each at most). */
#define SESSION_CACHE_SIZE 20000

static void
openssl_error(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_peek_last_error();
    char reason[256] = "unknown error";
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    snprintf(err, errlen, "%s %s: %s", what, file, reason);
}

SSL_CTX *
pe_tls_context_create(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    ERR_clear_error();
    pthread_mutex_lock(&ticket_lock);
    int keys_ok = rotate_ticket_keys(time(NULL));
    pthread_mutex_unlock(&ticket_lock);
    if (keys_ok != 0) {
        snprintf(err, errlen, "TLS: no random bytes for the session ticket keys");
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        openssl_error(err, errlen, "TLS:", "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
    /* The record buffers of idle connections are released by the idle check (see the top); if
     * libh2o's layout check failed, by OpenSSL after every record. */
    if (__atomic_load_n(&mirror_off, __ATOMIC_RELAXED))
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1) {
        openssl_error(err, errlen, "TLS:", "cipher list");
        goto Error;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        openssl_error(err, errlen, "--tls-cert", cert_file);
        goto Error;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        openssl_error(err, errlen, "--tls-key", key_file);
        goto Error;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_error(err, errlen, "--tls-key", key_file);
        goto Error;
    }
    h2o_ssl_register_alpn_protocols(ctx, alpn_protocols);
    static const unsigned char sid_ctx[] = "pushedge";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, SESSION_CACHE_SIZE);
    SSL_CTX_set_timeout(ctx, TICKET_KEY_LIFETIME);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    /* One ticket per TLS 1.3 handshake (OpenSSL sends two by default): a push client
     * reconnects one connection at a time. */
    SSL_CTX_set_num_tickets(ctx, 1);
    return ctx;
Error:
    SSL_CTX_free(ctx);
    return NULL;
}

void
pe_tls_context_release(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

void
pe_tls_context_describe(SSL_CTX *ctx, char *buf, size_t len)
{
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    if (cert == NULL) {
        snprintf(buf, len, "no certificate");
        return;
    }
    char subject[256] = "", serial[80] = "?", expiry[64] = "?";
    X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    if (bn != NULL) {
        char *hex = BN_bn2hex(bn);
        if (hex != NULL) {
            snprintf(serial, sizeof(serial), "%s", hex);
            OPENSSL_free(hex);
        }
        BN_free(bn);
    }
    BIO *mem = BIO_new(BIO_s_mem());
    if (mem != NULL) {
        if (ASN1_TIME_print(mem, X509_get0_notAfter(cert)) == 1) {
            int n = BIO_read(mem, expiry, sizeof(expiry) - 1);
            expiry[n > 0 ? n : 0] = '\0';
        }
        BIO_free(mem);
    }
    snprintf(buf, len, "subject %s, serial %s, expires %s", subject, serial, expiry);
}

static void release_tls_input(h2o_socket_t *sock);

/* ---- reload ---------------------------------------------------------------------------------- */

typedef struct st_reload_msg_t {
    h2o_multithread_message_t super;
    SSL_CTX *ctx; /* a reference for the receiving loop */
} reload_msg_t;

static void
on_reload(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    pe_thread_t *thr = H2O_STRUCT_FROM_MEMBER(pe_thread_t, tls_reload, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        reload_msg_t *msg = H2O_STRUCT_FROM_MEMBER(reload_msg_t, super.link, messages->next);
        h2o_linklist_unlink(&msg->super.link);
        SSL_CTX *old = thr->tls_ctx;
        thr->tls_ctx = msg->ctx;
        SSL_CTX_free(old);
        pe_free(msg);
    }
}

void
pe_tls_thread_init(pe_thread_t *thr, SSL_CTX *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_up_ref(ctx);
    thr->tls_ctx = ctx;
    h2o_timeout_init(thr->loop, &thr->tls_idle_timeout, PE_TLS_IDLE_RELEASE_MS);
    pe_socket_release_tls_input = release_tls_input;
    h2o_multithread_register_receiver(thr->ctx.queue, &thr->tls_reload, on_reload);
}

int
pe_tls_reload(pe_server_t *server)
{
    const pe_config_t *cfg = server->cfg;
    if (cfg->num_listen_tls == 0)
        return 0;
    char err[512];
    SSL_CTX *ctx = pe_tls_context_create(cfg->tls_cert, cfg->tls_key, err, sizeof(err));
    if (ctx == NULL) {
        pe_log(PE_LOG_ERROR, "tls", "SIGHUP: %s; still serving the previous certificate", err);
        return -1;
    }
    for (unsigned t = 0; t != server->num_threads; ++t) {
        reload_msg_t *msg = pe_calloc(1, sizeof(*msg));
        SSL_CTX_up_ref(ctx);
        msg->ctx = ctx;
        h2o_multithread_send_message(&server->threads[t].tls_reload, &msg->super);
    }
    char desc[512];
    pe_tls_context_describe(ctx, desc, sizeof(desc));
    pe_log(PE_LOG_INFO, "tls", "SIGHUP: certificate reloaded from %s (%s)", cfg->tls_cert, desc);
    SSL_CTX_free(ctx);
    return 0;
}

/* ---- the encrypted input buffer ------------------------------------------------------------ */

/* The head of libh2o 2.2.5's struct st_h2o_socket_ssl_t (lib/common/socket.c, H2O_USE_PICOTLS
 * off), up to the field needed. */
typedef struct st_h2o_ssl_mirror_t {
    SSL_CTX *ssl_ctx;
    SSL *ossl;
    int *did_write_in_read;
    size_t record_overhead;
    struct {
        h2o_socket_cb cb;
        union {
            struct {
                struct {
                    int state;
                    SSL_SESSION *session_data;
                } async_resumption;
            } server;
            struct {
                char *server_name;
                h2o_cache_t *session_cache;
                h2o_iovec_t session_cache_key;
                h2o_cache_hashcode_t session_cache_key_hash;
            } client;
        };
    } handshake;
    struct {
        h2o_buffer_t *encrypted;
    } input;
} h2o_ssl_mirror_t;

static void
mirror_failed(void)
{
    if (!__atomic_exchange_n(&mirror_off, 1, __ATOMIC_RELAXED))
        pe_log(PE_LOG_WARN, "tls",
               "libh2o's TLS socket layout is not the expected one: idle TLS connections keep their 8 KiB input "
               "buffer, and OpenSSL releases record buffers after every record from the next context on");
}

/* The mirror of an established TLS socket, or NULL (turned off, or a check failed now). */
static h2o_ssl_mirror_t *
mirror_of(h2o_socket_t *sock)
{
    h2o_ssl_mirror_t *m = (h2o_ssl_mirror_t *)sock->ssl;
    if (__atomic_load_n(&mirror_off, __ATOMIC_RELAXED) || m == NULL)
        return NULL;
    if (m->ssl_ctx == NULL || m->ossl == NULL || SSL_get_SSL_CTX(m->ossl) != m->ssl_ctx || m->handshake.cb != NULL ||
        m->input.encrypted == NULL || m->input.encrypted->size > m->input.encrypted->capacity) {
        mirror_failed();
        return NULL;
    }
    return m;
}

/* Gives back an empty encrypted-input buffer (the next read allocates one, as for the clear
 * input). */
static void
release_encrypted_input(h2o_ssl_mirror_t *m)
{
    h2o_buffer_t **buf = &m->input.encrypted;
    if ((*buf)->size != 0 || (*buf)->bytes == NULL)
        return;
    h2o_buffer_dispose(buf);
    h2o_buffer_init(buf, &h2o_socket_buffer_prototype);
}

/* The hook of pe_socket_release_input: h2o's encrypted-input buffer only; OpenSSL's record
 * buffers wait for the idle check, so a connection that reads often does not reallocate them. */
static void
release_tls_input(h2o_socket_t *sock)
{
    h2o_ssl_mirror_t *m = mirror_of(sock);
    if (m != NULL)
        release_encrypted_input(m);
}

/* ---- a connection's TLS state ----------------------------------------------------------------- */

/* One per socket accepted on a TLS listener. Owner: the handshake until it ends (freed by
 * on_handshake or its deadline, or kept by a success), then the socket, through its on_close
 * hook (chained: an earlier hook is called first, as front.c does). */
typedef struct st_pe_tls_conn_t {
    pe_thread_t *thr;
    h2o_socket_t *sock;
    SSL_CTX *ctx;                /* the handshake's reference (a reload meanwhile does not free it); NULL after */
    h2o_timeout_entry_t timeout; /* the handshake's deadline, then the idle check (thr->tls_idle_timeout) */
    struct timeval connected_at;
    int limited;
    uint64_t io_seen;      /* bytes through the SSL object's BIOs at the previous idle check */
    unsigned released : 1; /* buffers given back, and no TLS I/O since */
    void (*prev_close_cb)(void *data);
    void *prev_close_data;
} pe_tls_conn_t;

static void
tls_conn_free(pe_tls_conn_t *c)
{
    if (h2o_timeout_is_linked(&c->timeout))
        h2o_timeout_unlink(&c->timeout);
    SSL_CTX_free(c->ctx);
    pe_free(c);
}

/* TLS bytes in and out so far (the BIOs count what passes through them, h2o's custom ones too). */
static uint64_t
tls_io(SSL *ossl)
{
    return BIO_number_read(SSL_get_rbio(ossl)) + BIO_number_written(SSL_get_wbio(ossl));
}

/* Gives back OpenSSL's record buffers and h2o's encrypted-input buffer when none holds bytes;
 * returns 1 if everything was given back. Not while a write is in flight (h2o is sending what
 * OpenSSL sealed; its own copies, but nothing is gained then). */
static int
release_buffers(h2o_socket_t *sock, h2o_ssl_mirror_t *m)
{
    if (h2o_socket_is_writing(sock))
        return 0;
    /* 0 while a record is partly read or written: kept, tried again at the next check. */
    int done = SSL_free_buffers(m->ossl);
    release_encrypted_input(m);
    return done && m->input.encrypted->bytes == NULL;
}

static void
on_idle_check(h2o_timeout_entry_t *entry)
{
    pe_tls_conn_t *c = H2O_STRUCT_FROM_MEMBER(pe_tls_conn_t, timeout, entry);
    h2o_ssl_mirror_t *m = mirror_of(c->sock);
    if (m == NULL)
        return; /* the layout check failed: no more checks (see the top) */
    uint64_t io = tls_io(m->ossl);
    if (io != c->io_seen) {
        c->io_seen = io;
        c->released = 0;
    } else if (!c->released && release_buffers(c->sock, m)) {
        c->released = 1;
        PE_STAT_ADD(c->thr->stats.tls_idle_releases, 1);
    }
    h2o_timeout_link(c->thr->loop, &c->thr->tls_idle_timeout, &c->timeout);
}

static void
on_tls_socket_close(void *data)
{
    pe_tls_conn_t *c = data;
    void (*prev_cb)(void *) = c->prev_close_cb;
    void *prev_data = c->prev_close_data;
    /* h2o has destroyed the SSL object and is disposing of the socket: nothing of it is touched. */
    tls_conn_free(c);
    if (prev_cb != NULL)
        prev_cb(prev_data);
}

/* ---- handshake ------------------------------------------------------------------------------- */

static void
on_handshake_timeout(h2o_timeout_entry_t *entry)
{
    pe_tls_conn_t *c = H2O_STRUCT_FROM_MEMBER(pe_tls_conn_t, timeout, entry);
    h2o_socket_t *sock = c->sock;
    PE_STAT_ADD(c->thr->stats.tls_handshake_timeouts, 1);
    sock->data = NULL;
    tls_conn_free(c);
    h2o_socket_close(sock);
}

static int
is_h2(h2o_iovec_t proto)
{
    return proto.len == 2 && memcmp(proto.base, "h2", 2) == 0;
}

static void
on_handshake(h2o_socket_t *sock, const char *err)
{
    pe_tls_conn_t *c = sock->data;
    pe_thread_t *thr = c->thr;
    struct timeval connected_at = c->connected_at;
    int limited = c->limited;
    sock->data = NULL;
    h2o_timeout_unlink(&c->timeout);
    if (err != NULL) {
        static pe_log_rate_t rate;
        PE_STAT_ADD(thr->stats.tls_handshake_failures, 1);
        pe_log_ratelimited(&rate, PE_LOG_DEBUG, "tls", "handshake failed: %s", err);
        tls_conn_free(c);
        h2o_socket_close(sock);
        return;
    }
    /* The mirror's first check, while the context is known for sure. */
    h2o_ssl_mirror_t *m = (h2o_ssl_mirror_t *)sock->ssl;
    if (m->ssl_ctx != c->ctx)
        mirror_failed();
    SSL_CTX_free(c->ctx);
    c->ctx = NULL;
    /* The socket owns c from here on. The buffers of the handshake go back at once (the first
     * message allocates what it needs): a burst of handshakes does not hold ~40 KiB per new
     * connection until the first idle check. */
    c->prev_close_cb = sock->on_close.cb;
    c->prev_close_data = sock->on_close.data;
    sock->on_close.cb = on_tls_socket_close;
    sock->on_close.data = c;
    if ((m = mirror_of(sock)) != NULL) {
        c->released = release_buffers(sock, m);
        c->io_seen = tls_io(m->ossl);
        c->timeout.cb = on_idle_check;
        h2o_timeout_link(thr->loop, &thr->tls_idle_timeout, &c->timeout);
    }
    int h2 = is_h2(h2o_socket_ssl_get_selected_protocol(sock));
    /* Bytes that came with the end of the handshake (a request sent right after Finished) are
     * decrypted already: put aside while h2o and front.c attach, then delivered as a read, so
     * front.c sees them before h2o parses them, as on a clear-text connection. */
    h2o_buffer_t *early = NULL;
    if (sock->input->size != 0) {
        early = sock->input;
        h2o_buffer_init(&sock->input, &h2o_socket_buffer_prototype);
    }
    if (h2)
        h2o_http2_accept(&thr->accept_ctx, sock, connected_at);
    else
        h2o_http1_accept(&thr->accept_ctx, sock, connected_at);
    if (limited == 0)
        pe_front_attach_tls(thr, sock, h2);
    if (early != NULL) {
        h2o_buffer_dispose(&sock->input);
        sock->input = early;
        if (sock->_cb.read != NULL)
            sock->_cb.read(sock, NULL);
    }
}

void
pe_tls_accept(pe_thread_t *thr, h2o_socket_t *sock, int limited)
{
    pe_tls_conn_t *c = pe_calloc(1, sizeof(*c));
    c->thr = thr;
    c->sock = sock;
    c->limited = limited;
    c->connected_at = *h2o_get_timestamp(&thr->ctx, NULL, NULL);
    SSL_CTX_up_ref(thr->tls_ctx);
    c->ctx = thr->tls_ctx;
    c->timeout.cb = on_handshake_timeout;
    h2o_timeout_link(thr->loop, &thr->ctx.handshake_timeout, &c->timeout);
    sock->data = c;
    h2o_socket_ssl_handshake(sock, c->ctx, NULL, on_handshake);
}
