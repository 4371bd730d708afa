/* Server TLS context and first-start certificate. Fails closed: a context
 * that cannot load its certificate is an error, never a plaintext fallback. */
#include "net/tls.h"

#include "core/config.h"
#include "core/log.h"
#include "net/tls_ocsp.h"
#include "net/tls_session.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

static void ssl_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s%s%s", what, *buf ? ": " : "", buf);
    ERR_clear_error();
}

static int mkdir_parent(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return 0;
    *slash = 0;
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(dir, 0700);
            *p = '/';
        }
    return mkdir(dir, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

/* A certificate this function made earlier (self-issued, O=Sluice) is made
 * anew when it no longer names the hostname or has 30 days or less left.
 * Any other certificate in its place is the operator's and is kept. */
static bool self_signed_stale(const char *cert_path, const char *hostname)
{
    FILE *f = fopen(cert_path, "r");
    if (!f)
        return false;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x) {
        ERR_clear_error();
        return false;
    }
    char org[64] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationName, org, sizeof org);
    bool ours = X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) == 0 &&
                strcmp(org, "Sluice") == 0;
    time_t soon = time(NULL) + 30L * 86400;
    bool stale = ours && (X509_check_host(x, hostname, 0, 0, NULL) != 1 ||
                          X509_cmp_time(X509_get0_notAfter(x), &soon) <= 0);
    X509_free(x);
    ERR_clear_error();
    return stale;
}

int tls_ensure_self_signed(const char *cert_path, const char *key_path, const char *hostname,
                           char *err, size_t errlen)
{
    if (access(cert_path, F_OK) == 0 && access(key_path, F_OK) == 0) {
        if (!self_signed_stale(cert_path, hostname))
            return 0;
        log_event(LOG_INFO, "tls.selfsigned_renewed", "hostname", "%s", hostname, "cert", "%s",
                  cert_path, NULL);
    }
    int rc = -1;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f = NULL;
    if (!key || !x) {
        ssl_err(err, errlen, "cannot generate key");
        goto out;
    }
    X509_set_version(x, 2);
    unsigned char serial[16];
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(serial, 1, sizeof serial, ur) != sizeof serial) {
        if (ur)
            fclose(ur);
        snprintf(err, errlen, "cannot read /dev/urandom");
        goto out;
    }
    fclose(ur);
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 60L * 60 * 24 * 825);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Sluice", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)hostname, -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    char san[600];
    snprintf(san, sizeof san, "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", hostname);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    const char *exts[][2] = {{"subjectAltName", san},
                             {"basicConstraints", "critical,CA:FALSE"},
                             {"keyUsage", "critical,digitalSignature"},
                             {"extendedKeyUsage", "serverAuth"}};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        X509_EXTENSION *ext = X509V3_EXT_conf(NULL, &v3, exts[i][0], exts[i][1]);
        if (!ext) {
            ssl_err(err, errlen, "cannot build certificate extension");
            goto out;
        }
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (!X509_sign(x, key, EVP_sha256())) {
        ssl_err(err, errlen, "cannot sign certificate");
        goto out;
    }
    if (mkdir_parent(key_path) < 0 || mkdir_parent(cert_path) < 0) {
        snprintf(err, errlen, "cannot create directory for %s: %s", key_path, strerror(errno));
        goto out;
    }
    int fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !(f = fdopen(fd, "w")) ||
        !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)) {
        snprintf(err, errlen, "cannot write %s: %s", key_path, strerror(errno));
        if (fd >= 0 && !f)
            close(fd);
        goto out;
    }
    fclose(f);
    f = fopen(cert_path, "w");
    if (!f || !PEM_write_X509(f, x)) {
        snprintf(err, errlen, "cannot write %s: %s", cert_path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (f)
        fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

static int accept_any_client_cert(int preverify_ok, X509_STORE_CTX *store)
{
    (void)preverify_ok;
    (void)store;
    return 1;
}

SSL_CTX *tls_server_ctx_new(const struct config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_err(err, errlen, "cannot create TLS context");
        return NULL;
    }
    int min = cfg->tls_min_version && strcmp(cfg->tls_min_version, "1.3") == 0 ? TLS1_3_VERSION
                                                                               : TLS1_2_VERSION;
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    struct tls_session_params sp = {.tickets = cfg->tls_session_tickets,
                                    .cache_size = cfg->tls_session_cache_size,
                                    .lifetime = cfg->tls_session_lifetime};
    if (tls_session_enable(ctx, &sp) < 0) {
        ssl_err(err, errlen, "cannot set up TLS session resumption");
        SSL_CTX_free(ctx);
        return NULL;
    }
    const char *ciphers = cfg->tls_ciphers && *cfg->tls_ciphers
                              ? cfg->tls_ciphers
                              : "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20";
    if (!SSL_CTX_set_cipher_list(ctx, ciphers)) {
        ssl_err(err, errlen, "bad tls ciphers");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        ssl_err(err, errlen, "cannot load certificate");
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " (%s)", cfg->tls_cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ssl_err(err, errlen, "cannot load private key or it does not match the certificate");
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " (%s)", cfg->tls_key);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sluice", 6);
    if (cfg->tls_ocsp_stapling) {
        char why[256];
        int o = tls_ocsp_enable(ctx, why, sizeof why);
        log_event(o < 0 ? LOG_WARN : LOG_DEBUG, "tls.ocsp", "certificate", "%s", cfg->tls_cert,
                  "stapling", "%s", o > 0 ? "on" : "off", "reason", "%s", why, NULL);
    }
    if (cfg->tls_request_client_cert)
        /* ask for a certificate without requiring one (no FAIL_IF_NO_PEER_CERT)
         * and take self-signed ones: a certificate proves nothing by its
         * chain here, only by its fingerprint registered with a credential */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, accept_any_client_cert);
    return ctx;
}

void tls_describe(SSL *ssl, char *buf, size_t len)
{
    snprintf(buf, len, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}
