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

#endif
