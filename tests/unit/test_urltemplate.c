/*
 * Unit tests for dispatcher/urltemplate.c: each variable, the bytes that
 * must be percent-encoded, the Portainer URL the SPEC names, syntax errors
 * (and that a failed expansion leaves the output alone), the checks made
 * when a webhook is added, and removing credentials for the history.
 */
#include "buf.h"
#include "unit.h"
#include "urltemplate.h"

#include <string.h>

static const struct urltemplate_vars sample = {
	.namespace_ = "team-a",
	.name = "app",
	.repository = "team-a/app",
	.tag = "v1.2",
	.digest = "sha256:0123abcd",
	.action = "push",
};

/* Expands tmpl with vars; returns the expansion (static) or NULL with err set. */
static const char *expand(const char *tmpl, const struct urltemplate_vars *vars, char *err,
			  size_t errlen)
{
	static char result[1024];
	struct buf out = BUF_INIT;
	bool ok = urltemplate_expand(tmpl, vars, &out, err, errlen);
	snprintf(result, sizeof(result), "%s", buf_cstr(&out));
	buf_free(&out);
	return ok ? result : NULL;
}

UNIT_TEST(each_variable)
{
	char err[256] = "";
	static const struct {
		const char *tmpl, *want;
	} cases[] = {
		{"{namespace}", "team-a"},
		{"{name}", "app"},
		{"{repository}", "team-a%2Fapp"},
		{"{tag}", "v1.2"},
		{"{digest}", "sha256%3A0123abcd"},
		{"{action}", "push"},
		{"https://h/{action}/{repository}:{tag}", "https://h/push/team-a%2Fapp:v1.2"},
		{"{tag}{tag}", "v1.2v1.2"},
		{"https://example.com/hook", "https://example.com/hook"},
		{"", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *got = expand(cases[i].tmpl, &sample, err, sizeof(err));
		UNIT_CHECK(got, "%s: %s", cases[i].tmpl, err);
		UNIT_CHECK_STR(got, cases[i].want);
	}
}

UNIT_TEST(null_values_expand_to_nothing)
{
	char err[256] = "";
	const struct urltemplate_vars none = {0};
	UNIT_CHECK_STR(expand("https://h/?t={tag}&d={digest}", &none, err, sizeof(err)),
		       "https://h/?t=&d=");
}

UNIT_TEST(percent_encoding)
{
	char err[256] = "";
	static const struct {
		const char *value, *want;
	} cases[] = {
		{"a b", "a%20b"},
		{"team-a/sub", "team-a%2Fsub"},
		{"sha256:ff", "sha256%3Aff"},
		{"1+2", "1%2B2"},
		{"caf\xc3\xa9", "caf%C3%A9"}, /* é as UTF-8 */
		{"100%", "100%25"},
		{"a?b&c=d#e", "a%3Fb%26c%3Dd%23e"},
		{"AZaz09-._~", "AZaz09-._~"}, /* unreserved stay */
		{"{tag}", "%7Btag%7D"},	      /* values are not templates */
		{"\x01\x7f\xff", "%01%7F%FF"},
		/* Whole dot-segments would be removed from the path. */
		{".", "%2E"},
		{"..", "%2E%2E"},
		{"...", "..."},
		{"a..", "a.."},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct urltemplate_vars v = {.tag = cases[i].value};
		UNIT_CHECK_STR(expand("{tag}", &v, err, sizeof(err)), cases[i].want);
	}
}

/* A template stored before the check is refused at expansion too, not sent. */
UNIT_TEST(host_from_event_refused_at_expansion)
{
	char err[256] = "";
	struct urltemplate_vars v = sample;
	v.tag = "127.0.0.2";
	UNIT_CHECK(!expand("http://{tag}:8080/x", &v, err, sizeof(err)), "expanded");
	UNIT_CHECK(strstr(err, "in the host or port"), "%s", err);
	UNIT_CHECK_STR(expand("http://{namespace}.example.com:8080/{tag}", &v, err, sizeof(err)),
		       "http://team-a.example.com:8080/127.0.0.2");
}

UNIT_TEST(portainer)
{
	char err[256] = "";
	struct urltemplate_vars v = sample;
	v.tag = "1.0 rc/2";
	const char *tmpl = "https://portainer:9443/api/webhooks/0a1b2c3d-4e5f?tag={tag}";
	UNIT_CHECK(urltemplate_check(tmpl, err, sizeof(err)), "check: %s", err);
	UNIT_CHECK_STR(expand(tmpl, &v, err, sizeof(err)),
		       "https://portainer:9443/api/webhooks/0a1b2c3d-4e5f?tag=1.0%20rc%2F2");
}

UNIT_TEST(appends_to_output)
{
	char err[256] = "";
	struct buf out = BUF_INIT;
	buf_puts(&out, "x=");
	UNIT_CHECK(urltemplate_expand("{name}", &sample, &out, err, sizeof(err)), "%s", err);
	UNIT_CHECK_STR(buf_cstr(&out), "x=app");
	/* A failure leaves what was there, and nothing of the partial expansion. */
	UNIT_CHECK(!urltemplate_expand("/{tag}/{nope}", &sample, &out, err, sizeof(err)),
		   "unknown variable accepted");
	UNIT_CHECK_STR(buf_cstr(&out), "x=app");
	buf_free(&out);
}

UNIT_TEST(syntax_errors)
{
	static const struct {
		const char *tmpl, *want_in_err;
	} cases[] = {
		{"https://h/{image}", "unknown variable '{image}' at offset 10"},
		{"https://h/{Tag}", "unknown variable '{Tag}'"},
		{"https://h/{tag", "unclosed '{' at offset 10"},
		{"https://h/tag}", "'}' without '{' at offset 13"},
		{"https://h/{}", "empty expression '{}' at offset 10"},
		{"https://h/{a{tag}}",
		 "'{' at offset 12 inside the expression opened at offset 10"},
		{"https://h/{+tag}", "operator '+' is not supported"},
		{"https://h/{?tag}", "operator '?' is not supported"},
		{"https://h/{tag*}", "unknown variable '{tag*}'"},
		{"https://h/{tag:3}", "unknown variable '{tag:3}'"},
		{"https://h/{tag,name}", "unknown variable '{tag,name}'"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[256] = "", err2[256] = "";
		UNIT_CHECK(!expand(cases[i].tmpl, &sample, err, sizeof(err)), "%s expanded",
			   cases[i].tmpl);
		UNIT_CHECK(strstr(err, cases[i].want_in_err), "%s: error \"%s\", want \"%s\"",
			   cases[i].tmpl, err, cases[i].want_in_err);
		/* The check on add refuses the same templates, with the same words. */
		UNIT_CHECK(!urltemplate_check(cases[i].tmpl, err2, sizeof(err2)), "%s checked ok",
			   cases[i].tmpl);
		UNIT_CHECK_STR(err2, err);
	}
}

UNIT_TEST(check)
{
	static const char *const good[] = {
		"https://example.com/hook",
		"http://10.0.0.1:8080/{namespace}/{name}?tag={tag}&digest={digest}",
		"HTTPS://example.com",
		"https://{namespace}.hooks.example.com/{action}",
		"https://{action}-{namespace}.example.com:8443/{tag}?d={digest}#{name}",
		"https://user:pa%40ss@example.com/x",
		"http://[::1]:8080/x",
		"http://[fe80::1%25eth0]/x",
		"http://[::ffff:127.0.0.1]/",
		"http://127.0.0.1:65535/",
		"http://h:/x", /* an empty port is the scheme's */
		"http://xn--bcher-kva.example/",
		"https://example.com/a%C3%BC?q=%22",
	};
	static const struct {
		const char *tmpl, *want_in_err;
	} bad[] = {
		{"", "not an http:// or https:// URL"},
		{"example.com/hook", "not an http:// or https:// URL"},
		{"ftp://example.com/", "not an http:// or https:// URL"},
		{"https:/example.com/", "not an http:// or https:// URL"},
		{"https:///path", "no host"},
		{"https://user@/path", "no host"},
		{"https://example.com/a b", "whitespace or control character at offset 21"},
		{"https://example.com/\n", "whitespace or control character at offset 20"},
		/* Whoever pushes must not choose the host or port. */
		{"http://127.0.0.1:{tag}/x", "'{tag}' in the host or port (offset 17)"},
		{"http://{tag}:8080/x", "'{tag}' in the host or port (offset 7)"},
		{"https://{repository}.example.com/", "'{repository}' in the host"},
		{"https://{namespace}{name}.example.com/", "'{name}' in the host"},
		{"https://u@{digest}/", "'{digest}' in the host"},
		{"https://example.com{tag}/", "'{tag}' in the host"},
		{"https://{namespace", "'{namespace' in the host"},
		/* What no HTTP client can send, accepted before and retried for hours. */
		{"http://127.0.0.1:65536/x", "the port is not a number from 1 to 65535"},
		{"http://127.0.0.1:0/x", "the port is not a number from 1 to 65535"},
		{"http://127.0.0.1:+8080/x", "the port is not a number from 1 to 65535"},
		{"http://127.0.0.1:080080/x", "the port is not a number from 1 to 65535"},
		{"http://127.0.0.1:80:90/", "an IPv6 address goes in brackets"},
		{"http://::1:8080/x", "an IPv6 address goes in brackets"},
		{"http://[::1:8080/x", "'[' without ']' in the host"},
		{"http://[not-v6]:80/", "is not an IPv6 address"},
		{"http://[]:80/", "is not an IPv6 address"},
		{"http://[::1]x/", "only ':port' may follow"},
		{"http://[::1]:99999/", "the port is not a number from 1 to 65535"},
		{"http://b\xc3\xbc"
		 "cher.example/",
		 "not ASCII (0xC3): give an internationalized name"},
		{"http://a!b.example/", "'!' cannot be in a host name"},
		{"http://:8080/", "no host"},
		{"https://u:p{x}@example.com/b", "a '{' or '}' in the user name or password: "
						 "percent-encode it (%7B, %7D)"},
		{"http://u:p@:8080/", "no host"},
		{"https://example.com/p\xc3\xbc",
		 "not ASCII (0xC3) at offset 21: percent-encode it"},
		{"https://example.com/a\"b", "'\"' at offset 21 cannot be in a URL"},
		{"https://example.com/?a=<b>", "'<' at offset 23 cannot be in a URL"},
		{"https://example.com/a|b", "'|' at offset 21"},
	};
	char err[256];
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		UNIT_CHECK(urltemplate_check(good[i], err, sizeof(err)), "%s: %s", good[i], err);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		UNIT_CHECK(!urltemplate_check(bad[i].tmpl, err, sizeof(err)), "'%s' accepted",
			   bad[i].tmpl);
		UNIT_CHECK(strstr(err, bad[i].want_in_err), "'%s': error \"%s\", want \"%s\"",
			   bad[i].tmpl, err, bad[i].want_in_err);
	}
}

UNIT_TEST(strip_credentials)
{
	static const struct {
		const char *url, *want;
	} cases[] = {
		{"https://user:secret@example.com/hook", "https://example.com/hook"},
		{"https://user@example.com:8443/hook?a=b", "https://example.com:8443/hook?a=b"},
		{"https://u:p@ss@example.com", "https://example.com"}, /* unencoded '@' */
		{"https://example.com/hook", "https://example.com/hook"},
		{"https://example.com/hook?mail=a@b.c", "https://example.com/hook?mail=a@b.c"},
		{"https://example.com#frag@x", "https://example.com#frag@x"},
		{"http://[::1]:8080/x", "http://[::1]:8080/x"},
		{"http://u:p@[::1]:8080/x", "http://[::1]:8080/x"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf out = BUF_INIT;
		UNIT_CHECK(urltemplate_strip_credentials(cases[i].url, &out), "%s refused",
			   cases[i].url);
		UNIT_CHECK_STR(buf_cstr(&out), cases[i].want);
		buf_free(&out);
	}
	static const char *const bad[] = {"", "example.com/x", "://x", "1http://x", "mailto:a@b"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct buf out = BUF_INIT;
		UNIT_CHECK(!urltemplate_strip_credentials(bad[i], &out), "'%s' accepted", bad[i]);
		UNIT_CHECK(out.len == 0, "'%s' wrote output", bad[i]);
		buf_free(&out);
	}
}

int main(void)
{
	UNIT_RUN(each_variable);
	UNIT_RUN(null_values_expand_to_nothing);
	UNIT_RUN(percent_encoding);
	UNIT_RUN(host_from_event_refused_at_expansion);
	UNIT_RUN(portainer);
	UNIT_RUN(appends_to_output);
	UNIT_RUN(syntax_errors);
	UNIT_RUN(check);
	UNIT_RUN(strip_credentials);
	return UNIT_DONE();
}
