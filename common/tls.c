/*
 * tls: see tls.h.
 *
 * OpenSSL reports a file that does not load as a queue of errors, the root
 * cause first and wrappers after it ("PEM lib", "system lib"). The reason
 * given is the root cause, in words for the common mistakes: a file that
 * cannot be read (its errno, checked before OpenSSL opens it), a file
 * that holds no PEM block of the kind expected, a key with a passphrase,
 * a key that belongs to another certificate.
 */
#include "tls.h"

#include "conf.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The daemon has no terminal to ask for a passphrase: a key that needs one is refused. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *asked)
{
	if (asked)
		*(bool *)asked = true;
	return -1;
}

/*
 * Reads path (at most PEM_MAX bytes are looked at) and checks that it holds
 * a PEM block whose BEGIN line ends with marker; false with err saying why.
 */
#define PEM_MAX (4 * 1024 * 1024)
static bool pem_file(const char *path, const char *marker, const char *what, char *err,
		     size_t errlen)
{
	/* A regular file only: OpenSSL reads it again after this. */
	char why[256];
	FILE *f = conf_open_regular(path, "not a regular file", why, sizeof(why));
	if (!f) {
		snprintf(err, errlen, "%s: cannot read it: %s", path, why);
		return false;
	}
	char *text = malloc(PEM_MAX + 1);
	size_t n = text ? fread(text, 1, PEM_MAX, f) : 0;
	bool failed = !text || ferror(f);
	int saved = errno;
	fclose(f);
	if (failed) {
		free(text);
		snprintf(err, errlen, "%s: cannot read it: %s", path, strerror(saved));
		return false;
	}
	text[n] = '\0';
	bool found = false;
	for (const char *p = text; !found && (p = strstr(p, "-----BEGIN ")) != NULL; p++) {
		const char *eol = p + strcspn(p, "\r\n");
		size_t ml = strlen(marker);
		found = (size_t)(eol - p) >= ml && memcmp(eol - ml, marker, ml) == 0;
	}
	free(text);
	if (!found)
		snprintf(err, errlen, "%s: no PEM %s in it (no \"-----BEGIN ...%s\" line)", path,
			 what, marker);
	return found;
}

/*
 * Empties OpenSSL's error queue; returns its first error (the root cause),
 * and whether the error lib/reason was among them.
 */
static unsigned long drain_errors(int lib, int reason, bool *found)
{
	unsigned long e, first = 0;
	*found = false;
	while ((e = ERR_get_error()) != 0) {
		if (!first)
			first = e;
		if (ERR_GET_LIB(e) == lib && ERR_GET_REASON(e) == reason)
			*found = true;
	}
	return first;
}

/* Why path did not load as a `what`, from OpenSSL's error queue (emptied). */
static void load_error(const char *path, const char *what, char *err, size_t errlen)
{
	bool unused;
	unsigned long first = drain_errors(0, 0, &unused);
	const char *reason = first ? ERR_reason_error_string(first) : NULL;
	snprintf(err, errlen, "%s: not a usable %s: %s", path, what,
		 reason ? reason : "unknown error");
}

static bool load_client_ca(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
	if (!pem_file(path, "CERTIFICATE-----", "CA certificate", err, errlen))
		return false;
	STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(path);
	if (!names || sk_X509_NAME_num(names) == 0) {
		sk_X509_NAME_pop_free(names, X509_NAME_free);
		load_error(path, "CA certificate", err, errlen);
		return false;
	}
	if (!SSL_CTX_load_verify_locations(ctx, path, NULL)) {
		sk_X509_NAME_pop_free(names, X509_NAME_free);
		load_error(path, "CA certificate", err, errlen);
		return false;
	}
	/* Named in the handshake, so that a client picks the right certificate. */
	SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	return true;
}

/* The private key, after the certificate it must match; false with err. */
static bool load_key(SSL_CTX *ctx, const char *key_file, const char *cert_file, const bool *asked,
		     char *err, size_t errlen)
{
	if (!pem_file(key_file, "PRIVATE KEY-----", "private key", err, errlen))
		return false;
	bool mismatch = false;
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) == 1) {
		mismatch = SSL_CTX_check_private_key(ctx) != 1;
		ERR_clear_error();
	} else {
		unsigned long first =
			drain_errors(ERR_LIB_X509, X509_R_KEY_VALUES_MISMATCH, &mismatch);
		const char *reason = first ? ERR_reason_error_string(first) : NULL;
		if (*asked) {
			snprintf(err, errlen,
				 "%s: the private key is encrypted; reghook needs it without a "
				 "passphrase (and readable only by its user)",
				 key_file);
			return false;
		}
		if (!mismatch) {
			snprintf(err, errlen, "%s: not a usable private key: %s", key_file,
				 reason ? reason : "unknown error");
			return false;
		}
	}
	if (mismatch)
		snprintf(err, errlen, "%s: the private key does not match the certificate in %s",
			 key_file, cert_file);
	return !mismatch;
}

SSL_CTX *tls_server_new(const char *cert_file, const char *key_file, const char *client_ca_file,
			char *err, size_t errlen)
{
	bool asked = false;
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		load_error(cert_file, "certificate (no TLS context)", err, errlen);
		return NULL;
	}
	SSL_CTX_set_default_passwd_cb(ctx, refuse_passphrase);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, &asked);
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
		load_error(cert_file, "certificate (TLS 1.2 not available)", err, errlen);
		goto failed;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	/* Buffers of an idle kept-alive connection are given back. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	static const unsigned char sid_ctx[] = "reghook";
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);

	if (!pem_file(cert_file, "CERTIFICATE-----", "certificate", err, errlen))
		goto failed;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		load_error(cert_file, "certificate", err, errlen);
		goto failed;
	}
	if (!pem_file(key_file, "PRIVATE KEY-----", "private key", err, errlen))
		goto failed;
	if (!load_key(ctx, key_file, cert_file, &asked, err, errlen))
		goto failed;
	if (client_ca_file && *client_ca_file && !load_client_ca(ctx, client_ca_file, err, errlen))
		goto failed;
	SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
	return ctx;
failed:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

/* An ASN1 time as "2027-01-31 12:00:00 UTC". */
static void format_time(const ASN1_TIME *t, char *out, size_t len)
{
	struct tm tm;
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1 ||
	    strftime(out, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(out, len, "?");
}

enum tls_validity tls_server_validity(SSL_CTX *ctx, char *what, size_t len)
{
	X509 *leaf = SSL_CTX_get0_certificate(ctx);
	char subject[256] = "?", serial[128] = "?", from[40], until[40];
	if (!leaf) {
		snprintf(what, len, "no certificate");
		return TLS_EXPIRED;
	}
	X509_NAME_oneline(X509_get_subject_name(leaf), subject, sizeof(subject));
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	if (hex)
		snprintf(serial, sizeof(serial), "%s", hex);
	OPENSSL_free(hex);
	BN_free(bn);
	const ASN1_TIME *not_before = X509_get0_notBefore(leaf);
	const ASN1_TIME *not_after = X509_get0_notAfter(leaf);
	format_time(not_before, from, sizeof(from));
	format_time(not_after, until, sizeof(until));
	snprintf(what, len, "subject %s, serial 0x%s, valid from %s until %s", subject, serial,
		 from, until);
	if (X509_cmp_current_time(not_after) < 0)
		return TLS_EXPIRED;
	if (X509_cmp_current_time(not_before) > 0)
		return TLS_NOT_YET_VALID;
	return TLS_VALID;
}
