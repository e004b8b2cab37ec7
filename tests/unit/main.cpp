#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "tls/credentials.hpp"

// As in both binaries, the crypto library is set up before anything runs: a test run alone
// (-tc) must not depend on an earlier test having done it.
int main(int argc, char** argv) {
  tunnel::tls::init_library();
  return doctest::Context(argc, argv).run();
}
