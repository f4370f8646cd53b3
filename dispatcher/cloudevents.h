/*
 * cloudevents: the `cloudevents` and `cloudevents-structured` webhook
 * formats, CloudEvents 1.0 over HTTP (the HTTP protocol binding 1.0.2 and
 * the JSON event format), for Knative, Argo Events, event buses and any
 * consumer built on a CloudEvents SDK.
 *
 * The attributes, the same in both modes:
 *
 *   specversion  1.0
 *   id           the registry's event id, so that a consumer deduplicates
 *                every attempt, retrigger and webhook of one event (a test
 *                event, which has none, uses its delivery id)
 *   source       <registry_url>/<repository> when registry_url is
 *                configured; else the registry source's name as a relative
 *                URI reference (percent-encoded; "reghook" for a test
 *                event). Never the registry's own host: it comes from the
 *                network and may differ between two deliveries of one event
 *   type         io.reghook.image.pushed or io.reghook.image.deleted
 *   subject      <repository>:<tag>, or <repository>@<digest>
 *   time         the event's time, RFC 3339
 *   actor        (extension) who pushed or deleted; absent when unknown
 *
 * and the data, the event object of payload_event_object(). Binary mode
 * sends the attributes as ce-* headers, each value percent-encoded as the
 * binding requires, and the data as an application/json body; structured
 * mode sends one application/cloudevents+json object with the attributes,
 * datacontenttype and data. Pure: no I/O.
 */
#ifndef REGHOOK_CLOUDEVENTS_H
#define REGHOOK_CLOUDEVENTS_H

#include "buf.h"
#include "payload.h"

#include <stdbool.h>

#define CLOUDEVENTS_TYPE_PUSHED "io.reghook.image.pushed"
#define CLOUDEVENTS_TYPE_DELETED "io.reghook.image.deleted"
#define CLOUDEVENTS_STRUCTURED_TYPE "application/cloudevents+json"

/*
 * Binary mode: appends the ce-* headers to headers and the data to body.
 * False, with both unchanged, if the action is neither push nor delete, a
 * string is not valid UTF-8, or there is no id.
 */
bool cloudevents_binary(const struct payload_event *ev, struct payload_headers *headers,
			struct buf *body) __attribute__((warn_unused_result));

/* Structured mode: appends the whole event to body; false as above, body unchanged. */
bool cloudevents_structured(const struct payload_event *ev, struct buf *body)
	__attribute__((warn_unused_result));

/*
 * Appends s as the binding encodes a header value: space, '"', '%' and
 * every byte outside printable ASCII (0x21-0x7E) as %XY, upper-case hex;
 * the bytes of a UTF-8 character are encoded one by one. s must be valid
 * UTF-8.
 */
void cloudevents_header_encode(const char *s, struct buf *out);

#endif
