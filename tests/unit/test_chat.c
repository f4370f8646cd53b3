/*
 * Unit tests for dispatcher/chat.c: the Slack, Discord and Teams messages
 * for the registry's real push and delete events, checked against each
 * service's documented shape; the escaping that keeps an actor's name from
 * formatting, linking or mentioning; the limits, with long and many-byte
 * text, and cutting at exactly 2,000 characters; fields that are unknown;
 * and that the callback URL's token never shows.
 */
#include "chat.h"
#include "json_check.h"
#include "sample_event.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

#define DIGEST "sha256:33d33c66ce742601e7b4219cce65aa7ecbd527d207a1e962c0f5bcb738284f43"

typedef bool (*chat_fn)(const struct payload_event *, struct buf *);

static const struct {
	const char *name;
	chat_fn fn;
} formats[] = {{"slack", chat_slack}, {"discord", chat_discord}, {"teams", chat_teams}};

/* Renders ev with fn and parses it back strictly; NULL (failure recorded) if either fails. */
static yajl_val render(chat_fn fn, const struct payload_event *ev)
{
	struct buf out = BUF_INIT;
	yajl_val t = NULL;
	if (fn(ev, &out)) {
		UNIT_CHECK(!strstr(out.data, "SECRET-TOKEN") && !strstr(out.data, "callback"),
			   "the callback URL shows: %s", out.data);
		t = JSON_PARSE(out.data, out.len);
	} else {
		UNIT_CHECK(false, "refused");
	}
	buf_free(&out);
	return t;
}

static size_t length(const char *s)
{
	return s ? chat_length(s, strlen(s)) : 0;
}

UNIT_TEST(slack_push_and_delete)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	s.ev.registry_url = "https://registry.example.com";
	yajl_val t = render(chat_slack, &s.ev);
	CHECK_JKEYS(t, "", "text", "blocks");
	CHECK_JSTR(t, "text", "Pushed team-a/app:1.0 by alice");
	CHECK_JSTR(t, "blocks.0.type", "section");
	CHECK_JSTR(t, "blocks.0.text.type", "mrkdwn");
	CHECK_JSTR(t, "blocks.0.text.text", "*Pushed* `team-a/app:1.0` by alice");
	CHECK_JSTR(t, "blocks.1.type", "context");
	CHECK_JSTR(t, "blocks.1.elements.0.type", "mrkdwn");
	CHECK_JSTR(t, "blocks.1.elements.0.text",
		   "digest `" DIGEST
		   "` \xc2\xb7 <https://registry.example.com/team-a/app|team-a/app>");
	CHECK_JABSENT(t, "blocks.2");
	yajl_tree_free(t);
	sample_free(&s);

	UNIT_CHECK(sample_load("10-delete-digest.json", &s), "sample not loaded");
	t = render(chat_slack, &s.ev);
	CHECK_JSTR(t, "text", "Deleted team-a/app@" DIGEST " by alice");
	CHECK_JSTR(t, "blocks.0.text.text", "*Deleted* `team-a/app@" DIGEST "` by alice");
	/* No registry_url: the link goes to the host the registry was addressed as. */
	CHECK_JSTR(t, "blocks.1.elements.0.text", "<http://127.0.0.1:5000/team-a/app|team-a/app>");
	yajl_tree_free(t);
	sample_free(&s);
}

UNIT_TEST(discord_push_and_delete)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	yajl_val t = render(chat_discord, &s.ev);
	CHECK_JKEYS(t, "", "content", "embeds", "allowed_mentions");
	CHECK_JSTR(t, "content", "**Pushed** `team-a/app:1.0` by alice");
	CHECK_JSTR(t, "embeds.0.title", "Pushed team-a/app:1.0");
	CHECK_JSTR(t, "embeds.0.url", "http://127.0.0.1:5000/team-a/app");
	CHECK_JINT(t, "embeds.0.color", 0x2da44e);
	CHECK_JSTR(t, "embeds.0.fields.0.name", "Digest");
	CHECK_JSTR(t, "embeds.0.fields.0.value", "`" DIGEST "`");
	CHECK_JSTR(t, "embeds.0.fields.1.name", "Pushed by");
	CHECK_JSTR(t, "embeds.0.fields.1.value", "alice");
	CHECK_JSTR(t, "embeds.0.timestamp", "2026-11-22T18:20:32.255357Z");
	CHECK_JABSENT(t, "embeds.1");
	yajl_val parse = jpath(t, "allowed_mentions.parse");
	UNIT_CHECK(parse && YAJL_IS_ARRAY(parse) && parse->u.array.len == 0,
		   "allowed_mentions.parse is not []");
	yajl_tree_free(t);
	sample_free(&s);

	UNIT_CHECK(sample_load("11-delete-tag.json", &s), "sample not loaded");
	s.ev.digest = NULL; /* a tag delete whose digest was not found */
	s.ev.actor = NULL;
	t = render(chat_discord, &s.ev);
	CHECK_JSTR(t, "content", "**Deleted** `team-a/app:latest`");
	CHECK_JINT(t, "embeds.0.color", 0xcf222e);
	yajl_val fields = jpath(t, "embeds.0.fields");
	UNIT_CHECK(fields && YAJL_IS_ARRAY(fields) && fields->u.array.len == 0,
		   "fields for unknown digest and actor");
	yajl_tree_free(t);
	sample_free(&s);
}

UNIT_TEST(teams_adaptive_card)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	s.ev.registry_url = "https://registry.example.com/";
	yajl_val t = render(chat_teams, &s.ev);
	CHECK_JKEYS(t, "", "type", "attachments");
	CHECK_JSTR(t, "type", "message");
	CHECK_JABSENT(t, "attachments.1");
	CHECK_JSTR(t, "attachments.0.contentType", "application/vnd.microsoft.card.adaptive");
	CHECK_JNULL(t, "attachments.0.contentUrl");
	CHECK_JSTR(t, "attachments.0.content.type", "AdaptiveCard");
	CHECK_JSTR(t, "attachments.0.content.version", "1.4");
	CHECK_JSTR(t, "attachments.0.content.body.0.type", "TextBlock");
	CHECK_JSTR(t, "attachments.0.content.body.0.text", "Pushed team-a/app:1.0");
	CHECK_JSTR(t, "attachments.0.content.body.1.type", "FactSet");
	static const char *const facts[][2] = {{"Repository", "team-a/app"},
					       {"Tag", "1.0"},
					       {"Digest", DIGEST},
					       {"Pushed by", "alice"},
					       {"Time", "2026-11-22T18:20:32.255357Z"}};
	for (size_t i = 0; i < 5; i++) {
		char path[96];
		snprintf(path, sizeof(path), "attachments.0.content.body.1.facts.%zu.title", i);
		CHECK_JSTR(t, path, facts[i][0]);
		snprintf(path, sizeof(path), "attachments.0.content.body.1.facts.%zu.value", i);
		CHECK_JSTR(t, path, facts[i][1]);
	}
	CHECK_JSTR(t, "attachments.0.content.actions.0.type", "Action.OpenUrl");
	CHECK_JSTR(t, "attachments.0.content.actions.0.url",
		   "https://registry.example.com/team-a/app");
	yajl_tree_free(t);

	/* Nothing known of where the registry is: no link at all, in any format. */
	s.ev.registry_url = "";
	s.ev.registry_host = NULL;
	t = render(chat_teams, &s.ev);
	CHECK_JABSENT(t, "attachments.0.content.actions");
	yajl_tree_free(t);
	t = render(chat_discord, &s.ev);
	CHECK_JABSENT(t, "embeds.0.url");
	yajl_tree_free(t);
	t = render(chat_slack, &s.ev);
	CHECK_JSTR(t, "blocks.1.elements.0.text", "digest `" DIGEST "`");
	yajl_tree_free(t);
	sample_free(&s);
}

UNIT_TEST(markup_in_names_is_escaped)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	s.ev.actor = "<!channel> & @everyone *b* _i_ `x`";
	s.ev.tag = "v1_`rc`";
	s.ev.registry_url = "https://r.example.com/a|b>";
	yajl_val t = render(chat_slack, &s.ev);
	CHECK_JSTR(t, "text",
		   "Pushed team-a/app:v1_`rc` by &lt;!channel&gt; &amp; @everyone *b* _i_ `x`");
	/* A backtick in the subject: no code span, which could not hold it. */
	CHECK_JSTR(t, "blocks.0.text.text",
		   "*Pushed* team-a/app:v1_`rc` by &lt;!channel&gt; &amp; @everyone *b* _i_ `x`");
	CHECK_JSTR(t, "blocks.1.elements.0.text",
		   "digest `" DIGEST "` \xc2\xb7 "
		   "<https://r.example.com/a%7Cb&gt;/team-a/app|team-a/app>");
	yajl_tree_free(t);
	t = render(chat_discord, &s.ev);
	CHECK_JSTR(t, "content",
		   "**Pushed** team-a/app:v1\\_\\`rc\\` by \\<!channel\\> & @everyone \\*b\\* "
		   "\\_i\\_ \\`x\\`");
	CHECK_JSTR(t, "embeds.0.fields.1.value",
		   "\\<!channel\\> & @everyone \\*b\\* \\_i\\_ \\`x\\`");
	yajl_tree_free(t);
	sample_free(&s);
}

/* What would change how a pusher's name reads, unseen, shows as U+FFFD in every format. */
UNIT_TEST(unseen_characters_in_names_show)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	/* A right-to-left override, a zero-width space, a line break, a C1 control. */
	s.ev.actor = "ali\xe2\x80\xae"
		     "cod.exe\xe2\x80\x8b\nx\xc2\x85y \xc3\xa9\xd8\x9c!";
	static const char *const want = "ali\xef\xbf\xbd"
					"cod.exe\xef\xbf\xbd\xef\xbf\xbdx\xef\xbf\xbdy \xc3\xa9"
					"\xef\xbf\xbd!";
	for (size_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++) {
		struct buf out = BUF_INIT;
		UNIT_CHECK(formats[f].fn(&s.ev, &out), "%s refused", formats[f].name);
		yajl_val t = JSON_PARSE(out.data, out.len);
		const char *shown =
			t ? jstr(t, f == 0   ? "text"
				    : f == 1 ? "embeds.0.fields.1.value"
					     : "attachments.0.content.body.1.facts.3.value")
			  : NULL;
		UNIT_CHECK(shown && strstr(shown, want), "%s: %s", formats[f].name, out.data);
		UNIT_CHECK(!strstr(out.data, "\xe2\x80\xae") && !strstr(out.data, "\\n"), "%s: %s",
			   formats[f].name, out.data);
		yajl_tree_free(t);
		buf_free(&out);
	}
	sample_free(&s);
}

/* Teams has no documented escape for its Markdown: a name is no link. */
UNIT_TEST(teams_names_make_no_links)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	s.ev.actor = "[click](https://x.example) ]( ]";
	yajl_val t = render(chat_teams, &s.ev);
	CHECK_JSTR(t, "attachments.0.content.body.1.facts.3.value",
		   "[click] (https://x.example) ] ( ]");
	yajl_tree_free(t);
	sample_free(&s);
}

UNIT_TEST(truncation_at_the_boundary)
{
	static const char *const chars[] = {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
	for (size_t c = 0; c < 4; c++) {
		size_t w = strlen(chars[c]);
		for (size_t n = 1998; n <= 2002; n++) {
			struct buf in = BUF_INIT, out = BUF_INIT;
			for (size_t i = 0; i < n; i++)
				buf_puts(&in, chars[c]);
			UNIT_CHECK(chat_length(in.data, in.len) == n, "length of %zu", n);
			chat_truncate(in.data, in.len, CHAT_DISCORD_CONTENT_MAX, &out);
			size_t got = chat_length(out.data, out.len);
			if (n <= 2000) {
				UNIT_CHECK(out.len == in.len &&
						   memcmp(out.data, in.data, in.len) == 0,
					   "%zu x %zu-byte characters were cut", n, w);
			} else {
				UNIT_CHECK(got == 2000, "%zu characters cut to %zu, want 2000", n,
					   got);
				UNIT_CHECK(
					out.len == 1999 * w + 3 &&
						memcmp(out.data, in.data, 1999 * w) == 0 &&
						strcmp(out.data + 1999 * w, "\xe2\x80\xa6") == 0,
					"%zu x %zu-byte: not 1999 whole characters and an ellipsis",
					n, w);
			}
			buf_free(&in);
			buf_free(&out);
		}
	}
	struct buf out = BUF_INIT;
	chat_truncate("\xe2\x82\xac\xe2\x82\xac", 6, 1, &out);
	UNIT_CHECK_STR(buf_cstr(&out), "\xe2\x80\xa6");
	/* An escape is not cut from what it escapes; escaped backslashes stay. */
	buf_reset(&out);
	chat_truncate("a\\_bcd", 6, 3, &out);
	UNIT_CHECK_STR(buf_cstr(&out), "a\xe2\x80\xa6");
	buf_reset(&out);
	chat_truncate("a\\\\bcd", 6, 4, &out);
	UNIT_CHECK_STR(buf_cstr(&out), "a\\\\\xe2\x80\xa6");
	buf_reset(&out);
	chat_truncate("a\\\\\\_d", 6, 5, &out);
	UNIT_CHECK_STR(buf_cstr(&out), "a\\\\\xe2\x80\xa6");
	buf_free(&out);
}

/* Every text of every format within its limit, however long the names. */
UNIT_TEST(limits_with_long_many_byte_names)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	struct buf actor = BUF_INIT, tag = BUF_INIT, repo = BUF_INIT, url = BUF_INIT;
	for (int i = 0; i < 5000; i++)
		buf_puts(&actor, i % 2 ? "\xf0\x9f\x98\x80" : "*");
	for (int i = 0; i < 300; i++)
		buf_puts(&tag, "\xe2\x82\xac");
	buf_puts(&repo, "team-a/");
	for (int i = 0; i < 400; i++)
		buf_puts(&repo, "\xc3\xa9");
	buf_puts(&url, "https://r.example.com/");
	for (int i = 0; i < 3000; i++)
		buf_putc(&url, 'p');
	s.ev.actor = actor.data;
	s.ev.tag = tag.data;
	s.ev.repository = repo.data;
	s.ev.registry_url = url.data;

	yajl_val t = render(chat_discord, &s.ev);
	UNIT_CHECK(length(jstr(t, "content")) <= 2000, "content of %zu characters",
		   length(jstr(t, "content")));
	UNIT_CHECK(length(jstr(t, "embeds.0.title")) <= 256, "title of %zu characters",
		   length(jstr(t, "embeds.0.title")));
	size_t total = length(jstr(t, "embeds.0.title"));
	for (int i = 0; i < 2; i++) {
		char path[64];
		snprintf(path, sizeof(path), "embeds.0.fields.%d.value", i);
		UNIT_CHECK(length(jstr(t, path)) <= 1024, "%s of %zu characters", path,
			   length(jstr(t, path)));
		total += length(jstr(t, path)) + 10;
	}
	UNIT_CHECK(total <= 6000, "embed text of %zu characters", total);
	/* Cut on a character, with an ellipsis: the actor's 128th character. */
	const char *by = jstr(t, "embeds.0.fields.1.value");
	UNIT_CHECK(by && strlen(by) >= 3 && strcmp(by + strlen(by) - 3, "\xe2\x80\xa6") == 0,
		   "the actor's name does not end with an ellipsis");
	CHECK_JABSENT(t, "embeds.0.url"); /* too long to link */
	yajl_tree_free(t);

	t = render(chat_slack, &s.ev);
	UNIT_CHECK(length(jstr(t, "text")) <= CHAT_SLACK_TEXT_MAX, "text too long");
	UNIT_CHECK(length(jstr(t, "blocks.0.text.text")) <= CHAT_SLACK_TEXT_MAX,
		   "section too long");
	yajl_tree_free(t);
	t = render(chat_teams, &s.ev);
	UNIT_CHECK(length(jstr(t, "attachments.0.content.body.0.text")) <= 400,
		   "headline of %zu characters",
		   length(jstr(t, "attachments.0.content.body.0.text")));
	yajl_tree_free(t);
	buf_free(&actor);
	buf_free(&tag);
	buf_free(&repo);
	buf_free(&url);
	sample_free(&s);
}

/* Whether Slack text s has an entity or a link cut short: every & starts
 * &amp; &lt; or &gt;, and every < has its >. */
static bool slack_whole(const char *s)
{
	bool open = false;
	for (const char *p = s; p && *p; p++) {
		if (*p == '&' && strncmp(p, "&amp;", 5) && strncmp(p, "&lt;", 4) &&
		    strncmp(p, "&gt;", 4))
			return false;
		if (*p == '<')
			open = true;
		else if (*p == '>')
			open = false;
	}
	return !open;
}

/* Names of & each (five characters escaped) past what the fields' own cuts
 * allow for together: the clamp cuts before an entity or a link. */
UNIT_TEST(slack_cuts_no_entity_or_link_short)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	struct buf digest = BUF_INIT, repo = BUF_INIT, actor = BUF_INIT;
	for (int i = 0; i < 1024; i++)
		buf_putc(&digest, '&');
	buf_puts(&repo, "team-a/");
	for (int i = 0; i < 248; i++)
		buf_putc(&repo, '&');
	for (int i = 0; i < 1024; i++)
		buf_puts(&actor, i % 3 ? "&" : "<");
	s.ev.digest = digest.data;
	s.ev.repository = repo.data;
	s.ev.actor = actor.data;
	s.ev.registry_url = "https://registry.example.com";
	yajl_val t = render(chat_slack, &s.ev);
	const char *paths[] = {"text", "blocks.0.text.text", "blocks.1.elements.0.text"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		const char *v = jstr(t, paths[i]);
		UNIT_CHECK(v && length(v) <= CHAT_SLACK_TEXT_MAX, "%s: %zu characters", paths[i],
			   length(v));
		UNIT_CHECK(slack_whole(v), "%s cuts an entity or a link short: ...%s", paths[i],
			   v && strlen(v) > 40 ? v + strlen(v) - 40 : v);
	}
	yajl_tree_free(t);
	buf_free(&digest);
	buf_free(&repo);
	buf_free(&actor);
	sample_free(&s);
}

UNIT_TEST(refusals)
{
	struct sample s;
	UNIT_CHECK(sample_load("03-push-manifest-tag.json", &s), "sample not loaded");
	struct payload_event bad[3] = {s.ev, s.ev, s.ev};
	bad[0].action = "mount";
	bad[1].actor = "cut \xe2\x82";
	bad[2].repository = "team-a/\xed\xa0\x80"; /* a surrogate */
	for (size_t f = 0; f < 3; f++) {
		for (size_t i = 0; i < 3; i++) {
			struct buf out = BUF_INIT;
			buf_puts(&out, "kept");
			UNIT_CHECK(!formats[f].fn(&bad[i], &out), "%s: case %zu accepted",
				   formats[f].name, i);
			UNIT_CHECK_STR(buf_cstr(&out), "kept");
			buf_free(&out);
		}
	}
	sample_free(&s);
}

int main(void)
{
	UNIT_RUN(slack_push_and_delete);
	UNIT_RUN(discord_push_and_delete);
	UNIT_RUN(teams_adaptive_card);
	UNIT_RUN(unseen_characters_in_names_show);
	UNIT_RUN(teams_names_make_no_links);
	UNIT_RUN(markup_in_names_is_escaped);
	UNIT_RUN(truncation_at_the_boundary);
	UNIT_RUN(limits_with_long_many_byte_names);
	UNIT_RUN(slack_cuts_no_entity_or_link_short);
	UNIT_RUN(refusals);
	return UNIT_DONE();
}
