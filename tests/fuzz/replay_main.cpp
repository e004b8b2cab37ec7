// Runs the fuzz target over files or directories of inputs without libFuzzer, so the seed
// corpus (and any crash reproducer) is checked with every compiler in ctest.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::size_t runs = 0;
  // Each input in a buffer of exactly its size, so a sanitizer build sees any read past it.
  auto run_one = [](const std::vector<std::uint8_t>& bytes, std::size_t n) {
    const std::vector<std::uint8_t> exact(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    LLVMFuzzerTestOneInput(exact.data(), exact.size());
  };
  auto run = [&](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    run_one(bytes, bytes.size());
    // Every prefix too: a parser must cope with input cut anywhere (a short read, a
    // truncated file or datagram).
    for (std::size_t n = 0; n < bytes.size(); ++n) run_one(bytes, n);
    ++runs;
  };
  for (int i = 1; i < argc; ++i) {
    if (fs::is_directory(argv[i])) {
      for (const auto& e : fs::directory_iterator(argv[i]))
        if (e.is_regular_file()) run(e.path());
    } else {
      run(argv[i]);
    }
  }
  std::printf("%zu inputs replayed\n", runs);
  return runs > 0 ? 0 : 1;
}
