/* Recipient pseudonyms: HMAC-SHA-256 of the address under a per-installation
 * key, shortened to 64 bits. 64 bits keep collisions negligible for the
 * recipients one relay sees while staying short in log lines. */
#include "core/privacy.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PSEUDONYM_PREFIX "rcpt:"
#define PSEUDONYM_HEX 16

struct privacy {
    unsigned char key[PRIVACY_KEY_LEN];
    bool keep_domain;
};

int privacy_read_secret(const char *path, unsigned char *buf, size_t cap, size_t *len, char *err,
                        size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            /* One more byte tells "exactly cap" from "too long". */
            char extra;
            ssize_t r = read(fd, &extra, 1);
            if (r != 0) {
                close(fd);
                snprintf(err, errlen, "%s: longer than %zu bytes", path, cap);
                return -1;
            }
            break;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
    }
    if (n == 0) {
        snprintf(err, errlen, "%s: empty", path);
        return -1;
    }
    *len = n;
    return 0;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Writes a new random key next to path and links it into place, so a crash
 * never leaves a short key file and two processes starting together agree on
 * one key (the loser of link() reads the winner's). */
static int create_key(const char *path, char *err, size_t errlen)
{
    unsigned char key[PRIVACY_KEY_LEN];
    if (RAND_bytes(key, sizeof key) != 1) {
        snprintf(err, errlen, "no randomness for a new privacy key");
        return -1;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    int rc = 0;
    if (write(fd, key, sizeof key) != (ssize_t)sizeof key || fsync(fd) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        rc = -1;
    }
    close(fd);
    OPENSSL_cleanse(key, sizeof key);
    if (rc == 0 && link(tmp, path) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = -1;
    }
    unlink(tmp);
    return rc;
}

struct privacy *privacy_new(const unsigned char key[PRIVACY_KEY_LEN], bool keep_domain)
{
    struct privacy *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    memcpy(p->key, key, PRIVACY_KEY_LEN);
    p->keep_domain = keep_domain;
    return p;
}

struct privacy *privacy_open(const char *key_file, bool keep_domain, char *err, size_t errlen)
{
    if (!key_file || !*key_file) {
        snprintf(err, errlen, "no privacy key file configured");
        return NULL;
    }
    if (access(key_file, F_OK) != 0) {
        if (errno != ENOENT) {
            snprintf(err, errlen, "%s: %s", key_file, strerror(errno));
            return NULL;
        }
        if (create_key(key_file, err, errlen) != 0)
            return NULL;
    }
    unsigned char raw[2 * PRIVACY_KEY_LEN + 2]; /* room for "\r\n" */
    size_t n = 0;
    struct stat st;
    if (stat(key_file, &st) == 0 && st.st_size == PRIVACY_KEY_LEN) {
        /* a binary key (as create_key writes) is taken whole: its last byte
         * may be 0x0a, which the text reader would drop as a line end */
        int fd = open(key_file, O_RDONLY | O_CLOEXEC);
        ssize_t r = fd >= 0 ? read(fd, raw, PRIVACY_KEY_LEN) : -1;
        if (fd >= 0)
            close(fd);
        if (r != PRIVACY_KEY_LEN) {
            snprintf(err, errlen, "%s: cannot read the key", key_file);
            return NULL;
        }
        n = PRIVACY_KEY_LEN;
    } else if (privacy_read_secret(key_file, raw, sizeof raw, &n, err, errlen) != 0) {
        return NULL;
    }
    unsigned char key[PRIVACY_KEY_LEN];
    if (n == PRIVACY_KEY_LEN) {
        memcpy(key, raw, PRIVACY_KEY_LEN);
    } else if (n == 2 * PRIVACY_KEY_LEN) {
        for (size_t i = 0; i < PRIVACY_KEY_LEN; i++) {
            int hi = hex_value(raw[2 * i]), lo = hex_value(raw[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                snprintf(err, errlen, "%s: not 64 hex digits", key_file);
                OPENSSL_cleanse(raw, sizeof raw);
                return NULL;
            }
            key[i] = (unsigned char)(hi << 4 | lo);
        }
    } else {
        snprintf(err, errlen, "%s: expected 32 bytes or 64 hex digits, found %zu bytes", key_file,
                 n);
        OPENSSL_cleanse(raw, sizeof raw);
        return NULL;
    }
    OPENSSL_cleanse(raw, sizeof raw);
    struct privacy *p = privacy_new(key, keep_domain);
    OPENSSL_cleanse(key, sizeof key);
    if (!p)
        snprintf(err, errlen, "out of memory");
    return p;
}

void privacy_free(struct privacy *p)
{
    if (!p)
        return;
    OPENSSL_cleanse(p->key, sizeof p->key);
    free(p);
}

int privacy_pseudonym(const struct privacy *p, const char *address, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    if (outlen)
        out[0] = '\0';
    size_t alen = strlen(address);
    const char *at = strrchr(address, '@');
    size_t dlen = at ? alen - (size_t)(at - address) : 0; /* "@domain" */
    size_t need = sizeof PSEUDONYM_PREFIX - 1 + PSEUDONYM_HEX + 1;
    if (p->keep_domain)
        need += dlen;
    if (outlen < need)
        return -1;

    /* The domain is case-insensitive, the local part is not (RFC 5321 2.4):
     * hash a copy with the domain folded to lower case. */
    char stackbuf[512];
    char *norm = alen < sizeof stackbuf ? stackbuf : malloc(alen + 1);
    if (!norm)
        return -1;
    memcpy(norm, address, alen + 1);
    for (size_t i = alen - dlen; i < alen; i++)
        norm[i] = (char)tolower((unsigned char)norm[i]);

    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    /* One-shot HMAC keeps no shared state, so concurrent callers are safe. */
    unsigned char *ok = HMAC(EVP_sha256(), p->key, PRIVACY_KEY_LEN, (const unsigned char *)norm,
                             alen, mac, &maclen);
    if (!ok) {
        if (norm != stackbuf)
            free(norm);
        return -1;
    }
    size_t o = 0;
    memcpy(out, PSEUDONYM_PREFIX, sizeof PSEUDONYM_PREFIX - 1);
    o += sizeof PSEUDONYM_PREFIX - 1;
    for (size_t i = 0; i < PSEUDONYM_HEX / 2; i++) {
        out[o++] = hex[mac[i] >> 4];
        out[o++] = hex[mac[i] & 15];
    }
    if (p->keep_domain && dlen) {
        memcpy(out + o, norm + alen - dlen, dlen);
        o += dlen;
    }
    out[o] = '\0';
    if (norm != stackbuf)
        free(norm);
    return 0;
}
