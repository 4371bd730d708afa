/* Base64 (RFC 4648 section 4) for SASL exchanges, DKIM keys and signatures.
 * Decoding is strict because the input comes from the network: a malformed
 * string is refused rather than guessed at, so two parsers never disagree on
 * what a client sent. */
#include "core/base64.h"

#include <stdint.h>

static const char base64_alphabet[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Decoding table: 0..63 for alphabet characters, B64_PAD for '=', B64_BAD for
 * anything else. Built by hand as a constant so the decoder has no state. */
enum { B64_BAD = 0xff, B64_PAD = 0xfe };

#define B64_ROW_BAD                                                                                \
    B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD,      \
        B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD

static const uint8_t base64_value[256] = {
    B64_ROW_BAD, /* 0x00 */
    B64_ROW_BAD, /* 0x10 */
    /* 0x20: space ! " # $ % & ' ( ) * + , - . / */
    B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD,
    B64_BAD, 62, B64_BAD, B64_BAD, B64_BAD, 63,
    /* 0x30: 0-9 : ; < = > ? */
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, B64_BAD, B64_BAD, B64_BAD, B64_PAD, B64_BAD, B64_BAD,
    /* 0x40: @ A-O */
    B64_BAD, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    /* 0x50: P-Z [ \ ] ^ _ */
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD,
    /* 0x60: ` a-o */
    B64_BAD, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    /* 0x70: p-z { | } ~ DEL */
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, B64_BAD, B64_BAD, B64_BAD, B64_BAD, B64_BAD,
    B64_ROW_BAD, B64_ROW_BAD, B64_ROW_BAD, B64_ROW_BAD, /* 0x80-0xbf */
    B64_ROW_BAD, B64_ROW_BAD, B64_ROW_BAD, B64_ROW_BAD, /* 0xc0-0xff */
};

size_t base64_encode(const void *in, size_t len, char *out)
{
    const unsigned char *p = in;
    char *o = out;
    size_t i = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = base64_alphabet[v >> 18];
        *o++ = base64_alphabet[(v >> 12) & 63];
        *o++ = base64_alphabet[(v >> 6) & 63];
        *o++ = base64_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = base64_alphabet[v >> 18];
        *o++ = base64_alphabet[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *o++ = base64_alphabet[v >> 18];
        *o++ = base64_alphabet[(v >> 12) & 63];
        *o++ = base64_alphabet[(v >> 6) & 63];
        *o++ = '=';
    }
    *o = '\0';
    return (size_t)(o - out);
}

static int is_base64_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

long base64_decode(const char *in, size_t len, unsigned char *out, int allow_space)
{
    unsigned char *o = out;
    uint8_t quad[4];
    size_t nq = 0;  /* characters collected in the current quantum */
    size_t pad = 0; /* '=' seen; after the padded quantum nothing may follow */
    int finished = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        uint8_t v = base64_value[c];

        if (v == B64_BAD) {
            if (allow_space && is_base64_space(c))
                continue;
            return -1;
        }
        if (finished)
            return -1; /* data after the padded final quantum */
        if (v == B64_PAD) {
            /* RFC 4648 3.2: '=' may only fill the last one or two positions. */
            if (nq < 2)
                return -1;
            pad++;
            quad[nq++] = 0;
        } else {
            if (pad)
                return -1; /* "xx=x" */
            quad[nq++] = v;
        }
        if (nq == 4) {
            uint32_t w = (uint32_t)quad[0] << 18 | (uint32_t)quad[1] << 12 |
                         (uint32_t)quad[2] << 6 | quad[3];
            *o++ = (unsigned char)(w >> 16);
            if (pad < 2)
                *o++ = (unsigned char)(w >> 8);
            if (pad < 1)
                *o++ = (unsigned char)w;
            nq = 0;
            if (pad)
                finished = 1;
        }
    }
    if (nq != 0)
        return -1; /* missing padding or truncated quantum */
    return (long)(o - out);
}
