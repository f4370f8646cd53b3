/*
 * sign: see sign.h.
 *
 * The secret is decoded on every call rather than cached: a delivery signs
 * one body, and keeping decoded keys around would be one more copy of a
 * secret in memory. Decoded keys are wiped before they are freed.
 */
#include "sign.h"
#include "buf.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIGN_PREFIX "whsec_"
#define SHA256_LEN 32

static bool is_b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

/*
 * Decodes standard base64 into a new buffer (the caller wipes and frees
 * it). Padding is optional, but when present it must be right: "=" only at
 * the end, at most two, total length a multiple of four. Whitespace is an
 * error, not skipped, since a secret with a space in it is a pasting
 * mistake the user should hear about.
 */
static bool b64_decode(const char *s, unsigned char **out, size_t *outlen)
{
	size_t n = strlen(s), data = 0;
	/* EVP_DecodeBlock counts in int; no real key comes near this. */
	if (n > 65536)
		return false;
	while (data < n && is_b64_char(s[data]))
		data++;
	size_t pad = n - data;
	if (data == 0 || pad > 2 || (pad && n % 4 != 0) || data % 4 == 1)
		return false;
	for (size_t i = data; i < n; i++)
		if (s[i] != '=')
			return false;

	/* EVP_DecodeBlock wants whole quanta; restore the padding it may lack. */
	size_t quanta = (data + 3) / 4 * 4;
	unsigned char *text = xmalloc(quanta);
	memcpy(text, s, data);
	memset(text + data, '=', quanta - data);
	unsigned char *key = xmalloc(quanta / 4 * 3);
	/* It counts the bytes the padding stands for, so those are taken off. */
	int got = EVP_DecodeBlock(key, text, (int)quanta);
	OPENSSL_cleanse(text, quanta);
	free(text);
	if (got < 0 || (size_t)got <= quanta - data) {
		OPENSSL_cleanse(key, quanta / 4 * 3);
		free(key);
		return false;
	}
	*out = key;
	*outlen = (size_t)got - (quanta - data);
	return true;
}

/* The secret without its optional prefix. */
static const char *secret_body(const char *secret)
{
	size_t plen = strlen(SIGN_PREFIX);
	return strncmp(secret, SIGN_PREFIX, plen) == 0 ? secret + plen : secret;
}

bool sign_secret_valid(const char *secret)
{
	unsigned char *key;
	size_t keylen;
	if (!secret || !b64_decode(secret_body(secret), &key, &keylen))
		return false;
	OPENSSL_cleanse(key, keylen);
	free(key);
	return true;
}

static bool mac_update(EVP_MAC_CTX *ctx, const void *data, size_t len)
{
	return len == 0 || EVP_MAC_update(ctx, data, len);
}

/* HMAC-SHA256 over "<msg_id>.<timestamp>.<body>", fed in pieces so the body is not copied. */
static bool hmac_sha256(const unsigned char *key, size_t keylen, const char *msg_id,
			long long timestamp, const char *body, size_t body_len,
			unsigned char mac[SHA256_LEN])
{
	char digest[] = "SHA256", ts[32];
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
		OSSL_PARAM_construct_end(),
	};
	int tslen = snprintf(ts, sizeof(ts), "%lld", timestamp);
	size_t maclen = 0;

	EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
	bool ok = ctx && EVP_MAC_init(ctx, key, keylen, params) &&
		  mac_update(ctx, msg_id, strlen(msg_id)) && mac_update(ctx, ".", 1) &&
		  mac_update(ctx, ts, (size_t)tslen) && mac_update(ctx, ".", 1) &&
		  mac_update(ctx, body, body_len) && EVP_MAC_final(ctx, mac, &maclen, SHA256_LEN) &&
		  maclen == SHA256_LEN;
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(hmac);
	return ok;
}

bool sign_standard_webhooks(const char *secret, const char *msg_id, long long timestamp,
			    const char *body, size_t body_len, char *out, size_t outlen)
{
	unsigned char *key, mac[SHA256_LEN];
	size_t keylen;

	if (outlen > 0)
		out[0] = '\0';
	if (outlen < SIGN_SIGNATURE_SIZE || !secret || !msg_id || (!body && body_len))
		return false;
	if (!b64_decode(secret_body(secret), &key, &keylen))
		return false;
	bool ok = hmac_sha256(key, keylen, msg_id, timestamp, body, body_len, mac);
	OPENSSL_cleanse(key, keylen);
	free(key);
	if (!ok)
		return false;
	memcpy(out, "v1,", 3);
	/* 32 bytes encode to 44 characters, and EVP_EncodeBlock adds the NUL. */
	EVP_EncodeBlock((unsigned char *)out + 3, mac, SHA256_LEN);
	OPENSSL_cleanse(mac, sizeof(mac));
	return true;
}
