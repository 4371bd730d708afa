/* Fuzzes whole-message DKIM verification with the RFC 8463 keys fixed in
 * memory, so mutated copies of a signed message reach the crypto checks. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mailauth/dkim.h"

static int fixed_lookup(void *ctx, const char *selector, const char *domain, char **txt)
{
    (void)ctx;
    if (strcmp(domain, "football.example.com") != 0)
        return strcmp(domain, "tempfail.example") ? 1 : -1;
    if (!strcmp(selector, "brisbane"))
        *txt = strdup("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
    else if (!strcmp(selector, "test"))
        *txt = strdup("v=DKIM1; k=rsa; "
                      "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5q"
                      "hdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+P"
                      "L6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB");
    else
        return 1;
    return *txt ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dkim_verify_result r;
    struct dkim_verify_opts o = {.now = 1600000000};
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    if (dkim_verify(buf, size, &o, fixed_lookup, NULL, &r) == 0) {
        char *ar = dkim_auth_results(&r, "fuzz.example");
        free(ar);
        json_t *j = dkim_results_json(&r);
        json_decref(j);
        dkim_verify_result_clear(&r);
    }
    free(buf);
    return 0;
}
