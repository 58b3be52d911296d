/*
 * b64url.h: strict base64url decoding (RFC 4648 section 5, without padding) as JWS (RFC 7515
 * section 2) and JWK (RFC 7517) use it. Strict means one text per byte string: no '=', no
 * whitespace, no characters of the other alphabet, and the unused bits of the last character
 * zero. Pure.
 */
#ifndef PE_B64URL_H
#define PE_B64URL_H

#include <stddef.h>

/** The most bytes len characters can decode to. */
#define PE_B64URL_DECODED_MAX(len) (((len) / 4) * 3 + 2)

/**
 * Decodes s[0..len) into out (room for PE_B64URL_DECODED_MAX(len) bytes). Returns the number of
 * bytes written, or -1 if the text is not canonical unpadded base64url.
 */
long pe_b64url_decode(const char *s, size_t len, unsigned char *out);

#endif
