/*
 * ossl_idle_mem.c: what OpenSSL alone keeps per idle server-side TLS connection, measured the
 * way tests/load/tls_idle_mem.mjs measures pushedge (glibc's bytes in use after malloc_trim),
 * without h2o, sockets or pushedge (docs/benchmarks.md "TLS: memory per idle connection").
 *
 *   build-rel/tests/load/ossl-idle-mem [N=2000]
 *
 * Makes a throwaway P-256 key and self-signed certificate, then for each variant: N handshakes
 * in memory (client and server SSL objects joined by memory BIOs; TLS 1.3, X25519,
 * TLS_AES_256_GCM_SHA384, ALPN http/1.1, one session ticket, as pushedge negotiates with its
 * clients; the last variant TLS 1.2 with ECDHE-ECDSA-AES256-GCM-SHA384), one small application record each way, then the client is
 * freed, the server's BIOs are replaced by one null BIO (h2o's connection has one BIO too) and its record buffers are given back
 * (SSL_free_buffers). Prints one JSON line per variant: the bytes in use per kept server SSL object. Bounded: N at most 20000.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

static size_t
heap_in_use(void)
{
    malloc_trim(0);
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void
die(const char *what)
{
    fprintf(stderr, "ossl-idle-mem: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void
make_cert(EVP_PKEY **pkey, X509 **cert)
{
    if ((*pkey = EVP_EC_gen("P-256")) == NULL)
        die("key");
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, *pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, name);
    if (X509_sign(x, *pkey, EVP_sha256()) == 0)
        die("sign");
    *cert = x;
}

static int
select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in, unsigned inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto((unsigned char **)out, outlen, (const unsigned char *)"\x08http/1.1", 9, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

/* Moves what one side wrote to the other side's input; returns the bytes moved. */
static size_t
shuttle(BIO *from, BIO *to)
{
    char buf[4096];
    size_t moved = 0;
    int n;
    while ((n = BIO_read(from, buf, sizeof(buf))) > 0) {
        BIO_write(to, buf, n);
        moved += (size_t)n;
    }
    return moved;
}

static SSL *
connect_one(SSL_CTX *sctx, SSL_CTX *cctx)
{
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());
    BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
    SSL_set_bio(s, s_in, s_out);
    SSL_set_bio(c, c_in, c_out);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    SSL_set_alpn_protos(c, (const unsigned char *)"\x08http/1.1", 9);
    int s_done = 0, c_done = 0;
    for (int round = 0; round != 20 && !(s_done && c_done); ++round) {
        if (!c_done)
            c_done = SSL_do_handshake(c) == 1;
        shuttle(c_out, s_in);
        if (!s_done)
            s_done = SSL_do_handshake(s) == 1;
        shuttle(s_out, c_in);
    }
    if (!s_done || !c_done)
        die("handshake");
    /* One small record each way (a request, a message), so the ticket is read and both record
     * layers have been used, as on a served connection. */
    char buf[256];
    static const char req[] = "GET /ws HTTP/1.1\r\n\r\n";
    SSL_write(c, req, sizeof(req) - 1);
    shuttle(c_out, s_in);
    if (SSL_read(s, buf, sizeof(buf)) <= 0)
        die("server read");
    SSL_write(s, "hello", 5);
    shuttle(s_out, c_in);
    if (SSL_read(c, buf, sizeof(buf)) <= 0)
        die("client read");
    SSL_free(c);
    BIO *null = BIO_new(BIO_s_null());
    SSL_set_bio(s, null, null);
    if (SSL_free_buffers(s) != 1)
        die("SSL_free_buffers");
    return s;
}

static void
variant(const char *name, EVP_PKEY *pkey, X509 *cert, int n, int cache, int tickets, int release_mode, int tls12)
{
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(sctx, TLS1_2_VERSION);
    SSL_CTX_set_options(sctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (release_mode)
        SSL_CTX_set_mode(sctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate(sctx, cert) != 1 || SSL_CTX_use_PrivateKey(sctx, pkey) != 1)
        die("certificate");
    SSL_CTX_set_alpn_select_cb(sctx, select_alpn, NULL);
    SSL_CTX_set_session_id_context(sctx, (const unsigned char *)"pushedge", 8);
    SSL_CTX_set_session_cache_mode(sctx, cache ? SSL_SESS_CACHE_SERVER : SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(sctx, tickets);
    SSL_CTX_set_ciphersuites(cctx, "TLS_AES_256_GCM_SHA384");
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
    if (tls12)
        SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
    SSL **kept = calloc((size_t)n, sizeof(*kept));
    /* A few first, so one-time allocations (provider caches, the session cache's table) stay out. */
    for (int i = 0; i != 50; ++i)
        SSL_free(connect_one(sctx, cctx));
    size_t before = heap_in_use();
    for (int i = 0; i != n; ++i)
        kept[i] = connect_one(sctx, cctx);
    size_t after = heap_in_use();
    const char *cipher = SSL_get_cipher_name(kept[0]);
    const char *version = SSL_get_version(kept[0]);
    printf("{\"variant\":\"%s\",\"connections\":%d,\"version\":\"%s\",\"cipher\":\"%s\",\"session_cache\":%d,\"tickets\":%d,"
           "\"bytes_per_connection\":%.0f,\"kib_per_connection\":%.2f}\n",
           name, n, version, cipher, cache, tickets, (double)(after - before) / n, (double)(after - before) / n / 1024);
    fflush(stdout);
    for (int i = 0; i != n; ++i)
        SSL_free(kept[i]);
    free(kept);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

int
main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    if (n < 1 || n > 20000)
        n = 2000;
    EVP_PKEY *pkey;
    X509 *cert;
    make_cert(&pkey, &cert);
    variant("as pushedge (cache + 1 ticket)", pkey, cert, n, 1, 1, 0, 0);
    variant("no server session cache", pkey, cert, n, 0, 1, 0, 0);
    variant("no session cache, no ticket", pkey, cert, n, 0, 0, 0, 0);
    variant("as pushedge + SSL_MODE_RELEASE_BUFFERS", pkey, cert, n, 1, 1, 1, 0);
    variant("as pushedge, TLS 1.2", pkey, cert, n, 1, 1, 0, 1);
    X509_free(cert);
    EVP_PKEY_free(pkey);
    return 0;
}
