/* OCSP stapling (tls_ocsp.h). One stapler per server context: the context
 * and the fetch thread share it by reference count, so freeing the context
 * (a reload) only asks the thread to stop and never waits for a fetch. */
#include "net/tls_ocsp.h"

#include "core/log.h"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OCSP_FETCH_TIMEOUT 10L  /* seconds for one HTTP exchange */
#define OCSP_RESPONSE_MAX 65536 /* a response bigger than this is refused */
#define OCSP_REFRESH_MIN 60     /* seconds */
#define OCSP_REFRESH_MAX 3600   /* seconds */
#define OCSP_RETRY_FIRST 15     /* seconds after a failed fetch, doubling */
#define OCSP_RETRY_MAX 600      /* seconds */
#define OCSP_CLOCK_SKEW 300     /* seconds of leeway on thisUpdate/nextUpdate */

struct stapler {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    bool stop;
    /* what the thread needs, its own references */
    X509 *leaf, *issuer;
    char *url;
    char subject[256];
    /* the newest good response, DER */
    unsigned char *der;
    size_t der_len;
    time_t expires; /* nextUpdate (+ skew); 0: none given, trusted for a day from fetch */
};

static int ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void stapler_unref(struct stapler *st)
{
    pthread_mutex_lock(&st->mu);
    bool last = --st->refs == 0;
    pthread_mutex_unlock(&st->mu);
    if (!last)
        return;
    X509_free(st->leaf);
    X509_free(st->issuer);
    free(st->url);
    OPENSSL_free(st->der);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st);
}

/* SSL_CTX_free: the context's reference goes; the thread is told to stop. */
static void ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct stapler *st = ptr;
    if (!st)
        return;
    pthread_mutex_lock(&st->mu);
    st->stop = true;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    stapler_unref(st);
}

static void ex_init(void)
{
    ex_index = SSL_CTX_get_ex_new_index(0, "sluice ocsp stapler", NULL, NULL, ex_free);
}

/* ---- fetching ---- */

struct body {
    unsigned char *p;
    size_t len;
    bool too_big;
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    size_t add = size * n;
    if (b->len + add > OCSP_RESPONSE_MAX) {
        b->too_big = true;
        return 0;
    }
    unsigned char *np = realloc(b->p, b->len + add);
    if (!np)
        return 0;
    memcpy(np + b->len, data, add);
    b->p = np;
    b->len += add;
    return add;
}

/* POSTs the request (RFC 6960 A.1); fills *resp. Returns 0 or -1 with why. */
static int fetch(const char *url, const unsigned char *req, size_t req_len, struct body *resp,
                 char *why, size_t whylen)
{
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(why, whylen, "cannot start an HTTP client");
        return -1;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/ocsp-request");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)req);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req_len);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, OCSP_FETCH_TIMEOUT);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (resp->too_big) {
        snprintf(why, whylen, "response over %d bytes", OCSP_RESPONSE_MAX);
        return -1;
    }
    if (rc != CURLE_OK) {
        snprintf(why, whylen, "%s", curl_easy_strerror(rc));
        return -1;
    }
    if (status != 200) {
        snprintf(why, whylen, "HTTP status %ld", status);
        return -1;
    }
    return 0;
}

static time_t asn1_time(const ASN1_GENERALIZEDTIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

/* One round: request, fetch, check. On success the response is held and
 * *next_update says when it runs out (0: not given). */
static int refresh(struct stapler *st, time_t *next_update, char *why, size_t whylen)
{
    int rc = -1;
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    OCSP_CERTID *id = OCSP_cert_to_id(NULL, st->leaf, st->issuer);
    OCSP_CERTID *id_req = id ? OCSP_CERTID_dup(id) : NULL;
    unsigned char *req_der = NULL;
    int req_len = -1;
    struct body resp = {0};
    OCSP_RESPONSE *r = NULL;
    OCSP_BASICRESP *bs = NULL;
    X509_STORE *store = NULL;
    STACK_OF(X509) *certs = NULL;
    if (!req || !id || !id_req || !OCSP_request_add0_id(req, id_req)) {
        snprintf(why, whylen, "cannot build the request");
        goto out;
    }
    id_req = NULL; /* owned by req now */
    req_len = i2d_OCSP_REQUEST(req, &req_der);
    if (req_len <= 0) {
        snprintf(why, whylen, "cannot encode the request");
        goto out;
    }
    if (fetch(st->url, req_der, (size_t)req_len, &resp, why, whylen) < 0)
        goto out;
    const unsigned char *p = resp.p;
    r = d2i_OCSP_RESPONSE(NULL, &p, (long)resp.len);
    if (!r) {
        snprintf(why, whylen, "not an OCSP response");
        goto out;
    }
    int status = OCSP_response_status(r);
    if (status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        snprintf(why, whylen, "responder said %s", OCSP_response_status_str(status));
        goto out;
    }
    bs = OCSP_response_get1_basic(r);
    store = X509_STORE_new();
    certs = sk_X509_new_null();
    if (!bs || !store || !certs || !X509_STORE_add_cert(store, st->issuer) ||
        !sk_X509_push(certs, st->issuer)) {
        snprintf(why, whylen, "cannot read the response");
        goto out;
    }
    X509_up_ref(st->issuer); /* the stack's reference */
    /* the issuer is the anchor: it need not be a root */
    X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    if (OCSP_basic_verify(bs, certs, store, 0) != 1) {
        unsigned long e = ERR_peek_last_error();
        snprintf(why, whylen, "response signature does not verify (%s)",
                 e ? ERR_reason_error_string(e) : "no reason given");
        goto out;
    }
    int cstatus = -1, reason = -1;
    ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
    if (OCSP_resp_find_status(bs, id, &cstatus, &reason, &rev, &thisupd, &nextupd) != 1) {
        snprintf(why, whylen, "response does not cover the certificate");
        goto out;
    }
    if (OCSP_check_validity(thisupd, nextupd, OCSP_CLOCK_SKEW, -1) != 1) {
        snprintf(why, whylen, "response is outside its validity period");
        goto out;
    }
    if (cstatus != V_OCSP_CERTSTATUS_GOOD) {
        snprintf(why, whylen, "certificate status is %s%s%s", OCSP_cert_status_str(cstatus),
                 cstatus == V_OCSP_CERTSTATUS_REVOKED ? ": " : "",
                 cstatus == V_OCSP_CERTSTATUS_REVOKED ? OCSP_crl_reason_str(reason) : "");
        goto out;
    }
    *next_update = asn1_time(nextupd);
    unsigned char *der = OPENSSL_malloc(resp.len);
    if (!der) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    memcpy(der, resp.p, resp.len);
    pthread_mutex_lock(&st->mu);
    OPENSSL_free(st->der);
    st->der = der;
    st->der_len = resp.len;
    st->expires = *next_update ? *next_update + OCSP_CLOCK_SKEW : time(NULL) + 86400;
    pthread_mutex_unlock(&st->mu);
    rc = 0;
out:
    OCSP_REQUEST_free(req);
    OCSP_CERTID_free(id);
    OCSP_CERTID_free(id_req);
    OPENSSL_free(req_der);
    free(resp.p);
    OCSP_RESPONSE_free(r);
    OCSP_BASICRESP_free(bs);
    X509_STORE_free(store);
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

static void *run(void *arg)
{
    struct stapler *st = arg;
    int retry = OCSP_RETRY_FIRST;
    for (;;) {
        char why[256] = "";
        time_t next = 0;
        int wait;
        if (refresh(st, &next, why, sizeof why) == 0) {
            time_t now = time(NULL);
            wait = next > now ? (int)((next - now) / 2) : OCSP_REFRESH_MAX;
            if (wait < OCSP_REFRESH_MIN)
                wait = OCSP_REFRESH_MIN;
            if (wait > OCSP_REFRESH_MAX)
                wait = OCSP_REFRESH_MAX;
            retry = OCSP_RETRY_FIRST;
            log_event(LOG_INFO, "tls.ocsp_stapled", "certificate", "%s", st->subject, "responder",
                      "%s", st->url, "next_update", "#%lld", (long long)next, "refresh_in_s", "#%d",
                      wait, NULL);
        } else {
            wait = retry;
            retry = retry * 2 > OCSP_RETRY_MAX ? OCSP_RETRY_MAX : retry * 2;
            log_event(LOG_WARN, "tls.ocsp_failed", "certificate", "%s", st->subject, "responder",
                      "%s", st->url, "error", "%s", why, "retry_in_s", "#%d", wait, NULL);
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += wait;
        pthread_mutex_lock(&st->mu);
        while (!st->stop && pthread_cond_timedwait(&st->cv, &st->mu, &until) == 0)
            ;
        bool stop = st->stop;
        pthread_mutex_unlock(&st->mu);
        if (stop)
            break;
    }
    stapler_unref(st);
    return NULL;
}

/* ---- the handshake side ---- */

static int on_status(SSL *ssl, void *arg)
{
    struct stapler *st = arg;
    unsigned char *copy = NULL;
    size_t len = 0;
    pthread_mutex_lock(&st->mu);
    if (st->der && time(NULL) < st->expires) {
        copy = OPENSSL_malloc(st->der_len);
        if (copy) {
            memcpy(copy, st->der, st->der_len);
            len = st->der_len;
        }
    }
    pthread_mutex_unlock(&st->mu);
    if (!copy)
        return SSL_TLSEXT_ERR_NOACK;
    /* OpenSSL frees the copy with the connection */
    SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)len);
    return SSL_TLSEXT_ERR_OK;
}

static X509 *find_issuer(SSL_CTX *ctx, X509 *leaf)
{
    STACK_OF(X509) *chain = NULL;
    if (SSL_CTX_get0_chain_certs(ctx, &chain) != 1 || !chain)
        return NULL;
    for (int i = 0; i < sk_X509_num(chain); i++) {
        X509 *c = sk_X509_value(chain, i);
        if (X509_check_issued(c, leaf) == X509_V_OK)
            return c;
    }
    return NULL;
}

static char *responder_url(X509 *leaf)
{
    STACK_OF(OPENSSL_STRING) *urls = X509_get1_ocsp(leaf);
    char *url = NULL;
    for (int i = 0; urls && i < sk_OPENSSL_STRING_num(urls) && !url; i++) {
        const char *u = sk_OPENSSL_STRING_value(urls, i);
        if (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0)
            url = strdup(u);
    }
    X509_email_free(urls);
    return url;
}

int tls_ocsp_enable(SSL_CTX *ctx, char *why, size_t whylen)
{
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    if (!leaf) {
        snprintf(why, whylen, "no certificate loaded");
        return -1;
    }
    char *url = responder_url(leaf);
    if (!url) {
        snprintf(why, whylen, "the certificate names no OCSP responder");
        return 0;
    }
    X509 *issuer = find_issuer(ctx, leaf);
    if (!issuer) {
        free(url);
        snprintf(why, whylen, "the certificate's issuer is not in the chain file");
        return 0;
    }
    pthread_once(&ex_once, ex_init);
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before the thread: not thread-safe */
    struct stapler *st = calloc(1, sizeof *st);
    if (!st || ex_index < 0) {
        free(st);
        free(url);
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    st->refs = 2; /* the context and the thread */
    X509_up_ref(leaf);
    X509_up_ref(issuer);
    st->leaf = leaf;
    st->issuer = issuer;
    st->url = url;
    X509_NAME_oneline(X509_get_subject_name(leaf), st->subject, sizeof st->subject);
    pthread_t t;
    if (pthread_create(&t, NULL, run, st) != 0) {
        st->refs = 1;
        stapler_unref(st);
        snprintf(why, whylen, "cannot start the OCSP thread");
        return -1;
    }
    pthread_detach(t);
    SSL_CTX_set_ex_data(ctx, ex_index, st);
    SSL_CTX_set_tlsext_status_cb(ctx, on_status);
    SSL_CTX_set_tlsext_status_arg(ctx, st);
    snprintf(why, whylen, "stapling from %s", url);
    return 1;
}

bool tls_ocsp_stapling(SSL_CTX *ctx)
{
    if (ex_index < 0)
        return false;
    struct stapler *st = SSL_CTX_get_ex_data(ctx, ex_index);
    if (!st)
        return false;
    pthread_mutex_lock(&st->mu);
    bool ok = st->der && time(NULL) < st->expires;
    pthread_mutex_unlock(&st->mu);
    return ok;
}
