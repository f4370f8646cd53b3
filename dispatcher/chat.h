/*
 * chat: the `slack`, `discord` and `teams` webhook formats: one short,
 * readable message per event for a chat channel's incoming webhook.
 *
 * Each message names the action, what it acted on (`repository:tag`, or
 * `repository@digest` for a delete by digest), the actor when known, the
 * digest, and links to repo_url when it is known. Nothing else of the
 * webhook goes in: never callback_url (it holds the delivery's token),
 * never a header, password or signing key.
 *
 * Text from the event is cut to a few hundred characters per field (on a
 * UTF-8 character boundary, ending with "…"), then escaped for the
 * service's markup (Slack's &, < and >; Discord's markdown characters), so
 * that an actor's name cannot format, link or mention anything, and each
 * text is then held within the service's documented limit:
 *
 *   Slack    {"text", "blocks"}: a section (text at most 3,000 characters)
 *            and a context block; text at most 3,000 as well
 *   Discord  {"content", "embeds", "allowed_mentions"}: content at most
 *            2,000 characters, one embed (title 256, field values 1,024,
 *            all embed text well under 6,000), mentions disabled
 *   Teams    {"type": "message", "attachments": [one Adaptive Card 1.4]},
 *            as Teams workflows ("Post to a channel when a webhook request
 *            is received") accept
 *
 * Characters are Unicode code points, as the services count them. Pure:
 * no I/O.
 */
#ifndef REGHOOK_CHAT_H
#define REGHOOK_CHAT_H

#include "buf.h"
#include "payload.h"

#include <stdbool.h>
#include <stddef.h>

#define CHAT_DISCORD_CONTENT_MAX 2000
#define CHAT_DISCORD_TITLE_MAX 256
#define CHAT_DISCORD_FIELD_MAX 1024
#define CHAT_SLACK_TEXT_MAX 3000

/*
 * Each appends the message for ev to out. False, out unchanged, if the
 * action is neither push nor delete or a string is not valid UTF-8.
 */
bool chat_slack(const struct payload_event *ev, struct buf *out)
	__attribute__((warn_unused_result));
bool chat_discord(const struct payload_event *ev, struct buf *out)
	__attribute__((warn_unused_result));
bool chat_teams(const struct payload_event *ev, struct buf *out)
	__attribute__((warn_unused_result));

/* The number of code points of the valid UTF-8 text s[0..len). */
size_t chat_length(const char *s, size_t len);

/*
 * Appends the valid UTF-8 text s[0..len) if it has at most max code points;
 * else its first max - 1 code points and "…" (U+2026), max in all. Never
 * splits a character. max is at least 1.
 */
void chat_truncate(const char *s, size_t len, size_t max, struct buf *out);

#endif
