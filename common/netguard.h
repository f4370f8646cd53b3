/*
 * netguard: the SSRF guard's view of an address. A webhook URL is chosen by
 * a namespace's members, not by the operator, so without a guard anyone
 * who can add a webhook could make the dispatcher post to its own
 * database, a cloud metadata service (169.254.169.254) or anything else on
 * the private network. The HTTP client asks netguard about the address it
 * is really about to connect to (after DNS, on every connection), which
 * also defeats DNS rebinding.
 *
 * netguard_classify() sorts an IPv4 or IPv6 address into a class;
 * IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4)
 * are judged by that address, so ::ffff:127.0.0.1 is loopback.
 * netguard_allowed() is the policy:
 *
 *	public                                     always allowed
 *	loopback, private, link-local, cgnat,
 *	reserved                                   only with allow_private
 *	multicast, unspecified                     never
 *
 * Multicast cannot carry a TCP connection, and an unspecified destination
 * (0.0.0.0, ::) silently reaches the local host on Linux; an operator who
 * means the local host can write 127.0.0.1.
 */
#ifndef REGHOOK_NETGUARD_H
#define REGHOOK_NETGUARD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

enum netguard_class {
	NETGUARD_PUBLIC,      /* globally routable */
	NETGUARD_LOOPBACK,    /* 127/8, ::1 */
	NETGUARD_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10 */
	NETGUARD_LINK_LOCAL,  /* 169.254/16, fe80::/10 */
	NETGUARD_CGNAT,	      /* 100.64/10 */
	NETGUARD_MULTICAST,   /* 224/4, ff00::/8 */
	NETGUARD_UNSPECIFIED, /* 0/8, :: */
	NETGUARD_RESERVED,    /* not routable on the internet: 240/4, benchmarking,
				 documentation, ...; also any family but IPv4 and IPv6 */
};

/* The class of sa, an AF_INET or AF_INET6 address; other families are reserved. */
enum netguard_class netguard_classify(const struct sockaddr *sa);

/* A short lower-case name for messages: "loopback", "link-local", ... */
const char *netguard_class_name(enum netguard_class c);

/* Whether a connection to an address of class c may be made (see the table above). */
bool netguard_allowed(enum netguard_class c, bool allow_private);

/*
 * A network an operator allows (allow_private_networks): its first bits
 * of an IPv6 address, an IPv4 network kept as its IPv4-mapped form
 * (10.0.0.0/8 as ::ffff:10.0.0.0/104).
 */
struct netguard_net {
	uint8_t addr[16];
	int bits;
};

/*
 * Parses "a.b.c.d", "a.b.c.d/n", an IPv6 address or "IPv6/n" (a lone
 * address is a network of one) into *net. NULL, or why not: not an
 * address, a prefix out of range, or bits set past the prefix.
 */
const char *netguard_parse_net(const char *text, struct netguard_net *net);

/*
 * Whether sa lies in one of the n networks: as it is, or as the IPv4
 * address that an IPv6 form carries (the one it is classified by), so
 * that 10.0.0.0/8 holds ::ffff:10.0.0.1 too.
 */
bool netguard_in_nets(const struct sockaddr *sa, const struct netguard_net *nets, int n);

#endif
