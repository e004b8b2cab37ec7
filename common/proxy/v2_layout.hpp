#pragma once
// The fixed part of a PROXY protocol v2 header, shared by the encoder and the decoder:
//   12-byte signature, ver_cmd (version << 4 | command), fam (family << 4 | transport),
//   16-bit big-endian length of what follows (addresses, then TLVs).
#include <array>
#include <cstddef>

namespace tunnel::proxy::v2 {

inline constexpr std::array<std::byte, 12> signature = {
    std::byte{0x0D}, std::byte{0x0A}, std::byte{0x0D}, std::byte{0x0A}, std::byte{0x00}, std::byte{0x0D},
    std::byte{0x0A}, std::byte{0x51}, std::byte{0x55}, std::byte{0x49}, std::byte{0x54}, std::byte{0x0A}};
inline constexpr std::size_t fixed_size = 16;

inline constexpr unsigned version_nibble = 0x20;
inline constexpr unsigned command_local = 0x0, command_proxy = 0x1;
inline constexpr unsigned family_unspec = 0x0, family_inet = 0x1, family_inet6 = 0x2, family_unix = 0x3;
inline constexpr unsigned transport_unspec = 0x0, transport_stream = 0x1, transport_dgram = 0x2;

// Size of the address block per family: two addresses, then two ports (none for AF_UNIX).
inline constexpr std::size_t inet_block = 4 + 4 + 2 + 2;
inline constexpr std::size_t inet6_block = 16 + 16 + 2 + 2;
inline constexpr std::size_t unix_block = 108 + 108;

}  // namespace tunnel::proxy::v2
