// Guest network configuration: the host names the guest's address, gateway and
// resolver in HELLO / RESEED (field "net"); the agent applies it to the first
// Ethernet interface. A sandbox without a network has no such interface.
#pragma once

#include <string>

namespace ztee::guest {

struct NetConfig {
  std::string address;  // "a.b.c.d/prefix"
  std::string gateway;  // "a.b.c.d"
  std::string dns;      // "a.b.c.d" or empty: no resolver (resolv.conf removed)
};

// Brings the interface up with `cfg`, (re)adds the default route through the
// gateway and forgets the gateway's cached link-layer address (a restored
// clone reaches a new host-side device). Writes /etc/resolv.conf. Idempotent.
// Returns an empty string on success, else what failed.
std::string configure_network(const NetConfig& cfg);

// Parses "a.b.c.d/prefix" (prefix 0-32). False when malformed.
bool parse_ipv4_cidr(const std::string& text, uint32_t* addr_be, int* prefix);

}  // namespace ztee::guest
