#include "net/io_buffer.hpp"

#include <vector>

namespace tunnel::net {
namespace {

// Spares kept per thread (1 MiB at most; only the pages ever written are resident): enough
// for the connections busy at one moment on one worker (50 clients of request/response
// keep more than four in flight; fewer spares meant a malloc, a heap grow and page faults per
// request); beyond that, blocks go back to the allocator (a burst must not pin memory).
constexpr std::size_t max_spares = 16;

std::vector<std::unique_ptr<io_buffer::block>>& spares() {
  thread_local std::vector<std::unique_ptr<io_buffer::block>> list;
  return list;
}

void give_back(std::unique_ptr<io_buffer::block> b) {
  if (!b) return;
  auto& list = spares();
  if (list.size() < max_spares) list.push_back(std::move(b));
}

}  // namespace

io_buffer::io_buffer() {
  auto& list = spares();
  if (list.empty()) {
    block_.reset(new block);  // uninitialised: only the pages written to become resident
  } else {
    block_ = std::move(list.back());
    list.pop_back();
  }
}

io_buffer::~io_buffer() { give_back(std::move(block_)); }

io_buffer& io_buffer::operator=(io_buffer&& other) noexcept {
  if (this != &other) {
    give_back(std::move(block_));
    block_ = std::move(other.block_);
  }
  return *this;
}

}  // namespace tunnel::net
