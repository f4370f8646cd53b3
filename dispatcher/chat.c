/*
 * chat: see chat.h.
 *
 * The event is first reduced to struct msg: its pieces of text, each
 * already cut to its field limit, but not yet escaped (each service
 * escapes differently). Each format then lays the pieces out with
 * jsongen, and clamps every text it builds to the service's limit as a
 * last guard (with the field limits below it never has to cut).
 */
#include "chat.h"
#include "jsongen.h"
#include "jsonparse.h"

#include <string.h>

/* Per-field limits, in code points: a registry's own limits are lower for the first three. */
#define REPOSITORY_MAX 256
#define TAG_MAX 128
#define DIGEST_MAX 160
#define ACTOR_MAX 128
/* A longer repo_url is not linked (cut, it would lead nowhere). */
#define URL_MAX 2000

struct msg {
	bool push;
	struct buf repository, tag, digest, actor; /* cut to their limits; empty: unknown */
	struct buf subject;			   /* repository:tag, repository@digest */
	struct buf url;				   /* repo_url; empty: unknown or too long */
	char when[PAYLOAD_TIME_MAX];
};

static bool utf8_ok(const char *s)
{
	size_t bad;
	return !s || jsonparse_utf8_ok((const unsigned char *)s, strlen(s), &bad);
}

/* The length of the UTF-8 sequence that starts with byte c (1 for a stray byte). */
static size_t seq_len(unsigned char c)
{
	return c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

size_t chat_length(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i += seq_len((unsigned char)s[i]))
		n++;
	return n;
}

void chat_truncate(const char *s, size_t len, size_t max, struct buf *out)
{
	if (chat_length(s, len) <= max) {
		buf_append(out, s, len);
		return;
	}
	size_t i = 0;
	for (size_t n = 0; n + 1 < max && i < len; n++)
		i += seq_len((unsigned char)s[i]);
	/* An escape (Discord's \_) is not cut from what it escapes: it would
	 * escape the ellipsis, or show. An even run of backslashes is escaped
	 * backslashes, kept. */
	size_t run = 0;
	while (run < i && s[i - 1 - run] == '\\')
		run++;
	if (run % 2)
		i--;
	buf_append(out, s, i);
	buf_puts(out, "\xe2\x80\xa6");
}

/*
 * Whether the code point at s (of n bytes) would change how the text
 * around it reads, unseen: C0 and C1 controls (a line break starts a
 * Markdown block), Unicode's direction marks, embeddings, overrides and
 * isolates, and its zero-width characters. A pusher's name is the
 * registry's user, whatever that is; such a name could be made to read
 * otherwise than it is.
 */
static bool unseen(const unsigned char *s, size_t n)
{
	if (n == 1)
		return s[0] < 0x20 || s[0] == 0x7f;
	if (n == 2) /* U+0080..U+009F, U+061C (the Arabic letter mark) */
		return (s[0] == 0xc2 && s[1] < 0xa0) || (s[0] == 0xd8 && s[1] == 0x9c);
	if (n != 3)
		return false;
	unsigned cp = (unsigned)(s[0] & 0x0f) << 12 | (unsigned)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
	return (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
	       (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff || cp == 0x180e;
}

/* s cut to max code points, each unseen one (above) shown as U+FFFD. */
static void cut(const char *s, size_t max, struct buf *out)
{
	if (!s)
		return;
	struct buf shown = BUF_INIT;
	for (size_t i = 0, n; s[i]; i += n) {
		n = seq_len((unsigned char)s[i]);
		if (unseen((const unsigned char *)s + i, n))
			buf_puts(&shown, "\xef\xbf\xbd");
		else
			buf_append(&shown, s + i, n);
	}
	chat_truncate(shown.data ? shown.data : "", shown.len, max, out);
	buf_free(&shown);
}

static bool msg_init(struct msg *m, const struct payload_event *ev)
{
	memset(m, 0, sizeof(*m));
	const char *strings[] = {ev->repository, ev->tag, ev->digest, ev->actor, ev->registry_url};
	if (!payload_action_ok(ev))
		return false;
	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
		if (!utf8_ok(strings[i]))
			return false;
	m->push = payload_is_push(ev);
	cut(ev->repository, REPOSITORY_MAX, &m->repository);
	cut(ev->tag, TAG_MAX, &m->tag);
	cut(ev->digest, DIGEST_MAX, &m->digest);
	cut(ev->actor, ACTOR_MAX, &m->actor);
	buf_append(&m->subject, m->repository.data, m->repository.len);
	if (m->tag.len)
		buf_printf(&m->subject, ":%s", m->tag.data);
	else if (m->digest.len)
		buf_printf(&m->subject, "@%s", m->digest.data);
	if (payload_repo_url(ev, &m->url) && m->url.len > URL_MAX)
		buf_reset(&m->url);
	payload_time(ev, m->when);
	return true;
}

static void msg_free(struct msg *m)
{
	struct buf *bufs[] = {&m->repository, &m->tag, &m->digest, &m->actor, &m->subject, &m->url};
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		buf_free(bufs[i]);
}

static const char *verb(const struct msg *m)
{
	return m->push ? "Pushed" : "Deleted";
}

/* "key": text, clamped to max code points. */
static void kv_clamped(struct jsongen *j, const char *key, const struct buf *text, size_t max)
{
	struct buf b = BUF_INIT;
	chat_truncate(text->data ? text->data : "", text->len, max, &b);
	jsongen_str(j, key);
	jsongen_strn(j, b.data ? b.data : "", b.len);
	buf_free(&b);
}

/* --- Slack: mrkdwn, where only &, < and > need escaping ---------------------------- */

static void slack_escape(const struct buf *s, struct buf *out)
{
	for (size_t i = 0; i < s->len; i++) {
		char c = s->data[i];
		if (c == '&')
			buf_puts(out, "&amp;");
		else if (c == '<')
			buf_puts(out, "&lt;");
		else if (c == '>')
			buf_puts(out, "&gt;");
		else
			buf_putc(out, c);
	}
}

/* `text` as inline code; plain (escaped) when it holds a backtick, which cannot be escaped. */
static void slack_code(const struct buf *s, struct buf *out)
{
	bool code = !s->data || !memchr(s->data, '`', s->len);
	if (code)
		buf_putc(out, '`');
	slack_escape(s, out);
	if (code)
		buf_putc(out, '`');
}

/* A link <url|label>: in the URL, | ends it and must be percent-encoded. */
static void slack_link(const struct buf *url, const struct buf *label, struct buf *out)
{
	buf_putc(out, '<');
	for (size_t i = 0; i < url->len; i++) {
		if (url->data[i] == '|') {
			buf_puts(out, "%7C");
		} else {
			struct buf c = {url->data + i, 1, 0};
			slack_escape(&c, out);
		}
	}
	buf_putc(out, '|');
	slack_escape(label, out);
	buf_putc(out, '>');
}

/*
 * Slack text clamped to its limit: escaping can make the fields' own cuts
 * too long together (each & of a name is five characters), and a cut there
 * must not split an entity (&am) or a link (<url|lab, no >), which Slack
 * would show as the raw text: it is made before them.
 */
static void slack_clamped(struct jsongen *j, const char *key, const struct buf *text)
{
	const char *s = text->data ? text->data : "";
	if (chat_length(s, text->len) <= CHAT_SLACK_TEXT_MAX) {
		kv_clamped(j, key, text, CHAT_SLACK_TEXT_MAX);
		return;
	}
	struct buf b = BUF_INIT;
	chat_truncate(s, text->len, CHAT_SLACK_TEXT_MAX, &b);
	size_t keep = b.len - 3; /* without the ellipsis */
	const char *lt = NULL, *amp = NULL;
	for (size_t i = 0; i < keep; i++) {
		if (b.data[i] == '<')
			lt = b.data + i;
		else if (b.data[i] == '>')
			lt = NULL;
		else if (b.data[i] == '&')
			amp = b.data + i;
		else if (b.data[i] == ';')
			amp = NULL;
	}
	if (amp)
		keep = (size_t)(amp - b.data);
	if (lt && (size_t)(lt - b.data) < keep)
		keep = (size_t)(lt - b.data);
	b.len = keep;
	buf_puts(&b, "\xe2\x80\xa6");
	jsongen_str(j, key);
	jsongen_strn(j, b.data, b.len);
	buf_free(&b);
}

static void slack_mrkdwn(struct jsongen *j, const struct buf *text)
{
	jsongen_map_open(j, NULL);
	jsongen_kv_str(j, "type", "mrkdwn");
	slack_clamped(j, "text", text);
	jsongen_map_close(j);
}

bool chat_slack(const struct payload_event *ev, struct buf *out)
{
	struct msg m;
	if (!msg_init(&m, ev))
		return false;
	struct buf text = BUF_INIT, section = BUF_INIT, context = BUF_INIT;
	buf_printf(&text, "%s ", verb(&m));
	slack_escape(&m.subject, &text);
	buf_printf(&section, "*%s* ", verb(&m));
	slack_code(&m.subject, &section);
	if (m.actor.len) {
		buf_puts(&text, " by ");
		slack_escape(&m.actor, &text);
		buf_puts(&section, " by ");
		slack_escape(&m.actor, &section);
	}
	if (m.digest.len && m.tag.len) {
		buf_puts(&context, "digest ");
		slack_code(&m.digest, &context);
	}
	if (m.url.len) {
		if (context.len)
			buf_puts(&context, " \xc2\xb7 ");
		slack_link(&m.url, &m.repository, &context);
	}

	struct jsongen j;
	bool ok = jsongen_init(&j);
	if (ok) {
		jsongen_map_open(&j, NULL);
		slack_clamped(&j, "text", &text);
		jsongen_array_open(&j, "blocks");
		jsongen_map_open(&j, NULL);
		jsongen_kv_str(&j, "type", "section");
		jsongen_str(&j, "text");
		slack_mrkdwn(&j, &section);
		jsongen_map_close(&j);
		if (context.len) {
			jsongen_map_open(&j, NULL);
			jsongen_kv_str(&j, "type", "context");
			jsongen_array_open(&j, "elements");
			slack_mrkdwn(&j, &context);
			jsongen_array_close(&j);
			jsongen_map_close(&j);
		}
		jsongen_array_close(&j);
		jsongen_map_close(&j);
		ok = jsongen_finish(&j, out);
	}
	buf_free(&text);
	buf_free(&section);
	buf_free(&context);
	msg_free(&m);
	return ok;
}

/* --- Discord: markdown, escaped with backslashes; mentions disabled ---------------- */

static void discord_escape(const struct buf *s, struct buf *out)
{
	for (size_t i = 0; i < s->len; i++) {
		if (strchr("\\*_~`|>[]()#<", s->data[i]))
			buf_putc(out, '\\');
		buf_putc(out, s->data[i]);
	}
}

/* `text` as inline code (shown as is); escaped when it holds a backtick. */
static void discord_code(const struct buf *s, struct buf *out)
{
	if (s->data && memchr(s->data, '`', s->len)) {
		discord_escape(s, out);
		return;
	}
	buf_putc(out, '`');
	buf_append(out, s->data ? s->data : "", s->len);
	buf_putc(out, '`');
}

static void discord_field(struct jsongen *j, const char *name, const struct buf *value,
			  bool inline_)
{
	jsongen_map_open(j, NULL);
	jsongen_kv_str(j, "name", name);
	kv_clamped(j, "value", value, CHAT_DISCORD_FIELD_MAX);
	jsongen_kv_bool(j, "inline", inline_);
	jsongen_map_close(j);
}

bool chat_discord(const struct payload_event *ev, struct buf *out)
{
	struct msg m;
	if (!msg_init(&m, ev))
		return false;
	struct buf content = BUF_INIT, title = BUF_INIT, digest = BUF_INIT, actor = BUF_INIT;
	buf_printf(&content, "**%s** ", verb(&m));
	discord_code(&m.subject, &content);
	discord_escape(&m.actor, &actor);
	if (m.actor.len)
		buf_printf(&content, " by %s", actor.data);
	buf_printf(&title, "%s ", verb(&m));
	discord_escape(&m.subject, &title);
	discord_code(&m.digest, &digest);

	struct jsongen j;
	bool ok = jsongen_init(&j);
	if (ok) {
		jsongen_map_open(&j, NULL);
		kv_clamped(&j, "content", &content, CHAT_DISCORD_CONTENT_MAX);
		jsongen_array_open(&j, "embeds");
		jsongen_map_open(&j, NULL);
		kv_clamped(&j, "title", &title, CHAT_DISCORD_TITLE_MAX);
		if (m.url.len)
			jsongen_kv_str(&j, "url", m.url.data);
		jsongen_kv_int(&j, "color", m.push ? 0x2da44e : 0xcf222e);
		jsongen_array_open(&j, "fields");
		if (m.digest.len)
			discord_field(&j, "Digest", &digest, false);
		if (m.actor.len)
			discord_field(&j, m.push ? "Pushed by" : "Deleted by", &actor, true);
		jsongen_array_close(&j);
		jsongen_kv_str(&j, "timestamp", m.when);
		jsongen_map_close(&j);
		jsongen_array_close(&j);
		/* An actor called "@everyone" must not ping a channel. */
		jsongen_map_open(&j, "allowed_mentions");
		jsongen_array_open(&j, "parse");
		jsongen_array_close(&j);
		jsongen_map_close(&j);
		jsongen_map_close(&j);
		ok = jsongen_finish(&j, out);
	}
	buf_free(&content);
	buf_free(&title);
	buf_free(&digest);
	buf_free(&actor);
	msg_free(&m);
	return ok;
}

/* --- Teams: an Adaptive Card, text in TextBlock and FactSet ------------------------- */

/*
 * Teams reads a TextBlock's and a fact's text as Markdown, and documents
 * no escape for it: a pusher named "[click](https://x.example)" would be a
 * link. "](" becomes "] (", which no Markdown reads as a link; emphasis
 * and the rest change how a name looks, not where a click goes. (A line
 * break, which a reference definition needs, is not left: cut().)
 */
static void teams_text(const char *s, size_t len, struct buf *out)
{
	for (size_t i = 0; i < len; i++) {
		buf_putc(out, s[i]);
		if (s[i] == ']' && i + 1 < len && s[i + 1] == '(')
			buf_putc(out, ' ');
	}
}

static void teams_fact(struct jsongen *j, const char *title, const struct buf *value)
{
	if (!value->len)
		return;
	struct buf text = BUF_INIT;
	teams_text(value->data, value->len, &text);
	jsongen_map_open(j, NULL);
	jsongen_kv_str(j, "title", title);
	jsongen_str(j, "value");
	jsongen_strn(j, text.data, text.len);
	jsongen_map_close(j);
	buf_free(&text);
}

static void teams_card(struct jsongen *j, const struct msg *m)
{
	struct buf headline = BUF_INIT, when = BUF_INIT;
	buf_printf(&headline, "%s ", verb(m));
	teams_text(m->subject.data ? m->subject.data : "", m->subject.len, &headline);
	buf_puts(&when, m->when);
	jsongen_map_open(j, "content");
	jsongen_kv_str(j, "$schema", "http://adaptivecards.io/schemas/adaptive-card.json");
	jsongen_kv_str(j, "type", "AdaptiveCard");
	jsongen_kv_str(j, "version", "1.4");
	jsongen_array_open(j, "body");
	jsongen_map_open(j, NULL);
	jsongen_kv_str(j, "type", "TextBlock");
	jsongen_kv_str(j, "text", headline.data);
	jsongen_kv_str(j, "weight", "Bolder");
	jsongen_kv_str(j, "size", "Medium");
	jsongen_kv_bool(j, "wrap", true);
	jsongen_map_close(j);
	jsongen_map_open(j, NULL);
	jsongen_kv_str(j, "type", "FactSet");
	jsongen_array_open(j, "facts");
	teams_fact(j, "Repository", &m->repository);
	teams_fact(j, "Tag", &m->tag);
	teams_fact(j, "Digest", &m->digest);
	teams_fact(j, m->push ? "Pushed by" : "Deleted by", &m->actor);
	teams_fact(j, "Time", &when);
	jsongen_array_close(j);
	jsongen_map_close(j);
	jsongen_array_close(j);
	if (m->url.len) {
		jsongen_array_open(j, "actions");
		jsongen_map_open(j, NULL);
		jsongen_kv_str(j, "type", "Action.OpenUrl");
		jsongen_kv_str(j, "title", "Open repository");
		jsongen_kv_str(j, "url", m->url.data);
		jsongen_map_close(j);
		jsongen_array_close(j);
	}
	jsongen_map_close(j);
	buf_free(&headline);
	buf_free(&when);
}

bool chat_teams(const struct payload_event *ev, struct buf *out)
{
	struct msg m;
	if (!msg_init(&m, ev))
		return false;
	struct jsongen j;
	bool ok = jsongen_init(&j);
	if (ok) {
		jsongen_map_open(&j, NULL);
		jsongen_kv_str(&j, "type", "message");
		jsongen_array_open(&j, "attachments");
		jsongen_map_open(&j, NULL);
		jsongen_kv_str(&j, "contentType", "application/vnd.microsoft.card.adaptive");
		jsongen_kv_str(&j, "contentUrl", NULL);
		teams_card(&j, &m);
		jsongen_map_close(&j);
		jsongen_array_close(&j);
		jsongen_map_close(&j);
		ok = jsongen_finish(&j, out);
	}
	msg_free(&m);
	return ok;
}
