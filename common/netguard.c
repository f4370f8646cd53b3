/*
 * netguard: see netguard.h.
 *
 * The ranges are const tables, most specific first, taken from the IANA
 * IPv4 and IPv6 special-purpose address registries. An address that no row
 * matches is public. IPv6 rows that carry an IPv4 address say at which
 * byte it starts, and the class is then that of the IPv4 address.
 */
#include "netguard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define V4(a, b, c, d)                                                                             \
	((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))

static const struct {
	uint32_t net;
	int bits;
	enum netguard_class cls;
} v4_ranges[] = {
	{V4(0, 0, 0, 0), 8, NETGUARD_UNSPECIFIED}, /* "this network" */
	{V4(10, 0, 0, 0), 8, NETGUARD_PRIVATE},
	{V4(100, 64, 0, 0), 10, NETGUARD_CGNAT},
	{V4(127, 0, 0, 0), 8, NETGUARD_LOOPBACK},
	{V4(169, 254, 0, 0), 16, NETGUARD_LINK_LOCAL}, /* also cloud metadata services */
	{V4(172, 16, 0, 0), 12, NETGUARD_PRIVATE},
	{V4(192, 0, 0, 0), 24, NETGUARD_RESERVED}, /* IETF protocol assignments */
	{V4(192, 0, 2, 0), 24, NETGUARD_RESERVED}, /* TEST-NET-1, documentation */
	{V4(192, 168, 0, 0), 16, NETGUARD_PRIVATE},
	{V4(198, 18, 0, 0), 15, NETGUARD_RESERVED},   /* benchmarking */
	{V4(198, 51, 100, 0), 24, NETGUARD_RESERVED}, /* TEST-NET-2 */
	{V4(203, 0, 113, 0), 24, NETGUARD_RESERVED},  /* TEST-NET-3 */
	{V4(224, 0, 0, 0), 4, NETGUARD_MULTICAST},
	{V4(240, 0, 0, 0), 4, NETGUARD_RESERVED}, /* future use, and 255.255.255.255 broadcast */
};

/* No IPv4 address inside: the row's class applies. */
#define NO_V4 (-1)

static const struct {
	uint8_t prefix[16];
	int bits;
	enum netguard_class cls;
	int v4_at; /* byte where an embedded IPv4 address starts, or NO_V4 */
} v6_ranges[] = {
	{{0}, 128, NETGUARD_UNSPECIFIED, NO_V4},
	{{[15] = 1}, 128, NETGUARD_LOOPBACK, NO_V4},
	{{[10] = 0xff, [11] = 0xff}, 96, NETGUARD_PUBLIC, 12}, /* ::ffff:a.b.c.d mapped */
	{{[8] = 0xff, [9] = 0xff}, 96, NETGUARD_PUBLIC, 12},   /* ::ffff:0:a.b.c.d translated */
	{{0}, 96, NETGUARD_PUBLIC, 12},			       /* ::a.b.c.d compatible */
	{{0x00, 0x64, 0xff, 0x9b}, 96, NETGUARD_PUBLIC, 12},   /* 64:ff9b::/96 NAT64 */
	{{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, NETGUARD_PRIVATE, NO_V4}, /* local-use NAT64 */
	{{0}, 8, NETGUARD_RESERVED, NO_V4},	      /* the rest of ::/8, after NAT64's 64:ff9b */
	{{0x01, 0x00}, 64, NETGUARD_RESERVED, NO_V4}, /* 100::/64 discard */
	{{0x20, 0x01, 0x0d, 0xb8}, 32, NETGUARD_RESERVED, NO_V4}, /* documentation */
	{{0x20, 0x02}, 16, NETGUARD_PUBLIC, 2},			  /* 6to4 */
	{{0x3f, 0xff, 0x00}, 20, NETGUARD_RESERVED, NO_V4},	  /* documentation */
	{{0xfc}, 7, NETGUARD_PRIVATE, NO_V4},			  /* unique local */
	{{0xfe, 0x80}, 10, NETGUARD_LINK_LOCAL, NO_V4},
	{{0xfe, 0xc0}, 10, NETGUARD_PRIVATE, NO_V4}, /* site-local, deprecated */
	{{0xff}, 8, NETGUARD_MULTICAST, NO_V4},
};

static const char *const class_names[] = {
	[NETGUARD_PUBLIC] = "public",
	[NETGUARD_LOOPBACK] = "loopback",
	[NETGUARD_PRIVATE] = "private",
	[NETGUARD_LINK_LOCAL] = "link-local",
	[NETGUARD_CGNAT] = "cgnat",
	[NETGUARD_MULTICAST] = "multicast",
	[NETGUARD_UNSPECIFIED] = "unspecified",
	[NETGUARD_RESERVED] = "reserved",
};

/* addr in host byte order. */
static enum netguard_class classify_v4(uint32_t addr)
{
	for (size_t i = 0; i < sizeof(v4_ranges) / sizeof(v4_ranges[0]); i++) {
		uint32_t mask = UINT32_MAX << (32 - v4_ranges[i].bits);
		if ((addr & mask) == v4_ranges[i].net)
			return v4_ranges[i].cls;
	}
	return NETGUARD_PUBLIC;
}

/* Whether the first bits of a and prefix agree. */
static bool prefix_match(const uint8_t *a, const uint8_t *prefix, int bits)
{
	int whole = bits / 8, rest = bits % 8;
	if (memcmp(a, prefix, (size_t)whole) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[whole] & mask) == (prefix[whole] & mask);
}

/* The v6_ranges row that a lies in, or -1 (public). */
static int v6_range(const uint8_t a[16])
{
	for (size_t i = 0; i < sizeof(v6_ranges) / sizeof(v6_ranges[0]); i++)
		if (prefix_match(a, v6_ranges[i].prefix, v6_ranges[i].bits))
			return (int)i;
	return -1;
}

static enum netguard_class classify_v6(const uint8_t a[16])
{
	int i = v6_range(a);
	if (i < 0)
		return NETGUARD_PUBLIC;
	int at = v6_ranges[i].v4_at;
	if (at == NO_V4)
		return v6_ranges[i].cls;
	return classify_v4(V4(a[at], a[at + 1], a[at + 2], a[at + 3]));
}

enum netguard_class netguard_classify(const struct sockaddr *sa)
{
	if (!sa)
		return NETGUARD_RESERVED;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in sin;
		memcpy(&sin, sa, sizeof(sin)); /* sa may not be aligned for sockaddr_in */
		return classify_v4(ntohl(sin.sin_addr.s_addr));
	}
	if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 sin6;
		memcpy(&sin6, sa, sizeof(sin6));
		return classify_v6(sin6.sin6_addr.s6_addr);
	}
	return NETGUARD_RESERVED;
}

const char *netguard_class_name(enum netguard_class c)
{
	if ((unsigned)c >= sizeof(class_names) / sizeof(class_names[0]))
		return "unknown";
	return class_names[c];
}

bool netguard_allowed(enum netguard_class c, bool allow_private)
{
	switch (c) {
	case NETGUARD_PUBLIC:
		return true;
	case NETGUARD_LOOPBACK:
	case NETGUARD_PRIVATE:
	case NETGUARD_LINK_LOCAL:
	case NETGUARD_CGNAT:
	case NETGUARD_RESERVED:
		return allow_private;
	case NETGUARD_MULTICAST:
	case NETGUARD_UNSPECIFIED:
		break;
	}
	return false;
}

/* a as the IPv4-mapped address of the IPv4 address at v4. */
static void mapped(uint8_t a[16], const uint8_t *v4)
{
	uint8_t out[16] = {[10] = 0xff, [11] = 0xff};
	memcpy(out + 12, v4, 4);
	memcpy(a, out, 16);
}

const char *netguard_parse_net(const char *text, struct netguard_net *net)
{
	char addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t len = slash ? (size_t)(slash - text) : strlen(text);
	if (len == 0 || len >= sizeof(addr))
		return "not an IPv4 or IPv6 address";
	memcpy(addr, text, len);
	addr[len] = '\0';
	uint8_t v4[4];
	int max;
	if (inet_pton(AF_INET, addr, v4) == 1) {
		mapped(net->addr, v4);
		max = 32;
	} else if (inet_pton(AF_INET6, addr, net->addr) == 1) {
		max = 128;
	} else {
		return "not an IPv4 or IPv6 address";
	}
	int bits = max;
	if (slash) {
		/* Digits only, no more than three: strtol would take "+8" and " 8". */
		size_t digits = strspn(slash + 1, "0123456789");
		if (digits == 0 || digits > 3 || slash[1 + digits] != '\0')
			return "the prefix length after '/' is not a number";
		bits = atoi(slash + 1);
		if (bits > max)
			return max == 32 ? "an IPv4 prefix is at most /32"
					 : "an IPv6 prefix is at most /128";
	}
	net->bits = bits + (max == 32 ? 96 : 0);
	for (int b = net->bits; b < 128; b++)
		if (net->addr[b / 8] & (0x80 >> (b % 8)))
			return "bits are set past the prefix length (give the network's first "
			       "address)";
	return NULL;
}

static bool in_nets(const uint8_t a[16], const struct netguard_net *nets, int n)
{
	for (int i = 0; i < n; i++)
		if (prefix_match(a, nets[i].addr, nets[i].bits))
			return true;
	return false;
}

bool netguard_in_nets(const struct sockaddr *sa, const struct netguard_net *nets, int n)
{
	uint8_t a[16];
	if (!sa || n <= 0)
		return false;
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in sin;
		memcpy(&sin, sa, sizeof(sin));
		mapped(a, (const uint8_t *)&sin.sin_addr.s_addr);
		return in_nets(a, nets, n);
	}
	if (sa->sa_family != AF_INET6)
		return false;
	struct sockaddr_in6 sin6;
	memcpy(&sin6, sa, sizeof(sin6));
	memcpy(a, sin6.sin6_addr.s6_addr, 16);
	if (in_nets(a, nets, n))
		return true;
	int i = v6_range(a);
	if (i < 0 || v6_ranges[i].v4_at == NO_V4)
		return false;
	uint8_t v4[4];
	memcpy(v4, a + v6_ranges[i].v4_at, 4);
	mapped(a, v4);
	return in_nets(a, nets, n);
}
