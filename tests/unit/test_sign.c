/*
 * Unit tests for common/sign.c: the Standard Webhooks published example,
 * secrets with and without the whsec_ prefix and padding, and the secrets
 * that must be refused. Expected values other than the published example
 * were computed independently with Python's hmac and base64 modules.
 */
#include "sign.h"
#include "unit.h"

#include <string.h>

#define EXAMPLE_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define EXAMPLE_TS 1614265330LL
#define EXAMPLE_BODY "{\"test\": 2432232314}"
#define EXAMPLE_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

UNIT_TEST(published_example)
{
	char sig[SIGN_SIGNATURE_SIZE];
	bool ok = sign_standard_webhooks("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", EXAMPLE_ID,
					 EXAMPLE_TS, EXAMPLE_BODY, strlen(EXAMPLE_BODY), sig,
					 sizeof(sig));
	UNIT_CHECK(ok, "signing the published example failed");
	UNIT_CHECK_STR(sig, EXAMPLE_SIG);
}

UNIT_TEST(secret_without_prefix)
{
	char sig[SIGN_SIGNATURE_SIZE];
	bool ok = sign_standard_webhooks("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", EXAMPLE_ID, EXAMPLE_TS,
					 EXAMPLE_BODY, strlen(EXAMPLE_BODY), sig, sizeof(sig));
	UNIT_CHECK(ok, "a bare base64 secret was refused");
	UNIT_CHECK_STR(sig, EXAMPLE_SIG);
}

UNIT_TEST(padding_and_body_bytes)
{
	char sig[SIGN_SIGNATURE_SIZE];
	/* "abcd": four key bytes, encoded with two '=' of padding. */
	UNIT_CHECK(sign_standard_webhooks("whsec_YWJjZA==", "id", 0, "", 0, sig, sizeof(sig)),
		   "padded secret");
	UNIT_CHECK_STR(sig, "v1,V3avDoQyWJWK2GGZJUdygdWxBRlw34ALGzrmT0OZSXk=");
	/* The same key without its padding signs the same. */
	UNIT_CHECK(sign_standard_webhooks("YWJjZA", "id", 0, NULL, 0, sig, sizeof(sig)),
		   "unpadded secret");
	UNIT_CHECK_STR(sig, "v1,V3avDoQyWJWK2GGZJUdygdWxBRlw34ALGzrmT0OZSXk=");
	/* The body is bytes, not a C string; a negative timestamp keeps its sign. */
	UNIT_CHECK(sign_standard_webhooks("YWJjZA==", "d1", -5, "a\0b", 3, sig, sizeof(sig)),
		   "NUL in body");
	UNIT_CHECK_STR(sig, "v1,oHwWptVVqlbhfbSxxhJ7sssd1KqJygiXYXE8vddqyK4=");
}

UNIT_TEST(changes_change_the_signature)
{
	char a[SIGN_SIGNATURE_SIZE], b[SIGN_SIGNATURE_SIZE];
	const char *body = EXAMPLE_BODY, *secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
	size_t len = strlen(body);
	UNIT_CHECK(sign_standard_webhooks(secret, EXAMPLE_ID, EXAMPLE_TS, body, len, a, sizeof(a)),
		   "sign");
	UNIT_CHECK(
		sign_standard_webhooks(secret, EXAMPLE_ID, EXAMPLE_TS + 1, body, len, b, sizeof(b)),
		"sign");
	UNIT_CHECK(strcmp(a, b) != 0, "timestamp not signed");
	UNIT_CHECK(sign_standard_webhooks(secret, "msg_other", EXAMPLE_TS, body, len, b, sizeof(b)),
		   "sign");
	UNIT_CHECK(strcmp(a, b) != 0, "message id not signed");
	UNIT_CHECK(
		sign_standard_webhooks(secret, EXAMPLE_ID, EXAMPLE_TS, body, len - 1, b, sizeof(b)),
		"sign");
	UNIT_CHECK(strcmp(a, b) != 0, "body not signed");
}

UNIT_TEST(bad_secrets)
{
	static const char *const bad[] = {
		"",		    /* empty */
		"whsec_",	    /* prefix only: no key */
		"whsec_=",	    /* padding only */
		"whsec_YWJjZA=",    /* wrong padding */
		"whsec_YWJjZA===",  /* too much padding */
		"whsec_Y",	    /* one character cannot hold a byte */
		"whsec_YWJj ZA==",  /* whitespace */
		" YWJjZA==",	    /* leading whitespace */
		"whsec_YWJjZA==\n", /* trailing newline */
		"whsec_YW=jZA==",   /* padding in the middle */
		"whsec_YWJj-_",	    /* URL-safe alphabet */
		"whsec_not base64!",
		"WHSEC_YWJjZA==", /* the prefix is case-sensitive, and '_' is not base64 */
	};
	char sig[SIGN_SIGNATURE_SIZE];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		UNIT_CHECK(!sign_secret_valid(bad[i]), "secret \"%s\" accepted", bad[i]);
		strcpy(sig, "junk");
		UNIT_CHECK(!sign_standard_webhooks(bad[i], "id", 1, "x", 1, sig, sizeof(sig)),
			   "signed with secret \"%s\"", bad[i]);
		UNIT_CHECK(sig[0] == '\0', "output not emptied for \"%s\"", bad[i]);
	}
	UNIT_CHECK(!sign_secret_valid(NULL), "NULL secret accepted");
}

UNIT_TEST(good_secrets)
{
	static const char *const good[] = {
		"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"whsec_YWJjZA==",
		"whsec_YWJjZA",
		"whsec_YQ==", /* one byte */
		"whsec_+/+/",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		UNIT_CHECK(sign_secret_valid(good[i]), "secret \"%s\" refused", good[i]);
}

UNIT_TEST(output_too_small)
{
	char sig[SIGN_SIGNATURE_SIZE];
	UNIT_CHECK(!sign_standard_webhooks("whsec_YWJjZA==", "id", 0, "", 0, sig,
					   SIGN_SIGNATURE_SIZE - 1),
		   "signed into a buffer one byte short");
	UNIT_CHECK(!sign_standard_webhooks("whsec_YWJjZA==", NULL, 0, "", 0, sig, sizeof(sig)),
		   "signed without a message id");
}

int main(void)
{
	UNIT_RUN(published_example);
	UNIT_RUN(secret_without_prefix);
	UNIT_RUN(padding_and_body_bytes);
	UNIT_RUN(changes_change_the_signature);
	UNIT_RUN(bad_secrets);
	UNIT_RUN(good_secrets);
	UNIT_RUN(output_too_small);
	return UNIT_DONE();
}
