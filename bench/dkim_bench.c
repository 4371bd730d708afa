/* DKIM signing and verification speed for a 10 KiB message, RSA-2048 and
 * Ed25519, relaxed/relaxed: the per-message cost signing adds to the
 * submission path. Usage: dkim_bench [iterations] */
#include "mailauth/dkim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct key_ctx {
    const char *record;
};

static int lookup(void *ctx, const char *selector, const char *domain, char **txt)
{
    (void)selector;
    (void)domain;
    *txt = strdup(((struct key_ctx *)ctx)->record);
    return 0;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    /* a 10 KiB message of 76-character lines */
    size_t cap = 16384, len = 0;
    char *msg = malloc(cap);
    len += (size_t)snprintf(msg, cap,
                            "From: Shop <orders@shop.example>\r\nTo: c@dest.example\r\n"
                            "Subject: Your order\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
                            "Message-ID: <bench@shop.example>\r\n\r\n");
    while (len < 10240 - 80) {
        memset(msg + len, 'x', 76);
        memcpy(msg + len + 76, "\r\n", 2);
        len += 78;
    }
    const struct {
        enum dkim_algorithm alg;
        unsigned bits;
        const char *name;
    } algs[] = {{DKIM_ALG_RSA_SHA256, 2048, "rsa-sha256 (2048)"},
                {DKIM_ALG_ED25519_SHA256, 0, "ed25519-sha256"}};
    printf("message: %zu bytes, relaxed/relaxed, %d iterations\n", len, n);
    printf("%-20s %12s %12s %12s %12s\n", "algorithm", "sign/s", "us/sign", "verify/s",
           "us/verify");
    for (size_t a = 0; a < 2; a++) {
        char *pem, *record, err[256];
        if (dkim_keygen(algs[a].alg, algs[a].bits, &pem, &record, err, sizeof err) < 0) {
            fprintf(stderr, "keygen: %s\n", err);
            return 1;
        }
        struct dkim_sign_opts o = {.domain = "shop.example", .selector = "bench", .key_pem = pem};
        struct dkim_signer *s = dkim_signer_new(&o, err, sizeof err);
        if (!s) {
            fprintf(stderr, "signer: %s\n", err);
            return 1;
        }
        char *sig = NULL;
        double t0 = now();
        for (int i = 0; i < n; i++) {
            free(sig);
            if (dkim_sign_message(s, msg, len, 1795680000, &sig) < 0)
                return 1;
        }
        double ts = now() - t0;
        /* verify the signed message the same number of times */
        size_t sl = strlen(sig);
        char *signed_msg = malloc(sl + len);
        memcpy(signed_msg, sig, sl);
        memcpy(signed_msg + sl, msg, len);
        struct key_ctx kc = {record};
        t0 = now();
        int ok = 0;
        for (int i = 0; i < n; i++) {
            struct dkim_verify_result res;
            if (dkim_verify(signed_msg, sl + len, NULL, lookup, &kc, &res) == 0 && res.count > 0 &&
                res.sig[0].status == DKIM_STATUS_PASS)
                ok++;
            dkim_verify_result_clear(&res);
        }
        double tv = now() - t0;
        printf("%-20s %12.0f %12.1f %12.0f %12.1f%s\n", algs[a].name, n / ts, ts / n * 1e6, n / tv,
               tv / n * 1e6, ok == n ? "" : "  (VERIFY FAILED)");
        free(signed_msg);
        free(sig);
        free(pem);
        free(record);
        dkim_signer_free(s);
    }
    free(msg);
    return 0;
}
