/*
 * payload: the `dockerhub` webhook body, shaped as Docker Hub sends it so
 * that consumers written for Docker Hub (Portainer, Watchtower-style
 * redeployers, CI triggers) work unchanged. A push carries `push_data`; a
 * delete carries `delete_data` instead, so a consumer that redeploys on
 * `push_data` never misfires on a delete. The SPEC's "Payloads" section is
 * the contract; the key order here follows it.
 *
 * Generated with yajl_gen (common/jsongen), which escapes every string and
 * refuses invalid UTF-8, so no event field can break the JSON. Pure: no I/O.
 *
 * The struct payload_event is what every format sees of an event
 * (formats.h picks the format); the helpers below it are the pieces that
 * several formats share, so that repo_url, the time and the event object
 * are the same whichever format a webhook chose.
 */
#ifndef REGHOOK_PAYLOAD_H
#define REGHOOK_PAYLOAD_H

#include "buf.h"
#include "jsongen.h"

#include <stdbool.h>

/* One event as a webhook sees it; every string borrowed. */
struct payload_event {
	const char *action;	 /* "push" or "delete" */
	const char *namespace_;	 /* e.g. team-a */
	const char *name;	 /* below the namespace, e.g. app; "" when the repository is the
				    namespace itself */
	const char *repository;	 /* full path, e.g. team-a/app */
	const char *tag;	 /* NULL: none (a delete by digest) */
	const char *digest;	 /* NULL: none (a delete by tag whose digest is unknown) */
	const char *actor;	 /* NULL or "": unknown */
	long long occurred_at;	 /* epoch seconds: pushed_at / deleted_at */
	const char *description; /* the namespace's */
	bool is_private;
	long long namespace_created_at; /* epoch seconds: date_created */
	const char *callback_url;	/* full URL */
	const char *registry_url;	/* base of repo_url; may be "" */
	/*
	 * The event's request.host, as the registry sent it (unchecked; NULL
	 * when absent): the base of repo_url when registry_url is "".
	 */
	const char *registry_host;
	const char *event_id;	 /* the registry's event id; NULL for a test event */
	const char *delivery_id; /* the delivery's uuid */
	/*
	 * The event's time in RFC 3339 as the registry sent it (normalised by
	 * envelope_timestamp()); NULL or not RFC 3339: occurred_at in UTC.
	 */
	const char *timestamp;
	const char *media_type; /* the manifest's media type; NULL: unknown */
	long long size;		/* the manifest's size in bytes, if has_size */
	bool has_size;
	const char *source_name; /* the registry source's name; NULL for a test event */
};

/*
 * True if host is a host[:port] fit to put in a URL: a DNS name or IPv4
 * address (letters, digits, '-', '.'), or an IPv6 address in brackets, then
 * an optional port of 1 to 5 digits up to 65535; at most
 * PAYLOAD_HOST_MAX bytes. It comes from the network: anything else
 * (userinfo, a path, spaces, an empty string) is refused.
 */
#define PAYLOAD_HOST_MAX 255
bool payload_host_ok(const char *host) __attribute__((warn_unused_result));

/*
 * repo_url is registry_url + "/" + repository; without registry_url,
 * "https://<registry_host>/<repository>" ("http://" for a loopback host,
 * which Docker itself reaches over plain HTTP), and null when there is no
 * valid host either.
 *
 * Appends the payload for ev to out. False, with out unchanged, if the
 * action is neither push nor delete or a string is not valid UTF-8.
 */
bool payload_dockerhub(const struct payload_event *ev, struct buf *out)
	__attribute__((warn_unused_result));

/*
 * An event shaped as a registry notification's (id, timestamp, action,
 * target, actor) for a test push to a webhook of format registry, which has
 * no stored event to send as it came. Same return as payload_dockerhub().
 */
bool payload_registry_event(const struct payload_event *ev, struct buf *out)
	__attribute__((warn_unused_result));

/*
 * Request headers that a format adds (CloudEvents' ce-*), in the order
 * they are to be sent. Values are ready to send: printable ASCII.
 */
#define PAYLOAD_MAX_HEADERS 8
struct payload_header {
	const char *name; /* static */
	char *value;	  /* owned */
};
struct payload_headers {
	size_t n;
	struct payload_header h[PAYLOAD_MAX_HEADERS];
};
/* Takes ownership of value; a list already full is a broken invariant (fatal). */
void payload_headers_add(struct payload_headers *hs, const char *name, char *value);
void payload_headers_free(struct payload_headers *hs);
/* The value of the header called name (case-insensitive), or NULL. */
const char *payload_headers_get(const struct payload_headers *hs, const char *name);

/* Whether ev->action is "push" or "delete", the only actions that have payloads. */
bool payload_is_push(const struct payload_event *ev);
bool payload_action_ok(const struct payload_event *ev) __attribute__((warn_unused_result));

/*
 * The registry's base URL as payloads show it: registry_url without its
 * trailing slashes, else "https://<registry_host>" (see repo_url above).
 * Appends it to out; false, out unchanged, when neither is known.
 */
bool payload_registry_base(const struct payload_event *ev, struct buf *out)
	__attribute__((warn_unused_result));
/* Appends repo_url (see above); false, out unchanged, when there is none. */
bool payload_repo_url(const struct payload_event *ev, struct buf *out)
	__attribute__((warn_unused_result));

/* The event's time as RFC 3339 (see timestamp above), into out. */
#define PAYLOAD_TIME_MAX 40
void payload_time(const struct payload_event *ev, char out[PAYLOAD_TIME_MAX]);

/* Appends what the event is about: "<repository>:<tag>", else "<repository>@<digest>",
 * else "<repository>". */
void payload_subject(const struct payload_event *ev, struct buf *out);

/*
 * Generates the event object of the CloudEvents formats (SPEC, "Other
 * formats"): {"action", "namespace", "repository", "name", "tag",
 * "digest", "media_type", "size", "actor", "timestamp", "registry_url",
 * "event_id"}, null where unknown; registry_url is payload_registry_base().
 */
void payload_event_object(struct jsongen *j, const struct payload_event *ev);

#endif
