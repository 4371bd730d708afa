/* Recipient pseudonyms for the event log: a keyed hash (HMAC-SHA-256) of the
 * address, so log lines about one recipient can be correlated without the
 * log holding the address itself. The key lives in a file under var/ and is
 * created on first start; without the key the pseudonyms cannot be reversed
 * by guessing addresses. */
#ifndef SLUICE_CORE_PRIVACY_H
#define SLUICE_CORE_PRIVACY_H

#include <stdbool.h>
#include <stddef.h>

#define PRIVACY_KEY_LEN 32
/* "rcpt:" + 16 hex digits + NUL; with the domain kept, add "@" + domain. */
#define PRIVACY_PSEUDONYM_MIN 22

struct privacy;

/* Loads the key from key_file (32 raw bytes, or 64 hex digits and an optional
 * newline), creating the file with a fresh random key, mode 0600, when it does
 * not exist. keep_domain: pseudonyms end in "@domain" (useful to see which
 * receiving domains have trouble, but the domain is then visible; default
 * false). Allocates; NULL with err set on failure. */
struct privacy *privacy_open(const char *key_file, bool keep_domain, char *err, size_t errlen);

/* Same, with a key given directly (tests, callers holding the key already). */
struct privacy *privacy_new(const unsigned char key[PRIVACY_KEY_LEN], bool keep_domain);

void privacy_free(struct privacy *p);

/* Writes the pseudonym of `address` into out: "rcpt:8f3a61c0d2e4b597", or
 * "rcpt:8f3a61c0d2e4b597@example.com" when the domain is kept. The domain is
 * compared case-insensitively (RFC 5321 2.4), the local part byte for byte.
 * Safe to call from several threads at once. Returns 0, or -1 when out is too
 * small (out is then the empty string). */
int privacy_pseudonym(const struct privacy *p, const char *address, char *out, size_t outlen);

/* Reads a secret file whole (at most cap bytes), dropping one trailing "\n"
 * or "\r\n" so that `openssl rand -hex 32 > file` works as expected. Used for
 * the audit and webhook keys too. Returns 0 with *len set, or -1 with err. */
int privacy_read_secret(const char *path, unsigned char *buf, size_t cap, size_t *len, char *err,
                        size_t errlen);

#endif
