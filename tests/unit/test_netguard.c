/*
 * Unit tests for common/netguard.c: addresses of every class, both sides of
 * each range's edges, IPv6 forms that embed an IPv4 address, names, and the
 * allow/refuse policy with and without allow_private.
 */
#include "netguard.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* Classifies a textual address through a real sockaddr, as curl hands it over. */
static enum netguard_class classify(const char *text, bool *parsed)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	*parsed = true;
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(443);
	} else if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(443);
	} else {
		*parsed = false;
	}
	return netguard_classify((const struct sockaddr *)&ss);
}

static const struct {
	const char *addr;
	enum netguard_class want;
} cases[] = {
	/* IPv4 */
	{"8.8.8.8", NETGUARD_PUBLIC},
	{"1.1.1.1", NETGUARD_PUBLIC},
	{"0.0.0.0", NETGUARD_UNSPECIFIED},
	{"0.255.255.255", NETGUARD_UNSPECIFIED},
	{"1.0.0.0", NETGUARD_PUBLIC},
	{"9.255.255.255", NETGUARD_PUBLIC},
	{"10.0.0.0", NETGUARD_PRIVATE},
	{"10.255.255.255", NETGUARD_PRIVATE},
	{"11.0.0.0", NETGUARD_PUBLIC},
	{"100.63.255.255", NETGUARD_PUBLIC},
	{"100.64.0.0", NETGUARD_CGNAT},
	{"100.127.255.255", NETGUARD_CGNAT},
	{"100.128.0.0", NETGUARD_PUBLIC},
	{"126.255.255.255", NETGUARD_PUBLIC},
	{"127.0.0.1", NETGUARD_LOOPBACK},
	{"127.255.255.254", NETGUARD_LOOPBACK},
	{"128.0.0.0", NETGUARD_PUBLIC},
	{"169.253.255.255", NETGUARD_PUBLIC},
	{"169.254.0.0", NETGUARD_LINK_LOCAL},
	{"169.254.169.254", NETGUARD_LINK_LOCAL},
	{"169.255.0.0", NETGUARD_PUBLIC},
	{"172.15.255.255", NETGUARD_PUBLIC},
	{"172.16.0.0", NETGUARD_PRIVATE},
	{"172.31.255.255", NETGUARD_PRIVATE},
	{"172.32.0.0", NETGUARD_PUBLIC},
	{"192.0.0.0", NETGUARD_RESERVED},
	{"192.0.0.255", NETGUARD_RESERVED},
	{"192.0.1.0", NETGUARD_PUBLIC},
	{"192.0.2.1", NETGUARD_RESERVED},
	{"192.167.255.255", NETGUARD_PUBLIC},
	{"192.168.0.0", NETGUARD_PRIVATE},
	{"192.168.255.255", NETGUARD_PRIVATE},
	{"192.169.0.0", NETGUARD_PUBLIC},
	{"198.17.255.255", NETGUARD_PUBLIC},
	{"198.18.0.0", NETGUARD_RESERVED},
	{"198.19.255.255", NETGUARD_RESERVED},
	{"198.20.0.0", NETGUARD_PUBLIC},
	{"198.51.100.7", NETGUARD_RESERVED},
	{"203.0.113.7", NETGUARD_RESERVED},
	{"223.255.255.255", NETGUARD_PUBLIC},
	{"224.0.0.0", NETGUARD_MULTICAST},
	{"239.255.255.255", NETGUARD_MULTICAST},
	{"240.0.0.0", NETGUARD_RESERVED},
	{"255.255.255.254", NETGUARD_RESERVED},
	{"255.255.255.255", NETGUARD_RESERVED},
	/* IPv6 */
	{"2606:4700:4700::1111", NETGUARD_PUBLIC},
	{"2a00:1450:4001:80b::200e", NETGUARD_PUBLIC},
	{"::", NETGUARD_UNSPECIFIED},
	{"::1", NETGUARD_LOOPBACK},
	{"::2", NETGUARD_UNSPECIFIED}, /* compatible 0.0.0.2 */
	{"fe80::1", NETGUARD_LINK_LOCAL},
	{"febf:ffff::1", NETGUARD_LINK_LOCAL},
	{"fec0::1", NETGUARD_PRIVATE},
	{"fc00::1", NETGUARD_PRIVATE},
	{"fd12:3456:789a::1", NETGUARD_PRIVATE},
	{"fbff:ffff::1", NETGUARD_PUBLIC},
	{"fe00::1", NETGUARD_PUBLIC},
	{"ff02::1", NETGUARD_MULTICAST},
	{"ff05::1:3", NETGUARD_MULTICAST},
	{"2001:db8::1", NETGUARD_RESERVED},
	{"2001:db9::1", NETGUARD_PUBLIC},
	{"3fff:0fff::1", NETGUARD_RESERVED},
	{"3fff:1000::1", NETGUARD_PUBLIC},
	{"100::1", NETGUARD_RESERVED},
	{"100:0:0:1::1", NETGUARD_PUBLIC},
	{"::1:0:0:1", NETGUARD_RESERVED}, /* ::/8 outside the compatible /96 */
	/* IPv4-mapped */
	{"::ffff:127.0.0.1", NETGUARD_LOOPBACK},
	{"::ffff:10.1.2.3", NETGUARD_PRIVATE},
	{"::ffff:169.254.169.254", NETGUARD_LINK_LOCAL},
	{"::ffff:100.64.0.1", NETGUARD_CGNAT},
	{"::ffff:0.0.0.0", NETGUARD_UNSPECIFIED},
	{"::ffff:224.0.0.1", NETGUARD_MULTICAST},
	{"::ffff:8.8.8.8", NETGUARD_PUBLIC},
	{"::ffff:7f00:1", NETGUARD_LOOPBACK}, /* the same, written in hex */
	/* IPv4-translated (SIIT) */
	{"::ffff:0:127.0.0.1", NETGUARD_LOOPBACK},
	{"::ffff:0:8.8.4.4", NETGUARD_PUBLIC},
	/* IPv4-compatible */
	{"::127.0.0.1", NETGUARD_LOOPBACK},
	{"::192.168.1.1", NETGUARD_PRIVATE},
	{"::8.8.8.8", NETGUARD_PUBLIC},
	/* NAT64 well-known prefix */
	{"64:ff9b::127.0.0.1", NETGUARD_LOOPBACK},
	{"64:ff9b::10.0.0.1", NETGUARD_PRIVATE},
	{"64:ff9b::8.8.8.8", NETGUARD_PUBLIC},
	{"64:ff9b:1::a00:1", NETGUARD_PRIVATE}, /* local-use NAT64 */
	/* 6to4 */
	{"2002:7f00:1::1", NETGUARD_LOOPBACK},
	{"2002:a9fe:a9fe::", NETGUARD_LINK_LOCAL},
	{"2002:808:808::1", NETGUARD_PUBLIC},
};

UNIT_TEST(classifies)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool parsed;
		enum netguard_class got = classify(cases[i].addr, &parsed);
		UNIT_CHECK(parsed, "test address %s does not parse", cases[i].addr);
		UNIT_CHECK(got == cases[i].want, "%s is %s, want %s", cases[i].addr,
			   netguard_class_name(got), netguard_class_name(cases[i].want));
	}
}

UNIT_TEST(other_families)
{
	struct sockaddr sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_family = AF_UNIX;
	UNIT_CHECK(netguard_classify(&sa) == NETGUARD_RESERVED, "AF_UNIX");
	UNIT_CHECK(netguard_classify(NULL) == NETGUARD_RESERVED, "NULL");
}

UNIT_TEST(names)
{
	UNIT_CHECK_STR(netguard_class_name(NETGUARD_PUBLIC), "public");
	UNIT_CHECK_STR(netguard_class_name(NETGUARD_LOOPBACK), "loopback");
	UNIT_CHECK_STR(netguard_class_name(NETGUARD_PRIVATE), "private");
	UNIT_CHECK_STR(netguard_class_name(NETGUARD_LINK_LOCAL), "link-local");
	UNIT_CHECK_STR(netguard_class_name(NETGUARD_CGNAT), "cgnat");
	UNIT_CHECK_STR(netguard_class_name(NETGUARD_MULTICAST), "multicast");
	UNIT_CHECK_STR(netguard_class_name(NETGUARD_UNSPECIFIED), "unspecified");
	UNIT_CHECK_STR(netguard_class_name(NETGUARD_RESERVED), "reserved");
	UNIT_CHECK_STR(netguard_class_name((enum netguard_class)99), "unknown");
}

UNIT_TEST(policy)
{
	static const struct {
		enum netguard_class c;
		bool strict, permissive; /* allowed without / with allow_private */
	} rows[] = {
		{NETGUARD_PUBLIC, true, true},	    {NETGUARD_LOOPBACK, false, true},
		{NETGUARD_PRIVATE, false, true},    {NETGUARD_LINK_LOCAL, false, true},
		{NETGUARD_CGNAT, false, true},	    {NETGUARD_RESERVED, false, true},
		{NETGUARD_MULTICAST, false, false}, {NETGUARD_UNSPECIFIED, false, false},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const char *name = netguard_class_name(rows[i].c);
		UNIT_CHECK(netguard_allowed(rows[i].c, false) == rows[i].strict,
			   "%s without allow_private: %s", name,
			   rows[i].strict ? "refused" : "allowed");
		UNIT_CHECK(netguard_allowed(rows[i].c, true) == rows[i].permissive,
			   "%s with allow_private: %s", name,
			   rows[i].permissive ? "refused" : "allowed");
	}
	UNIT_CHECK(!netguard_allowed((enum netguard_class)99, true), "an unknown class allowed");
}

/* A textual address as curl hands it over: a sockaddr of its family. */
static struct sockaddr_storage address(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1)
		sin6->sin6_family = AF_INET6;
	return ss;
}

UNIT_TEST(networks_parsed)
{
	static const struct {
		const char *text;
		const char *error; /* a part of the reason, or NULL */
	} rows[] = {
		{"10.0.0.0/8", NULL},
		{"192.168.1.7", NULL},
		{"192.168.1.7/32", NULL},
		{"0.0.0.0/0", NULL},
		{"fd00:1::/64", NULL},
		{"::1", NULL},
		{"::/0", NULL},
		{"10.0.0.5/8", "bits are set past"},
		{"fd00:1::1/64", "bits are set past"},
		{"10.0.0.0/33", "at most /32"},
		{"fd00::/129", "at most /128"},
		{"10.0.0.0/", "not a number"},
		{"10.0.0.0/+8", "not a number"},
		{"10.0.0.0/ 8", "not a number"},
		{"10.0.0.0/8x", "not a number"},
		{"10.0.0.0/0008", "not a number"},
		{"10.0.0/8", "not an IPv4 or IPv6"},
		{"10.0.0.256", "not an IPv4 or IPv6"},
		{"fe80::1%eth0", "not an IPv4 or IPv6"},
		{"example.com", "not an IPv4 or IPv6"},
		{"", "not an IPv4 or IPv6"},
		{"/8", "not an IPv4 or IPv6"},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct netguard_net net;
		const char *why = netguard_parse_net(rows[i].text, &net);
		if (!rows[i].error)
			UNIT_CHECK(why == NULL, "'%s' refused: %s", rows[i].text, why);
		else
			UNIT_CHECK(why && strstr(why, rows[i].error), "'%s': %s, not '%s'",
				   rows[i].text, why ? why : "accepted", rows[i].error);
	}
}

UNIT_TEST(networks_hold)
{
	static const char *const list[] = {"10.20.0.0/16", "192.168.1.7", "fd00:1::/64",
					   "64:ff9b::/96"};
	struct netguard_net nets[4];
	for (int i = 0; i < 4; i++)
		UNIT_CHECK(netguard_parse_net(list[i], &nets[i]) == NULL, "%s", list[i]);
	static const struct {
		const char *addr;
		bool in;
	} rows[] = {
		{"10.20.0.0", true},
		{"10.20.255.255", true},
		{"10.19.255.255", false},
		{"10.21.0.0", false},
		{"192.168.1.7", true},
		{"192.168.1.6", false},
		{"192.168.1.8", false},
		{"fd00:1::1", true},
		{"fd00:1:0:0:ffff:ffff:ffff:ffff", true},
		{"fd00:1:0:1::", false},
		{"fd00:2::1", false},
		/* IPv6 forms of an IPv4 address are held by the IPv4 network. */
		{"::ffff:10.20.3.4", true},
		{"::ffff:10.21.3.4", false},
		{"::ffff:0:10.20.3.4", true},
		{"2002:0a14:0304::1", true}, /* 6to4 of 10.20.3.4 */
		/* and by an IPv6 network listed as such */
		{"64:ff9b::a9fe:a9fe", true},
		{"169.254.169.254", false},
		{"::ffff:169.254.169.254", false},
		{"127.0.0.1", false},
		{"::1", false},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct sockaddr_storage ss = address(rows[i].addr);
		UNIT_CHECK(netguard_in_nets((const struct sockaddr *)&ss, nets, 4) == rows[i].in,
			   "%s %s", rows[i].addr, rows[i].in ? "not held" : "held");
	}
	struct sockaddr_storage one = address("10.20.0.1");
	UNIT_CHECK(!netguard_in_nets((const struct sockaddr *)&one, nets, 0), "held by no list");
	UNIT_CHECK(!netguard_in_nets(NULL, nets, 4), "NULL held");
	struct sockaddr_storage unix_family = {.ss_family = AF_UNIX};
	UNIT_CHECK(!netguard_in_nets((const struct sockaddr *)&unix_family, nets, 4),
		   "AF_UNIX held");
}

int main(void)
{
	UNIT_RUN(classifies);
	UNIT_RUN(other_families);
	UNIT_RUN(names);
	UNIT_RUN(policy);
	UNIT_RUN(networks_parsed);
	UNIT_RUN(networks_hold);
	return UNIT_DONE();
}
