#pragma once
// I/O buffers lent for the time bytes are in flight. An idle connection holds none: the
// pump and the TLS engine take one when data is there to move and give it back once they
// are drained, so memory follows the traffic, not the number of connections. Each thread
// keeps a few returned buffers for the next taker (no lock: a buffer is taken and given
// back on the thread that runs its connection; giving one back elsewhere is also safe).
#include <array>
#include <cstddef>
#include <memory>
#include <span>

namespace tunnel::net {

class io_buffer {
 public:
  // Four TLS records' worth: one read or write moves several records at once (fewer
  // syscalls and wake-ups per byte in bulk transfers). Held only while bytes move.
  static constexpr std::size_t size = 65536;
  using block = std::array<std::byte, size>;

  io_buffer();  // takes a block from this thread's spares, or allocates one (uninitialised)
  ~io_buffer();
  io_buffer(io_buffer&& other) noexcept = default;
  io_buffer& operator=(io_buffer&& other) noexcept;
  io_buffer(const io_buffer&) = delete;
  io_buffer& operator=(const io_buffer&) = delete;

  std::span<std::byte> span() { return {block_->data(), size}; }
  std::byte* data() { return block_->data(); }

 private:
  std::unique_ptr<block> block_;
};

}  // namespace tunnel::net
