/*
 * template: the `template` webhook format, a JSON document of the user's
 * own whose strings may hold {{variable}}s, for receivers that none of the
 * built-in formats fits (Mattermost, Google Chat, an in-house service).
 *
 * The rules, which README's "Templates" section states for users:
 *
 * - The template is JSON (strict: no comments, no duplicate keys, at most
 *   TEMPLATE_MAX_DEPTH levels) of at most TEMPLATE_MAX_BYTES bytes.
 * - In a string value, "{{" always opens a variable: "{{" name "}}", with
 *   spaces allowed around the name. A string that is exactly one variable
 *   ("{{size}}") becomes the variable's JSON value: a number, a string or
 *   null. Inside a longer string the variable is replaced by its text,
 *   JSON-escaped ("" for null). A literal "{{" is written with a JSON
 *   escape, "{\u007b", which the JSON means as "{{" but which is not "{{"
 *   in the template's text.
 * - Object keys are copied as they are; a "{{" in a key is refused, since
 *   expanding it could make two keys equal.
 * - Everything else, whitespace included, is copied byte for byte.
 *
 * Because the template is JSON and every substitution is a JSON value or
 * escaped string content, what renders is always JSON (the fuzz harness
 * tests/fuzz/fuzz_template.c holds the code to that).
 *
 * The variables (template_var_names): namespace, name, repository, tag,
 * digest, action (as in the URL template), actor, timestamp (RFC 3339),
 * pushed_at (epoch seconds, the time of a delete too), media_type, size,
 * event_id, delivery_id, registry_url and repo_url (see payload.h).
 * callback_url is not one: it holds the delivery's token.
 *
 * Pure: no I/O.
 */
#ifndef REGHOOK_TEMPLATE_H
#define REGHOOK_TEMPLATE_H

#include "buf.h"
#include "payload.h"

#include <stdbool.h>
#include <stddef.h>

#define TEMPLATE_MAX_BYTES 16384
#define TEMPLATE_MAX_DEPTH 32

/* The variables' names, NULL-terminated. */
extern const char *const template_var_names[];

/*
 * Checks text[0..len) as `webhook add` and `set` do. False with err set to
 * one line naming the place: "line 3, column 14: unknown variable {{tagg}}";
 * a template over the size limit is refused before it is read.
 */
bool template_check(const char *text, size_t len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Appends the template rendered for ev to out. False, out unchanged, if
 * the template does not pass template_check(), or the action is neither
 * push nor delete.
 */
bool template_render(const char *text, size_t len, const struct payload_event *ev, struct buf *out)
	__attribute__((warn_unused_result));

#endif
