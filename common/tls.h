/*
 * tls: the server side of TLS for a daemon's listener. A context is built
 * from PEM files: a certificate (a chain allowed, leaf first), its private
 * key, and optionally the CA whose certificates clients must present. Every
 * mistake is found when the files are loaded, not at the first handshake,
 * and reported in one line naming the file and the reason, so that a
 * daemon can refuse to start, or keep its running context on a reload.
 *
 * The context speaks TLS 1.2 and 1.3 with the system's OpenSSL defaults for
 * ciphers and groups, without renegotiation, and resumes sessions through
 * stateless tickets only (no server-side session cache that grows with the
 * number of clients). It is reference-counted by OpenSSL: every connection
 * made from it holds it, so a new context can replace it for new
 * connections while open ones keep the old until they close.
 */
#ifndef REGHOOK_TLS_H
#define REGHOOK_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * A server context from cert_file and key_file (PEM, no passphrase) and,
 * unless client_ca_file is NULL or empty, requiring a client certificate
 * issued by a CA of that file. NULL with err holding "FILE: reason".
 * The caller frees it with SSL_CTX_free().
 */
SSL_CTX *tls_server_new(const char *cert_file, const char *key_file, const char *client_ca_file,
			char *err, size_t errlen) __attribute__((warn_unused_result));

enum tls_validity {
	TLS_VALID,	   /* now within the certificate's validity period */
	TLS_EXPIRED,	   /* past its notAfter */
	TLS_NOT_YET_VALID, /* before its notBefore */
};

/*
 * Whether the context's own (leaf) certificate is valid now. what receives
 * a description for the log: subject, serial and validity period.
 */
enum tls_validity tls_server_validity(SSL_CTX *ctx, char *what, size_t len);

#endif
