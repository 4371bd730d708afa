/* libFuzzer target for SCRAM (mail/scram.c): the input's lines are fed to a
 * server as client-first, client-final and the closing empty response, and
 * to a client as server-first and server-final; the stored verifier line is
 * parsed too. No crash, results within the documented states. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/scram.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static int fixed_random(void *arg, unsigned char *buf, size_t len)
{
    (void)arg;
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(i * 31 + 7);
    return 0;
}

/* The RFC 7677 user, so a well-formed exchange can get far. */
static int lookup(void *arg, const char *authcid, struct scram_credential *out)
{
    static const unsigned char salt[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
                                         0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};
    (void)arg;
    if (strcmp(authcid, "user") != 0)
        return authcid[0] == 'x' ? -1 : 1;
    memset(out, 0, sizeof(*out));
    memcpy(out->salt, salt, sizeof(salt));
    out->salt_len = sizeof(salt);
    out->iterations = 4096;
    memset(out->stored_key, 0x11, SCRAM_KEY_MAX);
    memset(out->server_key, 0x22, SCRAM_KEY_MAX);
    return 0;
}

/* Splits off the next '\n'-terminated line. */
static const char *next_line(const char **p, const char *end, size_t *len)
{
    if (*p > end)
        return NULL;
    const char *s = *p;
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    *len = nl ? (size_t)(nl - s) : (size_t)(end - s);
    *p = nl ? nl + 1 : end + 1;
    return s;
}

static void run_server(enum scram_mech mech, const char *data, size_t size)
{
    static const unsigned char secret[] = "fuzz secret";
    struct scram_server_config cfg = {
        .mech = mech, .random = fixed_random, .secret = secret, .secret_len = sizeof(secret)};
    struct scram_server *s = scram_server_new(&cfg);
    const char *p = data, *end = data + size, *line;
    size_t len;
    CHECK(s != NULL);
    for (int step = 0; step < 4 && (line = next_line(&p, end, &len)) != NULL; step++) {
        char *out = NULL;
        enum scram_status st = scram_server_step(s, line, len, lookup, NULL, &out);
        CHECK(st == SCRAM_CONTINUE || st == SCRAM_SUCCESS || st == SCRAM_FAILURE);
        if (out != NULL)
            CHECK(strlen(out) < 2 * SCRAM_MESSAGE_MAX);
        if (st == SCRAM_CONTINUE)
            CHECK(out != NULL && scram_server_error(s) == SCRAM_ERR_NONE);
        if (st == SCRAM_FAILURE)
            CHECK(scram_server_error(s) != SCRAM_ERR_NONE && scram_server_reason(s)[0] != '\0');
        /* Nothing can pass the proof with the keys above. */
        CHECK(st != SCRAM_SUCCESS);
        CHECK(strlen(scram_server_authcid(s)) <= SCRAM_NAME_MAX);
        free(out);
        if (st != SCRAM_CONTINUE)
            break;
    }
    scram_server_free(s);
}

static void run_client(const char *data, size_t size)
{
    struct scram_client *c =
        scram_client_new(SCRAM_SHA_256, "user", NULL, "pencil", fixed_random, NULL);
    const char *p = data, *end = data + size, *line;
    size_t len;
    char *out = NULL;
    CHECK(c != NULL);
    CHECK(scram_client_first(c, &out) == 0);
    free(out);
    out = NULL;
    line = next_line(&p, end, &len);
    /* Skip large iteration counts: each costs real PBKDF2 time. */
    const char *it = line ? memmem(line, len, ",i=", 3) : NULL;
    if (line != NULL && (it == NULL || (size_t)(line + len - it) <= 8)) {
        if (scram_client_final(c, line, len, &out) == 0) {
            CHECK(out != NULL && strncmp(out, "c=biws,r=", 9) == 0);
            if ((line = next_line(&p, end, &len)) != NULL) {
                int v = scram_client_verify(c, line, len);
                CHECK(v == 0 || v == -1);
            }
        } else {
            CHECK(out == NULL);
        }
    }
    free(out);
    scram_client_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    struct scram_credential cred;

    run_server(SCRAM_SHA_256, in, size);
    run_server(SCRAM_SHA_1, in, size);
    run_client(in, size);
    if (scram_credential_parse(SCRAM_SHA_256, in, size, &cred) == 0) {
        char line[256];
        CHECK(cred.salt_len > 0 && cred.salt_len <= SCRAM_SALT_MAX && cred.iterations > 0);
        CHECK(scram_credential_format(SCRAM_SHA_256, &cred, line, sizeof(line)) > 0);
    }
    return 0;
}
