/*
 * sign: Standard Webhooks signatures (https://www.standardwebhooks.com/).
 *
 * A webhook with a secret sends `webhook-id`, `webhook-timestamp` and
 * `webhook-signature` headers; the signature is `v1,` followed by the
 * base64 of HMAC-SHA256 over "<id>.<timestamp>.<body>", keyed with the
 * base64-decoded secret. Secrets are written `whsec_<base64>`; the bare
 * base64 is accepted too. Pure functions over bytes (OpenSSL for the HMAC
 * and base64), so the published example is a unit test.
 */
#ifndef REGHOOK_SIGN_H
#define REGHOOK_SIGN_H

#include <stdbool.h>
#include <stddef.h>

/* Room for one signature: "v1," + 44 base64 characters + NUL. */
#define SIGN_SIGNATURE_SIZE 48

/*
 * Writes the `webhook-signature` value for body into out (NUL-terminated).
 * False, with out empty, if the secret is not valid base64 or decodes to
 * no key, or if outlen is below SIGN_SIGNATURE_SIZE.
 */
bool sign_standard_webhooks(const char *secret, const char *msg_id, long long timestamp,
			    const char *body, size_t body_len, char *out, size_t outlen)
	__attribute__((warn_unused_result));

/* True if secret ("whsec_" optional) decodes to a non-empty key. */
bool sign_secret_valid(const char *secret) __attribute__((warn_unused_result));

#endif
