/*
 * request: one HTTP attempt at a delivery. Builds the libcurl handle from
 * a claimed delivery (URL template, method, headers, basic auth, signature,
 * payload), guards the address actually connected to, captures the answer
 * within limits, classifies the outcome, and writes the attempt as JSON for
 * reghook.complete_deliveries(). Knows nothing of the queue.
 */
#ifndef REGHOOK_REQUEST_H
#define REGHOOK_REQUEST_H

#include "buf.h"
#include "config.h"

#include <curl/curl.h>
#include <stdbool.h>

/* In a refusal that allow_private_targets would lift (the hints look for it). */
#define REQUEST_PRIVATE_OFF "allow_private_targets is off"

/* A claimed delivery; every string borrowed for the duration of request_new(). */
struct request_spec {
	const char *delivery_id;
	int attempt;
	const char *action;
	bool is_test;
	const char *callback_token;
	long long webhook_id;
	const char *url_template;
	const char *method;
	const char *content_type;
	const char *username; /* NULL: no basic auth */
	const char *password;
	const char *secret; /* NULL: unsigned */
	const char *format;
	long long timeout_ms;	  /* 0: configured default */
	const char *headers_json; /* [[name, value], ...] */
	const char *repository, *name, *tag, *digest, *actor;
	long long occurred_at;
	const char *raw; /* the event as received; NULL for a test push */
	const char *namespace_;
	const char *description;
	bool is_private;
	long long namespace_created_at;
	/* For the formats beyond dockerhub (formats.h); NULL: unknown, or a test push. */
	const char *event_uuid; /* the registry's event id */
	const char *event_time; /* the registry's timestamp, as it sent it */
	const char *media_type; /* the manifest's */
	long long size;		/* the manifest's, if has_size */
	bool has_size;
	const char *source_name; /* the registry source's name */
	const char *template_;	 /* for format template */
};

enum request_outcome {
	REQUEST_SUCCEEDED, /* 2xx */
	REQUEST_FAILED,	   /* transport error, timeout, non-2xx: retry if attempts remain */
	REQUEST_GONE,	   /* 410: the webhook is disabled */
	REQUEST_INVALID,   /* could not even be built (bad template or secret): no retry */
};

struct request;

/* Builds the attempt. Never NULL: a spec that cannot be sent yields a request already
 * finished as REQUEST_INVALID (request_easy() is then NULL). */
struct request *request_new(const struct request_spec *spec, const struct config *cfg);

/* Whether a header name frames a request or is one reghook sets: no webhook
 * may have it (case-insensitive). */
bool request_reserved_header(const char *name);
void request_free(struct request *r);
/* The handle to run, or NULL if the request is already finished. */
CURL *request_easy(struct request *r);
/* Records the transfer's result. */
void request_finish(struct request *r, CURLcode result);
enum request_outcome request_outcome(const struct request *r);
/* The Retry-After header of the answer, or NULL. */
const char *request_retry_after(const struct request *r);
/* The answer's status, 0 if none. */
long request_status(const struct request *r);
/* The failure class (dns, connect, tls, timeout, blocked, http, other), NULL on success. */
const char *request_error_class(const struct request *r);
/* How long the transfer took, in milliseconds. */
long request_duration_ms(const struct request *r);
/* The delivery's id. */
const char *request_delivery_id(const struct request *r);
/* Short text of the failure, for logs. */
const char *request_error(const struct request *r);
/* Appends the attempt record for complete_deliveries(). */
void request_record_json(const struct request *r, struct buf *out, const char *outcome,
			 long long delay_ms);

#endif
